"""The grader's side of the sandbox: limits, which isolation level works here, the kernelspec.

The sandbox itself is :mod:`.sandbox` (a stand-alone script). Here we decide what it gets: the
paths the student's kernel may read (the system, this Python and the libraries on its path,
nothing of the course), its environment, its uid, and the kernelspec whose ``argv`` wraps
``ipykernel`` in the sandbox, so that nbgrader (trusted, with the gradebook) and the student's
code (untrusted) never share a process.

The grader reaches the kernel over Jupyter's ``ipc`` transport (ZMQ over Unix socket files in
the kernel's work folder, :func:`ipc_prefix`) at every level: at the ``namespace`` level the
kernel has no network to offer TCP ports on, and at the ``uid`` level a kernel's sockets in its
own uid's 0700 folder are out of reach of the other kernels, which TCP ports on 127.0.0.1 are
not (any local process can subscribe to a kernel's output channel). One transport, one path.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .sandbox import LEVELS, pids_of

SANDBOX_SCRIPT = Path(__file__).with_name("sandbox.py")
KERNEL_NAME = "dlmi-sandbox"
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
UID_BASE = 61000  # sandbox uid = UID_BASE + worker slot: one uid per concurrently graded submission
GiB, MiB = 2**30, 2**20


@dataclass
class Limits:
    """What one submission may use. Defaults suit the course's "2 minutes, 2 GB" notebooks."""

    cell_timeout: int = 60          # wall seconds per cell
    notebook_timeout: int = 300     # wall seconds for all the notebook's cells
    setup_timeout: int = 120        # starting the kernel and the guard (imports torch)
    memory_bytes: int = 2 * GiB     # resident memory of all the submission's processes together
    processes: int = 32             # processes at once (the watchdog stops a fork bomb above this)
    threads: int = 128              # RLIMIT_NPROC under the sandbox uid (a kernel with torch has ~13)
    file_bytes: int = 256 * MiB     # largest file the kernel may write
    open_files: int = 1024
    tmp_bytes: int = 64 * MiB       # the private /tmp and /dev/shm (namespace level)

    def as_dict(self) -> dict:
        return asdict(self)

    def job_seconds(self, notebooks: int = 1) -> int:
        """Hard limit for a whole grading job, past the limits that come first: per cell, per
        notebook, and up to three kernel starts per notebook."""
        return notebooks * (3 * self.setup_timeout + self.notebook_timeout) + 120


def parse_bytes(text: str | int) -> int:
    """``"1GiB"``, ``"512M"``, ``"2G"``, ``1073741824`` -> bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().lower().replace("ib", "").replace("b", "")
    scale = {"k": 2**10, "m": MiB, "g": GiB, "t": 2**40}
    if s and s[-1] in scale:
        return int(float(s[:-1]) * scale[s[-1]])
    return int(s)


def python_paths(python: str = sys.executable) -> list[str]:
    """Where the kernel's Python finds itself and its packages (prefixes and ``sys.path``).

    Asked of the interpreter itself, from ``/`` with a clean environment, so that the current
    folder (often the course root) and ``PYTHONPATH`` are never among them.
    """
    code = ("import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix, *sys.path]))")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    out = subprocess.run([python, "-I", "-c", code], cwd="/", env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [p for p in json.loads(out) if p and os.path.exists(p)]


def _is_ancestor_or_same(path: str, of: str) -> bool:
    path, of = os.path.realpath(path), os.path.realpath(of)
    return of == path or of.startswith(path.rstrip("/") + "/")


def exposed_paths(python_dirs: list[str], private: list[Path]) -> list[str]:
    """Read-only paths of the namespace view: the system and Python, never a folder that holds
    (or is) one of ``private`` (the course root, the grading scratch, the grader's home)."""
    found = []
    for path in [*SYSTEM_PATHS, sys.executable, *python_dirs]:
        if not os.path.lexists(path) or path == "/":
            continue
        if any(_is_ancestor_or_same(path, str(p)) for p in private):
            continue
        found.append(path)
    return sorted(set(found))


def kernel_env(level: str, work: Path) -> dict:
    """The kernel's whole environment: nothing of the grader's (tokens, paths) leaks in."""
    home = "/tmp" if level == "namespace" else str(work / ".home")
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "TMPDIR": "/tmp" if level == "namespace" else str(work / ".home"),
        "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
        "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
        # one thread each: the grader runs one kernel per core
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3", "NBGRADER_EXECUTION": "autograde",
    }


def sandbox_spec(level: str, slot: int, work: Path, root: Path, events: Path, limits: Limits,
                 expose: list[str]) -> dict:
    return {
        "level": level, "uid": UID_BASE + slot, "gid": UID_BASE + slot,
        "work": str(work), "root": str(root), "events": str(events), "expose": list(expose),
        "memory_bytes": limits.memory_bytes,
        # the data segment may be larger than what is resident (torch maps ~0.8 GB it never touches);
        # the watchdog enforces the resident cap, this one stops runaway allocations outright.
        "data_bytes": limits.memory_bytes + GiB,
        "cpu_seconds": limits.setup_timeout + limits.notebook_timeout + 60,
        "processes": limits.processes, "threads": limits.threads,
        "file_bytes": limits.file_bytes, "open_files": limits.open_files, "tmp_bytes": limits.tmp_bytes,
        "env": kernel_env(level, work),
    }


IPC_NAME = ".kernel-ipc"   # the kernel's socket files: work/.kernel-ipc-1 ... -5 (one per ZMQ channel)
MAX_SOCKET_PATH = 107      # bytes in a Unix socket path (sun_path is 108 with its NUL)


