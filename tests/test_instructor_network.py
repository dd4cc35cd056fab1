"""The grading sandbox's network: at the namespace level student code is off the network, and the
grader still reaches its kernel (ZMQ over Unix socket files in the kernel's work folder).

The sandbox checks reuse the ``world`` fixture and the ``run`` helper of test_instructor_sandbox
(a small Python process in the sandbox, no kernel). The end-to-end checks grade a one-question
notebook through ``dlmi-course autograde``'s own code path (bundle, job worker, nbgrader,
GuardedExecute, the sandboxed kernel): once at the strongest level this machine allows, once at
``rlimits`` from a scratch folder so deep that the socket paths need the short route.
"""
import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dlmi.course import Course
from dlmi.course.grading import autograde as ag
from dlmi.course.grading import isolation
from test_instructor_sandbox import run, world  # noqa: F401 (world is a fixture)

UNIT, NB = "01_tiny", "assignment_01_tiny.ipynb"

# What student code tries: the host's 127.0.0.1 over TCP, and a host service's abstract Unix socket
# (abstract names belong to a network namespace: a mount namespace alone does not hide them).
REACH = """
import socket
def attempt(family, address):
    s = socket.socket(family)
    s.settimeout(5)
    try:
        s.connect(address)
        return "connected"
    except OSError as err:
        return f"{type(err).__name__}:{err.errno}"
    finally:
        s.close()
print("REACH tcp", attempt(socket.AF_INET, ("127.0.0.1", PORT)))
print("REACH unix", attempt(socket.AF_UNIX, ABSTRACT))
"""


@pytest.fixture(scope="module")
def host():
    """A TCP server on the host's 127.0.0.1 and one on an abstract Unix socket. Nothing accepts:
    a connection waits in the backlog, where :func:`arrived` counts it."""
    tcp = socket.create_server(("127.0.0.1", 0), backlog=16)
    unix = socket.socket(socket.AF_UNIX)
    name = f"\0dlmi-network-test-{os.getpid()}"
    unix.bind(name)
    unix.listen(16)
    for server in (tcp, unix):
        server.setblocking(False)
    code = REACH.replace("PORT", str(tcp.getsockname()[1])).replace("ABSTRACT", repr(name))
    yield {"tcp": tcp, "unix": unix, "address": tcp.getsockname(), "name": name, "code": code}
    tcp.close()
    unix.close()


def arrived(server) -> int:
    """Connections that reached ``server`` since the last call (taken off its backlog)."""
    count = 0
    time.sleep(0.1)
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def reach(out: str) -> dict:
    return {line.split()[1]: line.split()[2] for line in out.splitlines() if line.startswith("REACH ")}


def need_namespace(world):
    if world["level"] != "namespace":
        pytest.skip(f"namespace isolation unavailable here (level {world['level']}): {world['notes']}")


# ---------------------------------------------------------------- the sandbox alone

def test_from_outside_the_host_servers_answer(host):
    """The control: the same connections from the test process get through."""
    socket.create_connection(host["address"], timeout=5).close()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(host["name"])
    assert (arrived(host["tcp"]), arrived(host["unix"])) == (1, 1)


