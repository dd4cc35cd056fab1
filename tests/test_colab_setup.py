"""The notebooks' setup cell in a simulated Colab: installs dlmi and its missing light
dependencies, never touches the preinstalled torch or numpy, and does nothing the second time.

Colab's runtime is a Python whose site-packages already hold torch, torchvision, numpy, TensorFlow
and most of the scientific stack, but neither dlmi nor the few medical packages it needs. The
simulation, built offline from what this checkout's ``.venv`` already has:

* a **fresh venv** (``python -m venv --without-pip``: an empty site-packages) -- the place pip
  installs into;
* the **preinstalled stack**: a folder of symbolic links to every distribution in ``.venv``'s
  site-packages except dlmi and the packages that Colab lacks (``MISSING``); one ``.pth`` line puts
  it on the venv's ``sys.path``, so pip sees torch and the rest as installed, as on Colab, where pip
  and setuptools are preinstalled too (torch's own metadata asks for a recent setuptools, so the
  venv's stock one would not do). It lies outside the venv, so pip could never uninstall or
  overwrite any of it (pip leaves distributions outside its environment alone): if the cell ever
  asked pip for another torch, the new copy would land in the venv and ``torch.__file__`` would move;
* a **wheelhouse** instead of PyPI: a wheel of this checkout's dlmi (built with ``.venv``'s own
  setuptools, no build isolation) and, for each ``MISSING`` package, a wheel repacked from its
  installed files (pure-Python distributions: files + metadata, exactly what their PyPI wheels
  hold). pip runs with ``--no-index`` semantics and no configuration file (``PIP_CONFIG_FILE`` is
  the null device), so any request for something that is not in the wheelhouse or already
  installed fails the test instead of reaching the network.

The cell is taken verbatim from a course notebook; the one change is its install target, the
repository's ``git+https`` URL, replaced by the dlmi wheel's ``file://`` URL (no network in tests).
A Python audit hook records every subprocess the cell starts: exactly one pip call the first time,
none the second.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from dlmi.course import Course
from dlmi.course.setup_cell import first_code_cell, setup_cell_source

pytestmark = pytest.mark.slow

# In dlmi[course], not preinstalled on Colab: the cell must install them (with dlmi).
MISSING = ("torchxrayvision", "pydicom")
NOTEBOOK = "course/01_rnn/lecture_01_rnn.ipynb"

# Runs the cell in the venv's python and reports what it did and what is importable afterwards.
DRIVER = r'''
import importlib.util, json, sys
calls = []
def hook(event, args):
    if event == "subprocess.Popen":
        calls.append([str(a) for a in args[1]])
sys.addaudithook(hook)
exec(compile(open(sys.argv[1]).read(), "setup_cell", "exec"), {"__name__": "__main__"})
print("DRIVER " + json.dumps({"calls": calls}))
'''

# What is importable, and from where; run in a fresh process of the venv's python.
PROBE = r'''
import importlib.metadata as md, importlib.util, json, sys
out = {"dlmi": importlib.util.find_spec("dlmi") is not None}
import numpy, torch
out.update(torch=[md.version("torch"), torch.__version__, torch.__file__],
           numpy=[md.version("numpy"), numpy.__version__, numpy.__file__])
if out["dlmi"]:
    import dlmi, pydicom, torchxrayvision
    out.update(dlmi_file=dlmi.__file__, dlmi_version=md.version("dlmi"),
               missing={m.__name__: m.__file__ for m in (pydicom, torchxrayvision)})
out["torch_dists"] = sorted(str(d.locate_file("")) for d in md.distributions() if d.metadata["Name"] == "torch")
print("PROBE " + json.dumps(out))
'''


def _tops(dist) -> set[str]:
    """Top-level site-packages entries a distribution owns (package dirs, modules, its dist-info)."""
    return {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}


def _info(dist) -> str:
    return next(top for top in _tops(dist) if top.endswith(".dist-info"))


def _stack(site: Path, dest: Path) -> None:
    """Symbolic links to everything in ``site`` but dlmi and MISSING."""
    dists = {d.metadata["Name"].lower(): d for d in importlib.metadata.distributions(path=[str(site)])}
    skip = set()
    for name in ("dlmi", *MISSING):  # dlmi may be importable from elsewhere too (PYTHONPATH): dropped below
        skip |= _tops(dists[name]) if name in dists else set()
    dest.mkdir()
    for entry in site.iterdir():
        if entry.name in skip or entry.suffix == ".pth" or entry.name.startswith(("__editable__", "_distutils_hack")):
            continue
        (dest / entry.name).symlink_to(entry)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _repack(dist, wheelhouse: Path) -> Path:
    """A wheel of an installed pure-Python distribution: its files and metadata, a fresh RECORD."""
    info = _info(dist)
    tags = [line.split(":", 1)[1].strip() for line in dist.read_text("WHEEL").splitlines() if line.startswith("Tag:")]
    assert "Root-Is-Purelib: true" in dist.read_text("WHEEL") and tags, f"{info} is not a pure-Python wheel"
    name = dist.metadata["Name"].replace("-", "_")
    path = wheelhouse / f"{name}-{dist.version}-{tags[0]}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as whl:
        for f in dist.files:
            arc = f.as_posix()
            if arc.startswith("..") or "__pycache__" in f.parts or arc.endswith(".pyc") or arc in (
                    f"{info}/RECORD", f"{info}/INSTALLER", f"{info}/REQUESTED", f"{info}/direct_url.json"):
                continue
            data = f.locate().read_bytes()
            whl.writestr(arc, data)
            record.append(f"{arc},{_record_hash(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONNOUSERSITE="1", **extra)
    return env


def _run(*cmd, env, cwd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _tagged(proc, tag):
    line = next(line for line in proc.stdout.splitlines() if line.startswith(tag + " "))
    return json.loads(line[len(tag) + 1:])


@pytest.fixture(scope="module")
def colab(root, tmp_path_factory):
    base = tmp_path_factory.mktemp("colab")
    site = Path(importlib.metadata.distribution("torch").locate_file(""))  # .venv's site-packages
    stack = base / "preinstalled"
    _stack(site, stack)

    wheelhouse = base / "wheelhouse"
    wheelhouse.mkdir()
    for name in MISSING:
        _repack(importlib.metadata.distribution(name), wheelhouse)
    src = base / "src"  # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(root / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheelhouse, src,
         env=_clean_env(), cwd=base)
    dlmi_wheel = next(wheelhouse.glob("dlmi-*.whl"))

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, env=_clean_env(), cwd=base)
    python = venv / "bin" / "python"
    venv_site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                          env=_clean_env(), cwd=base).stdout.strip())
    (venv_site / "colab_preinstalled.pth").write_text(f"{stack}\n")

    course = Course(root)
    cell = first_code_cell(nbformat.read(root / NOTEBOOK, as_version=4)).source
    assert cell == setup_cell_source(course.repository_url), f"{NOTEBOOK}: not the canonical setup cell"
    target = f"git+{course.repository_url}"
    assert cell.count(target) == 1
    script = base / "setup_cell.py"
    script.write_text(cell.replace(target, dlmi_wheel.as_uri()))
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    env = _clean_env(PIP_FIND_LINKS=str(wheelhouse), TMPDIR=str(base))  # the cell's pins file lands in base
    return {"python": python, "site": venv_site, "stack": stack, "script": script, "driver": driver,
            "env": env, "cwd": base, "wheel": dlmi_wheel}


def test_setup_cell_installs_dlmi_and_leaves_torch_alone(colab):
    def run(*args):
        return _run(colab["python"], *args, env=colab["env"], cwd=colab["cwd"])

    before = _tagged(run("-c", PROBE), "PROBE")
    assert not before["dlmi"], "the simulated Colab must start without dlmi"
    assert Path(before["torch"][2]).is_relative_to(colab["stack"]), before["torch"]

    first = _tagged(run(colab["driver"], colab["script"]), "DRIVER")
    pips = [c for c in first["calls"] if c[1:4] == ["-m", "pip", "install"]]
    assert len(first["calls"]) == 1 and len(pips) == 1, first["calls"]
    pins = Path(pips[0][pips[0].index("-c") + 1]).read_text().split()
    assert f"torch=={before['torch'][0]}" in pins and f"numpy=={before['numpy'][0]}" in pins, pins
    assert pips[0][-1] == f"dlmi[course] @ {colab['wheel'].as_uri()}"

    after = _tagged(run("-c", PROBE), "PROBE")
    assert after["dlmi"] and after["dlmi_version"] == importlib.metadata.version("dlmi")
    assert Path(after["dlmi_file"]).is_relative_to(colab["site"]), after["dlmi_file"]
    for name, path in after["missing"].items():
        assert Path(path).is_relative_to(colab["site"]), f"{name} was not installed into the venv: {path}"
    assert after["torch"] == before["torch"] and after["numpy"] == before["numpy"], (before, after)
    assert len(after["torch_dists"]) == 1, after["torch_dists"]
    for heavy in ("torch", "torchvision", "numpy"):
        assert not (colab["site"] / heavy).exists(), f"pip installed a second {heavy} into the venv"

    second = _tagged(run(colab["driver"], colab["script"]), "DRIVER")
    assert second["calls"] == [], "the second run must not call pip"
