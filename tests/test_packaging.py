"""The set-up files agree with each other: pyproject, environment.yml, binder/, Makefile, CI."""
import re
import tomllib

import pytest
import yaml

# pip name -> conda-forge name, where they differ
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base", "tensorflow-cpu": "tensorflow"}
NOT_ON_CONDA_FORGE = {"torchxrayvision"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


@pytest.fixture(scope="module")
def project(root):
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def _conda_names(env):
    names, pip = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            names.add(_name(dep))
    return names, pip


def test_runtime_dependencies_are_ranges_never_pins(project):
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    for req in reqs:
        assert "==" not in req.split(";")[0], f"exact pin in pyproject: {req!r} (use a range)"


def test_environment_yml_has_every_pyproject_dependency(root, project):
    env = yaml.safe_load((root / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    names, pip = _conda_names(env)
    wanted = [_name(r) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "all":
            wanted += [_name(r) for r in reqs if "platform_machine != 'x86_64'" not in r]
    for pkg in wanted:
        if pkg in NOT_ON_CONDA_FORGE:
            assert any(_name(p) == pkg for p in pip), f"{pkg} must be in the pip section"
        else:
            assert CONDA_NAME.get(pkg, pkg) in names, f"environment.yml lacks {CONDA_NAME.get(pkg, pkg)}"
    assert "-e ." in pip


def test_binder_installs_dlmi_without_touching_the_stack(root, project):
    env = yaml.safe_load((root / "binder" / "environment.yml").read_text())
    names, pip = _conda_names(env)
    for req in project["dependencies"]:
        assert CONDA_NAME.get(_name(req), _name(req)) in names, f"binder/environment.yml lacks {req}"
    post = (root / "binder" / "postBuild").read_text()
    assert post.startswith("#!/bin/bash") and re.search(r"^set -e", post, re.M), "postBuild must use set -e"
    install = [line for line in post.splitlines() if "pip install" in line]
    assert install and all("--no-deps" in line for line in install)
    assert not re.search(r"\b(torch|tensorflow|numpy)\b", " ".join(install))
    assert (root / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"


def test_ci_calls_make_test_and_the_readme_documents_it(root):
    ci = (root / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    readme = (root / "README.md").read_text()
    assert "make test" in readme and "make course" in readme
    makefile = (root / "Makefile").read_text()
    for target in ("course:", "test:", "lab:", "release:", "bench:"):
        assert re.search(rf"^{target}", makefile, re.M), f"Makefile lacks {target}"


def test_nbgrader_config_points_at_solutions_and_course(root):
    text = (root / "nbgrader_config.py").read_text()
    assert 'source_directory = "solutions"' in text and 'release_directory = "course"' in text
