"""course/ is exactly nbgrader's release of solutions/; every notebook opens with the setup cell."""
import json
import shutil

import nbformat
import pytest

from dlmi.course import Course
from dlmi.course.coursemap import course_map
from dlmi.course.release import ReleaseError, check_sources, release
from dlmi.course.setup_cell import first_code_cell, setup_cell_source


def _normalised(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return nb


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("release")
    release(Course(root), into=out)
    return out


def test_course_folder_is_exactly_the_nbgrader_release(root, fresh_release):
    course = Course(root)
    for unit in course.units():
        made = sorted(p.relative_to(fresh_release / unit) for p in (fresh_release / unit).rglob("*") if p.is_file())
        committed = sorted(p.relative_to(course.release / unit) for p in (course.release / unit).rglob("*")
                           if p.is_file() and ".ipynb_checkpoints" not in p.parts)
        assert committed == made, f"course/{unit} has other files than the release: run `make release`"
        for rel in made:
            got, want = course.release / unit / rel, fresh_release / unit / rel
            if rel.suffix == ".ipynb":
                assert _normalised(got) == _normalised(want), (
                    f"course/{unit}/{rel} differs from `nbgrader generate_assignment` of solutions/: "
                    "edit solutions/ and run `make release`, never edit course/ by hand")
            else:
                assert got.read_bytes() == want.read_bytes()
    stray = {p.name for p in course.release.iterdir() if p.is_dir()} - set(course.units())
    assert not stray, f"course/ has folders with no source in solutions/: {stray}"


def test_release_hides_solutions_and_hidden_tests(root):
    for path in (root / "course").rglob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text, path
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} ships outputs"


def test_every_notebook_starts_with_the_canonical_setup_cell(root):
    course = Course(root)
    want = setup_cell_source(course.repository_url)
    paths = list((root / "solutions").rglob("*.ipynb")) + list((root / "course").rglob("*.ipynb"))
    assert paths
    for path in paths:
        cell = first_code_cell(nbformat.read(path, as_version=4))
        assert cell is not None and cell.source == want, (
            f"{path}: the first code cell must be the setup cell; run `dlmi-course setup-cells`")


def test_setup_cell_never_reinstalls_the_heavy_stack(root):
    src = setup_cell_source(Course(root).repository_url)
    assert 'find_spec("dlmi") is None' in src and '"-c", pins.name' in src
    for dist in ("torch", "torchvision", "numpy", "tensorflow"):
        assert f'"{dist}"' in src
    assert "--upgrade" not in src and "-U" not in src.split()


def test_readme_course_map_is_generated_and_links_every_notebook(root):
    course = Course(root)
    readme = (root / "README.md").read_text(encoding="utf-8")
    current = course_map(course)
    assert current in readme, "README course map is stale: run `make map`"
    for unit in course.units():
        for nb in course.notebooks(unit):
            rel = f"course/{unit}/{nb.name}"
            assert f"labpath={rel}" in current and f"/blob/main/{rel}" in current


def test_check_sources_refuses_inconsistent_metadata(tmp_path, root):
    shutil.copy(root / "nbgrader_config.py", tmp_path)
    shutil.copy(root / "pyproject.toml", tmp_path)
    unit = tmp_path / "solutions" / "01_x"
    unit.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    meta = {"grade": True, "grade_id": "t1", "locked": True, "points": 1, "schema_version": 3, "solution": False}
    a, b = nbformat.v4.new_code_cell("assert True"), nbformat.v4.new_code_cell("assert True")
    a.metadata["nbgrader"] = dict(meta)
    b.metadata["nbgrader"] = dict(meta)
    nb.cells = [a, b]
    nbformat.write(nb, unit / "a.ipynb")
    with pytest.raises(ReleaseError, match="duplicate grade_id 't1'"):
        check_sources(Course(tmp_path), "01_x")
    b.metadata["nbgrader"]["grade_id"] = "t2"
    b.metadata["nbgrader"]["points"] = 0
    nbformat.write(nb, unit / "a.ipynb")
    with pytest.raises(ReleaseError, match="points > 0"):
        check_sources(Course(tmp_path), "01_x")


def test_unknown_units_are_named(root):
    with pytest.raises(ValueError, match="unknown unit '99'"):
        Course(root).resolve_units(["99"])
    assert Course(root).resolve_units(["01"]) == [u for u in Course(root).units() if u.startswith("01_")]