def ipc_prefix(work: Path) -> tuple[str, int | None]:
    """The path prefix the grader gives its kernel manager for the ``ipc`` sockets, and a
    descriptor to close once the kernels of ``work`` are done (or None).

    The sockets are ``PREFIX-N`` in ``work``, the one folder both sides reach (the kernel sees it
    as its working directory, see ``sandbox._place_connection_file``). A deep work folder would
    make ``work/.kernel-ipc-N`` longer than a Unix socket path may be; then the grader names the
    same folder through an open descriptor of it, ``/proc/self/fd/FD/.kernel-ipc`` (~30 bytes,
    whatever the depth). ``/proc/self`` is the grader's process, whose ZMQ threads share its
    descriptors.
    """
    prefix = str(Path(work) / IPC_NAME)
    if len(os.fsencode(prefix)) + len("-65535") <= MAX_SOCKET_PATH:
        return prefix, None
    fd = os.open(work, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{IPC_NAME}", fd


def write_kernelspec(jupyter_dir: Path, spec_path: Path) -> Path:
    """``jupyter_dir/kernels/dlmi-sandbox/kernel.json``: ipykernel, started through the sandbox."""
    folder = jupyter_dir / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-I", "-S", str(SANDBOX_SCRIPT), str(spec_path), "--",
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (folder / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": "dlmi grading sandbox", "language": "python",
        "interrupt_mode": "signal", "metadata": {"debugger": False}}, indent=1))
    return folder


def prepare_work(level: str, work: Path, slot: int) -> None:
    """The kernel's folder: the only place it may write, owned by its uid."""
    work.mkdir(parents=True, exist_ok=True)
    if level != "namespace":
        (work / ".home").mkdir(exist_ok=True)
    if os.geteuid() == 0 and level in ("namespace", "uid"):
        uid = UID_BASE + slot
        for folder, _, files in os.walk(work):
            os.chown(folder, uid, uid)
            for name in files:
                os.chown(os.path.join(folder, name), uid, uid)
    os.chmod(work, 0o700)


def kill_uid(uid: int) -> int:
    """SIGKILL every process of ``uid`` (root only): nothing of one submission outlives its job."""
    if os.geteuid() != 0:
        return 0
    killed = 0
    for pid in pids_of(uid):
        try:
            os.kill(pid, 9)
            killed += 1
        except (ProcessLookupError, PermissionError):
            continue
    return killed


_PROBE = """
import importlib.util, os, socket, sys
missing = [m for m in ("ipykernel", "dlmi") if importlib.util.find_spec(m) is None]
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    network = "host"
except OSError:
    network = "none"
visible = [p for p in sys.argv[2:] if os.path.lexists(p)]
print("PROBE", "missing=" + ",".join(missing), "network=" + network, "visible=" + ",".join(visible))
"""


def _samples(private: list[Path], expose: list[str], per_folder: int = 3) -> list[str]:
    """A few real entries of each private folder (not on the way to an exposed path): if the
    sandbox can see any of them, the folder is not private."""
    found = []
    for folder in private:
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        kept = [str(Path(folder) / e) for e in entries
                if not any(_is_ancestor_or_same(str(Path(folder) / e), x) for x in expose)]
        found.extend(kept[:per_folder])
    return found


def probe(level: str, scratch: Path, private: list[Path], expose: list[str]) -> tuple[bool, str]:
    """Can a sandbox of ``level`` run the kernel's Python here, what of ``private`` does it see,
    and can it reach a TCP port the grader opens on 127.0.0.1? The namespace level must see
    nothing private and reach nothing: a machine that refuses it a network namespace (or any
    other) gets the next level, never a namespace level with the host's network."""
    folder = scratch / f"probe-{level}"
    work, root = folder / "work", folder / "root"
    root.mkdir(parents=True, exist_ok=True)
    try:
        prepare_work(level, work, slot=0)
    except OSError as err:  # e.g. root of a user namespace that maps no uid for the sandbox
        return False, f"cannot give the sandbox its work folder: {err}"
    spec = sandbox_spec(level, 0, work, root, folder / "events.jsonl", Limits(), expose)
    spec_path = folder / "sandbox.json"
    spec_path.write_text(json.dumps(spec))
    with socket.socket() as listener:  # connections wait in its backlog: nothing needs to accept them
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        cmd = [sys.executable, "-I", "-S", str(SANDBOX_SCRIPT), str(spec_path), "--", sys.executable, "-c",
               _PROBE, str(listener.getsockname()[1]), *_samples(private, [*expose, str(work)])]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return False, "the probe timed out"
        finally:
            kill_uid(spec["uid"])
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE ")), None)
    if proc.returncode != 0 or line is None:
        return False, (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    if fields["missing"]:
        return False, f"the kernel's Python cannot import {fields['missing']} there"
    if level == "namespace" and fields["visible"]:
        return False, f"private paths visible: {fields['visible']}"
    if level == "namespace" and fields["network"] != "none":
        return False, "the host's network is reachable from inside (127.0.0.1 answered)"
    note = f"readable by the sandbox: {fields['visible']}" if fields["visible"] else "private paths hidden"
    network = "no network" if fields["network"] == "none" else "network shared with the host"
    return True, f"{note}; {network}"


def choose_level(requested: str, scratch: Path, private: list[Path], expose: list[str]) -> tuple[str, list[str]]:
    """The strongest level that works here (or exactly ``requested``), with why others did not."""
    notes = []
    candidates = LEVELS if requested == "auto" else (requested,)
    for level in candidates:
        if level == "uid" and os.geteuid() != 0:
            notes.append("uid: needs root to switch to an unused uid")
            continue
        ok, detail = probe(level, scratch, private, expose)
        notes.append(f"{level}: {'ok' if ok else 'unavailable'} ({detail})")
        if ok:
            return level, notes
    raise RuntimeError("no sandbox level works here:\n  " + "\n  ".join(notes))