def test_where_the_machine_gives_these_namespaces_the_namespace_level_is_chosen(world):
    """The namespace tests below skip on machines without namespaces; here, as root, where
    util-linux's unshare makes the same namespaces, the sandbox must not have fallen back."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and util-linux's unshare")
    proc = subprocess.run(["unshare", "--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "true"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"this machine refuses these namespaces: {proc.stderr.strip()}")
    assert world["level"] == "namespace", world["notes"]


def test_namespace_level_reaches_neither_127_0_0_1_nor_abstract_sockets(world, host):
    need_namespace(world)
    arrived(host["tcp"]), arrived(host["unix"])
    code, out, _, _ = run(world, host["code"])
    assert code == 0, out
    assert reach(out) == {"tcp": f"OSError:{errno.ENETUNREACH}", "unix": f"ConnectionRefusedError:{errno.ECONNREFUSED}"}
    assert (arrived(host["tcp"]), arrived(host["unix"])) == (0, 0)


def test_namespace_level_has_only_a_loopback_that_is_down_and_no_route(world):
    need_namespace(world)
    code, out, _, _ = run(world, """
        import fcntl, os, socket, struct
        print(socket.if_nameindex())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # SIOCGIFFLAGS on lo (struct ifreq, 40 bytes)
            flags = struct.unpack_from("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0)))[1]
        print("lo", "up" if flags & 1 else "down")
        routes = open("/proc/net/route").read().splitlines()[1:]
        if os.path.exists("/proc/net/ipv6_route"):  # a new namespace's own "unreachable" entries aside
            routes += [r for r in open("/proc/net/ipv6_route").read().splitlines() if not int(r.split()[8], 16) & 0x200]
        print("routes", len(routes))
    """)
    assert code == 0, out
    assert out.splitlines() == ["[(1, 'lo')]", "lo down", "routes 0"], out


@pytest.mark.parametrize("level", ["uid", "rlimits"])
def test_uid_and_rlimits_levels_keep_the_host_network(world, host, level):
    """Behaviour there is unchanged: no network namespace, and the probe's note says so."""
    if level == "uid" and os.geteuid() != 0:
        pytest.skip("the uid level needs root")
    ok, note = isolation.probe(level, world["scratch"], [world["course"], world["scratch"]], world["expose"])
    if not ok:
        pytest.skip(f"the {level} level cannot run here: {note}")
    assert note.endswith("network shared with the host"), note
    arrived(host["tcp"]), arrived(host["unix"])
    code, out, _, _ = run(world, host["code"], level=level)
    assert code == 0 and reach(out) == {"tcp": "connected", "unix": "connected"}, out
    assert (arrived(host["tcp"]), arrived(host["unix"])) == (1, 1)


def test_the_summary_note_says_the_namespace_level_has_no_network(world):
    need_namespace(world)
    assert any(n.startswith("namespace: ok") and n.endswith("no network)") for n in world["notes"]), world["notes"]


def _sandboxed_python(world, connection: dict, level: str) -> subprocess.CompletedProcess:
    """The sandbox given a connection file the way jupyter_client gives it (``-f FILE``); the
    command prints the copy it got."""
    folder = world["scratch"] / f"conn-{time.monotonic_ns()}"
    folder.mkdir()
    os.chmod(folder, 0o711)
    work, root = folder / "work", folder / "root"
    root.mkdir()
    isolation.prepare_work(level, work, 7)
    spec = isolation.sandbox_spec(level, 7, work, root, folder / "events.jsonl", isolation.Limits(), world["expose"])
    (folder / "sandbox.json").write_text(json.dumps(spec))
    (folder / "kernel.json").write_text(json.dumps(connection))
    os.chmod(folder / "kernel.json", 0o600)
    show = ("import json, os, sys; info = json.load(open(sys.argv[2])); "
            "print(info['transport'], info['ip'], os.getcwd())")
    try:
        return subprocess.run([sys.executable, "-I", "-S", str(isolation.SANDBOX_SCRIPT), str(folder / "sandbox.json"),
                               "--", sys.executable, "-c", show, "-f", str(folder / "kernel.json")],
                              capture_output=True, text=True, timeout=60)
    finally:
        isolation.kill_uid(isolation.UID_BASE + 7)


def test_the_kernel_gets_its_socket_names_relative_to_its_work_folder(world):
    work_ip = str(world["scratch"] / "somewhere" / "work" / isolation.IPC_NAME)
    proc = _sandboxed_python(world, {"transport": "ipc", "ip": work_ip, "shell_port": 1, "key": "k"}, world["level"])
    transport, ip, cwd = proc.stdout.split()
    assert (transport, ip) == ("ipc", isolation.IPC_NAME), proc.stdout + proc.stderr
    assert cwd.endswith("/work")


def test_a_tcp_connection_file_is_refused_at_the_namespace_level(world):
    """Its ports would be in the kernel's own network: a clear error, not a start that times out."""
    need_namespace(world)
    proc = _sandboxed_python(world, {"transport": "tcp", "ip": "127.0.0.1", "shell_port": 5555, "key": "k"},
                             "namespace")
    assert proc.returncode == 125 and "must use the ipc transport" in proc.stderr, proc.stderr


def test_ipc_prefix_is_short_enough_for_a_unix_socket(tmp_path):
    shallow = tmp_path / "w"
    shallow.mkdir()
    prefix, fd = isolation.ipc_prefix(shallow)
    assert (prefix, fd) == (str(shallow / isolation.IPC_NAME), None)
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "work"
    deep.mkdir(parents=True)
    prefix, fd = isolation.ipc_prefix(deep)
    try:
        assert len(prefix) + len("-65535") <= isolation.MAX_SOCKET_PATH
        assert os.path.samefile(os.path.dirname(prefix), deep)
        with socket.socket(socket.AF_UNIX) as server:  # a socket bound through the short route is in `deep`
            server.bind(prefix + "-1")
            assert (deep / f"{isolation.IPC_NAME}-1").is_socket()
    finally:
        os.close(fd)


_USERNS = """
import ctypes, os, sys
# In a user namespace of its own (uids 0-99999 mapped to the same), with `limit` network
# namespaces allowed there, run argv[2:]: a machine that gives mount and PID namespaces but
# refuses network ones. /proc/sys/user limits are per user namespace: the host's are untouched.
libc = ctypes.CDLL(None, use_errno=True)
ready, go = os.pipe(), os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(99)
    os.write(ready[1], b"x")
    os.read(go[0], 1)
    if sys.argv[1]:
        with open("/proc/sys/user/max_net_namespaces", "w") as f:
            f.write(sys.argv[1])
    os.execv(sys.argv[2], sys.argv[2:])
os.read(ready[0], 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 100000\\n")
os.write(go[1], b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""

_CHOOSE = """
import json, sys
from pathlib import Path
from dlmi.course.grading import isolation
scratch, course = Path(sys.argv[1]), Path(sys.argv[2])
private = [scratch, course, Path.home()]
expose = isolation.exposed_paths(isolation.python_paths(), private)
answer = {}
for requested in ("auto", "namespace"):
    try:
        answer[requested] = isolation.choose_level(requested, scratch, private, expose)
    except RuntimeError as err:
        answer[requested] = ["none", str(err).splitlines()[1:]]
print("CHOSEN", json.dumps(answer))
"""


def _choose_in_userns(world, limit: str, tmp_path) -> dict:
    scratch = tmp_path / f"scratch-{limit or 'default'}"
    scratch.mkdir(mode=0o711)
    os.chmod(scratch, 0o711)
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _USERNS, limit, sys.executable, "-c", _CHOOSE,
                           str(scratch), str(world["course"])], capture_output=True, text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("CHOSEN ")), None)
    if proc.returncode == 99 or line is None:
        pytest.skip(f"cannot make a user namespace to simulate the machine: {proc.stderr.strip()[-300:]}")
    return json.loads(line.split(" ", 1)[1])


def test_where_network_namespaces_are_refused_the_namespace_level_is_not_claimed(world, tmp_path):
    """Where CLONE_NEWNET fails (here: no network namespace allowed in a user namespace, mount
    and PID ones still fine) the chooser falls back to the next level with the reason, and an
    explicit --isolation namespace is refused; the control, same setting minus the limit, gets
    the namespace level."""
    if os.geteuid() != 0:
        pytest.skip("simulating the machine needs root (to map the sandbox uids in a user namespace)")
    need_namespace(world)
    control = _choose_in_userns(world, "", tmp_path)
    if control["auto"][0] != "namespace":
        pytest.skip(f"the namespace level does not work inside a user namespace here: {control['auto'][1]}")
    refused = _choose_in_userns(world, "0", tmp_path)
    level, notes = refused["auto"]
    assert level in ("uid", "rlimits"), refused
    assert notes[0].startswith("namespace: unavailable") and "unshare" in notes[0], notes
    assert refused["namespace"][0] == "none" and "namespace: unavailable" in refused["namespace"][1][0], refused


# ---------------------------------------------------------------- end to end, through autograde

def _meta(**fields) -> dict:
    return {"nbgrader": {"grade": False, "locked": False, "schema_version": 3, "solution": False, "task": False,
                         **fields}}


KERNEL_INFO = """
from ipykernel.connect import get_connection_info
info = get_connection_info(unpack=True)
print("TRANSPORT", info["transport"], info["ip"])
"""


@pytest.fixture(scope="module")
def tiny_course(root, host, tmp_path_factory):
    """A course with one unit of one question, and two students who submit its solution."""
    base = tmp_path_factory.mktemp("network")
    course_root = base / "course"
    (course_root / "solutions" / UNIT).mkdir(parents=True)
    shutil.copy(root / "nbgrader_config.py", course_root)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A one-question assignment", metadata=_meta(grade_id="intro", locked=True)),
        nbformat.v4.new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                                  metadata=_meta(grade_id="add", solution=True)),
        nbformat.v4.new_code_cell("assert add(2, 3) == 5", metadata=_meta(grade_id="test_add", grade=True,
                                                                            locked=True, points=1)),
        nbformat.v4.new_code_cell(host["code"] + KERNEL_INFO, metadata=_meta(grade_id="network", locked=True)),
    ]
    nbformat.write(nb, course_root / "solutions" / UNIT / NB)
    for student in ("alice", "bob"):
        folder = course_root / "submitted" / student / UNIT
        folder.mkdir(parents=True)
        shutil.copy(course_root / "solutions" / UNIT / NB, folder / NB)
    return {"root": course_root, "base": base}


def _grade(tiny_course, host, student: str, level: str, scratch: Path) -> dict:
    arrived(host["tcp"]), arrived(host["unix"])
    limits = isolation.Limits(cell_timeout=30, notebook_timeout=60, memory_bytes=isolation.GiB)
    options = ag.Options(workers=1, limits=limits, isolation=level, scratch=scratch, progress=False)
    out = io.StringIO()
    [result] = ag.autograde(Course(tiny_course["root"]), "01", [student], options, out=out)
    graded = nbformat.read(tiny_course["root"] / "autograded" / student / UNIT / NB, as_version=4)
    text = "".join(o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.get("outputs", []))
    transport = next((line.split()[1:] for line in text.splitlines() if line.startswith("TRANSPORT ")), None)
    return {"result": result, "reach": reach(text), "transport": transport, "out": out.getvalue(), "text": text,
            "arrived": (arrived(host["tcp"]), arrived(host["unix"]))}


def test_graded_at_the_strongest_level_the_kernel_runs_its_cells_off_the_network(tiny_course, host):
    graded = _grade(tiny_course, host, "alice", "auto", tiny_course["base"] / "scratch")
    result = graded["result"]
    assert (result["outcome"], result["score"], result["max_score"]) == ("graded", 1, 1), (result, graded["out"])
    assert graded["transport"] == ["ipc", isolation.IPC_NAME], graded["text"]
    if result["isolation"] == "namespace":
        assert graded["reach"] == {"tcp": f"OSError:{errno.ENETUNREACH}",
                                   "unix": f"ConnectionRefusedError:{errno.ECONNREFUSED}"}, graded["text"]
        assert graded["arrived"] == (0, 0)
        assert "no network" in graded["out"], graded["out"]
    else:
        assert graded["reach"] == {"tcp": "connected", "unix": "connected"}, graded["text"]


def test_graded_at_the_rlimits_level_from_a_deep_folder_the_kernel_keeps_the_network(tiny_course, host):
    """No network namespace at rlimits (behaviour unchanged), the same ipc transport, here through
    the short /proc/self/fd route: the work folder's own path is too long for a Unix socket."""
    scratch = tiny_course["base"] / ("a-scratch-folder-with-a-long-name-" * 3) / "grading"
    work = scratch / "jobs" / UNIT / "bob" / "run" / "work"
    assert len(str(work / isolation.IPC_NAME)) + len("-65535") > isolation.MAX_SOCKET_PATH
    graded = _grade(tiny_course, host, "bob", "rlimits", scratch)
    result = graded["result"]
    assert (result["outcome"], result["score"], result["isolation"]) == ("graded", 1, "rlimits"), graded["out"]
    assert graded["transport"] == ["ipc", isolation.IPC_NAME], graded["text"]
    assert graded["reach"] == {"tcp": "connected", "unix": "connected"}, graded["text"]
    assert graded["arrived"] == (1, 1)
