"""The grading sandbox on its own (no nbgrader, no kernel): what student code can see, write and use.

Every test starts one small Python process in the sandbox at the strongest level this machine
allows (printed by the first test). The isolation checks that need a level (namespace, uid) are
skipped below it; the limits (memory of the whole process tree, processes, file size) and the
clean-up hold at every level.
"""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from dlmi.course.grading import isolation, sandbox

GiB, MiB = 2**30, 2**20


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fake course (secrets inside) and a scratch folder, and the level that works here."""
    base = tmp_path_factory.mktemp("sandbox")
    course = base / "course"
    (course / "solutions" / "01_rnn").mkdir(parents=True)
    (course / "solutions" / "01_rnn" / "hidden.txt").write_text("the hidden tests")
    (course / "gradebook.db").write_text("grades")
    scratch = base / "scratch"
    scratch.mkdir(mode=0o711)
    os.chmod(scratch, 0o711)
    private = [course, scratch, isolation.Path.home()]
    expose = isolation.exposed_paths(isolation.python_paths(), private)
    level, notes = isolation.choose_level("auto", scratch, private, expose)
    return {"course": course, "scratch": scratch, "expose": expose, "level": level, "notes": notes}


def run(world, code, level=None, slot=7, timeout=60, **limits):
    """Run ``code`` in a sandbox; return (exit code, stdout, events)."""
    level = level or world["level"]
    folder = world["scratch"] / f"run-{time.monotonic_ns()}"
    folder.mkdir()
    os.chmod(folder, 0o711)
    work, root = folder / "work", folder / "root"
    root.mkdir()
    isolation.prepare_work(level, work, slot)
    spec = isolation.sandbox_spec(level, slot, work, root, folder / "events.jsonl",
                                  isolation.Limits(**limits), world["expose"])
    (folder / "sandbox.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-I", "-S", str(isolation.SANDBOX_SCRIPT), str(folder / "sandbox.json"), "--",
           sys.executable, "-c", textwrap.dedent(code)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        isolation.kill_uid(isolation.UID_BASE + slot)
    events_path = folder / "events.jsonl"
    events = [json.loads(line) for line in events_path.read_text().splitlines()] if events_path.exists() else []
    return proc.returncode, proc.stdout, events, work


def test_the_strongest_level_that_works_here_is_chosen(world):
    print(f"\nsandbox level here: {world['level']}\n  " + "\n  ".join(world["notes"]))
    assert world["level"] in sandbox.LEVELS


def test_the_kernel_python_and_the_library_work_inside(world):
    code, out, _, _ = run(world, """
        import importlib.util
        print(importlib.util.find_spec("ipykernel") is not None, importlib.util.find_spec("dlmi") is not None)
    """)
    assert code == 0 and out.split() == ["True", "True"]


def test_namespace_level_shows_nothing_of_the_course_or_the_grader(world):
    if world["level"] != "namespace":
        pytest.skip(f"namespace isolation unavailable here (level {world['level']})")
    course = world["course"]
    private_tmp = f"/tmp/dlmi-sandbox-test-{os.getpid()}.txt"
    other = world["scratch"] / "another-students-work.txt"  # next to this sandbox's own work folder
    other.write_text("someone else's answers")
    code, out, _, work = run(world, f"""
        import os
        for path in [{str(course / 'solutions' / '01_rnn' / 'hidden.txt')!r}, {str(course / 'gradebook.db')!r},
                     {str(other)!r}, os.path.expanduser("~root") + "/.bashrc"]:
            print("visible" if os.path.exists(path) else "hidden", path)
        for path in [{str(course / 'pwned.txt')!r}, "/usr/pwned.txt", {private_tmp!r}, "work.txt"]:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as err:
                print("refused", path)
        print("uid", os.getuid())
        print("pid", os.getpid())
    """)
    assert code == 0, out
    status = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        status[rest] = word
    assert [status[str(p)] for p in (course / "solutions" / "01_rnn" / "hidden.txt", course / "gradebook.db",
                                     other)] == ["hidden"] * 3, out
    assert status[str(course / "pwned.txt")] == "refused" and status["/usr/pwned.txt"] == "refused", out
    assert status[private_tmp] == "wrote" and not os.path.exists(private_tmp), "/tmp must be private"
    assert status["work.txt"] == "wrote" and (work / "work.txt").read_text() == "x"
    assert not (course / "pwned.txt").exists()
    assert status["2"] == "pid", "a PID namespace of its own: pid 1 is the sandbox's init"
    if os.geteuid() == 0:
        assert status[str(isolation.UID_BASE + 7)] == "uid"


def test_uid_level_runs_student_code_under_an_unused_uid(world, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the uid level needs root")
    ok, detail = isolation.probe("uid", world["scratch"], [world["course"], world["scratch"]], world["expose"])
    if not ok:
        pytest.skip(f"the uid level cannot run the kernel's Python here: {detail}")
    target = tmp_path / "root-owned"
    target.mkdir()
    code, out, _, _ = run(world, f"""
        import os
        print(os.getuid(), os.getgid(), os.getgroups())
        try:
            open({str(target / 'x')!r}, "w")
            print("wrote")
        except OSError:
            print("refused")
    """, level="uid")
    assert out.split()[:2] == ["61007", "61007"] and "refused" in out, out


def test_memory_of_the_whole_process_tree_is_capped(world):
    """Two processes of 300 MiB each are over a 512 MiB cap together, though each is under it."""
    started = time.monotonic()
    code, out, events, _ = run(world, """
        import os, time
        os.fork()
        hog = b"x" * (300 * 2**20)
        time.sleep(30)
    """, memory_bytes=512 * MiB)
    assert time.monotonic() - started < 25
    assert code != 0
    memory = [e for e in events if e["event"] == "memory"]
    assert memory and memory[0]["limit"] == 512 * MiB and memory[0]["processes"] >= 2, events


def test_a_single_allocation_past_the_cap_fails_inside(world):
    code, out, _, _ = run(world, """
        try:
            block = bytearray(3 * 2**30)
            print("allocated")
        except MemoryError:
            print("MemoryError")
    """, memory_bytes=512 * MiB)
    assert code == 0 and out.strip() == "MemoryError"


def test_a_fork_bomb_is_stopped_and_nothing_survives(world):
    if world["level"] == "rlimits":
        pytest.skip("without a uid of its own a fork bomb is only bounded by the watchdog: not run here")
    started = time.monotonic()
    code, out, events, _ = run(world, """
        import os
        while True:
            os.fork()
    """, processes=16, threads=48, timeout=60)
    assert time.monotonic() - started < 30
    stopped = [e for e in events if e["event"] in ("processes", "memory")]
    assert stopped or code != 0, events
    assert not sandbox.pids_of(isolation.UID_BASE + 7)


def test_a_daemon_does_not_outlive_the_sandbox(world):
    code, out, events, _ = run(world, """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        time.sleep(0.5)
        print("parent leaves")
    """)
    time.sleep(0.5)
    assert "parent leaves" in out
    assert not _sleepers(), "a process of the sandbox outlived it"


def test_file_size_is_limited(world):
    code, out, _, _ = run(world, """
        try:
            open("big.bin", "wb").write(b"x" * (4 * 2**20))
            print("written")
        except OSError as err:
            print("refused", err.errno)
    """, file_bytes=1 * MiB)
    assert "refused" in out, out


def test_the_kernel_gets_only_the_sandbox_environment(world, monkeypatch):
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "do-not-leak")
    code, out, _, _ = run(world, """
        import os
        print(sorted(k for k in os.environ if "SECRET" in k), os.environ.get("OMP_NUM_THREADS"))
    """)
    assert out.strip() == "[] 1"


def _sleepers():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if b"time.sleep(60)" in cmd and b"os.setsid" in cmd:
                found.append(int(entry))
    return found


@pytest.fixture()
def public_tmp():
    """A temporary folder that another user can reach (pytest's own is private to root)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlmi-sandbox-test-") as folder:
        os.chmod(folder, 0o755)
        yield isolation.Path(folder)


def test_namespace_level_works_without_root_too(public_tmp):
    """As an ordinary user the sandbox makes a user namespace first (where the kernel allows it):
    run the launcher as `nobody` with the system Python, which `nobody` can read."""
    import shutil as sh

    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not sh.which("setpriv") or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and a system Python")
    nobody = 65534
    base = public_tmp / "userns"
    (base / "work").mkdir(parents=True)
    (base / "root").mkdir()
    (base / "secret.txt").write_text("hidden")
    os.chmod(base, 0o755)
    for path in (base / "work", base / "root"):
        os.chown(path, nobody, nobody)
    script = base / "sandbox.py"
    script.write_text(isolation.SANDBOX_SCRIPT.read_text())
    spec = {"level": "namespace", "work": str(base / "work"), "root": str(base / "root"),
            "events": str(base / "work" / "events.jsonl"), "expose": ["/usr", "/bin", "/lib", "/lib64", "/etc"],
            "memory_bytes": GiB, "data_bytes": 2 * GiB, "processes": 16, "env": {"PATH": "/usr/bin:/bin"}}
    (base / "spec.json").write_text(json.dumps(spec))
    code = "import os; print(os.getuid(), os.getpid(), os.path.exists(%r))" % str(base / "secret.txt")
    proc = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                           python, "-I", "-S", str(script), str(base / "spec.json"), "--", python, "-c", code],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 125:
        pytest.skip(f"no unprivileged user namespaces here: {proc.stderr.strip()}")
    assert proc.stdout.split() == [str(nobody), "2", "False"], proc.stdout + proc.stderr
