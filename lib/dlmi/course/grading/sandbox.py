"""Run one untrusted command (a student's Jupyter kernel) inside a sandbox.

This file is run as a *script* (``python -I -S sandbox.py SPEC -- COMMAND ...``), never imported
by the kernel it starts: it must stay standard-library only and single-threaded, because
``unshare(2)`` refuses to give a multi-threaded process a new mount namespace, and because the
sandbox must not depend on the code it is protecting against.

Isolation levels, strongest first (the grader probes them and uses the first that works):

``namespace``
    New mount, PID, IPC, UTS and network namespaces (plus a user namespace when not run as
    root). The command sees a new root made of a small tmpfs with read-only bind mounts of the
    system (``/usr``, ``/etc``, ...), of the Python installation and of the library it needs,
    its own work folder read-write, a private ``/tmp`` and ``/dev/shm`` of bounded size and a
    fresh ``/proc``. The course (``solutions/``, hidden tests, the gradebook, other students'
    files) is simply not in that tree. Its network is a loopback device left down and no route:
    no socket reaches the host, its ``127.0.0.1`` (other kernels, the grader's Jupyter ports) or
    its abstract Unix sockets (they belong to a network namespace too), so nothing can be sent
    out. The kernel talks to the grader over Unix socket files in its work folder (Jupyter's
    ``ipc`` transport; see :func:`_place_connection_file`). When run as root the command also
    runs under an unused uid. Everything in the namespace dies with its init process.
``uid``
    (root only, namespaces unavailable) the command runs under an unused uid in a work folder
    only that uid can write; it can still read world-readable files and use the network.
``rlimits``
    resource limits, a private work folder and process-tree clean-up only.

The loopback device stays down rather than up: no course notebook talks to itself over TCP
(multiprocessing and DataLoader workers use pipes and Unix sockets), bringing it up would take
an ioctl in this trusted launcher for nothing, and with it down a connection fails at once
(``ENETUNREACH``) instead of waiting for a timeout.

At every level: rlimits (data segment = memory cap, CPU seconds, processes, file size, open
files, no core dumps), ``no_new_privs``, parent-death signals, a sub-reaper init that keeps
every descendant in view, and a watchdog that sums the memory of all of the command's processes
(so a fork bomb cannot multiply the per-process cap) and stops the whole tree when the sum is
over the cap. What happened is appended, one JSON object a line, to the spec's ``events`` file
so that the grader can name the reason ("memory", "processes", "signal").
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import time

LEVELS = ("namespace", "uid", "rlimits")

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text):
    return None if text is None else os.fsencode(text)


def mount(source, target, fstype=None, flags=0, data=None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {source} on {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _event(spec: dict, **fields) -> None:
    """Append one event for the grader (it reads these to name why a kernel died)."""
    path = spec.get("events")
    if not path:
        return
    try:
        with open(path, "a") as f:
            f.write(json.dumps({"time": time.time(), **fields}) + "\n")
    except OSError:
        pass


# ---------------------------------------------------------------- the namespace view

def _remount_readonly(target: str) -> None:
    # A read-only bind must keep the locked flags of the mount it copies (nosuid, nodev, ...),
    # or the kernel refuses the remount inside a user namespace.
    st = os.statvfs(target).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
    for st_bit, ms_bit in ((os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                           (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if st & st_bit:
            flags |= ms_bit
    mount(None, target, None, flags)


def _bind(root: str, path: str, writable: bool = False) -> None:
    target = root + path
    if os.path.islink(path):  # e.g. /lib -> usr/lib: recreate the link, bind what it points to
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    mount(path, target, None, MS_BIND | MS_REC)
    if not writable:
        _remount_readonly(target)


def _inside(path: str, folders) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def build_root(spec: dict) -> None:
    """Make ``spec['root']`` a tmpfs holding only what the command may see (run in the new mount ns)."""
    root = spec["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    # The private /tmp and /dev/shm first, the read-only system and Python after: a Python
    # installed under /tmp (a CI clone's .venv) is then bound on top of the private /tmp rather
    # than hidden by it.
    tmp_size = int(spec.get("tmp_bytes", 64 * 2**20))
    for folder in ("/tmp", "/dev/shm"):
        os.makedirs(root + folder, exist_ok=True)
        mount("tmpfs", root + folder, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size},mode=1777")
    bound: list[str] = []
    for path in sorted({os.path.normpath(p) for p in spec["expose"]}, key=lambda p: (p.count("/"), p)):
        if not os.path.lexists(path) or _inside(path, bound):
            continue
        _bind(root, path)
        if not os.path.islink(path):
            bound.append(path)
    for dev in ("null", "zero", "full", "random", "urandom"):
        _bind(root, f"/dev/{dev}", writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    _bind(root, spec["work"], writable=True)


def enter_namespaces(spec: dict) -> None:
    """New mount/PID/IPC/UTS/network namespaces (and a user namespace when not root) for our
    children. A new network namespace has only ``lo``, down: the kernel is off the network."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
    if uid != 0:
        flags |= CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if uid != 0:  # map ourselves to ourselves: a non-zero uid loses every capability at exec
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    build_root(spec)


# ---------------------------------------------------------------- limits and processes

def pids_of(uid: int) -> list[int]:
    """The processes of ``uid`` now (a process that ends while we look is skipped)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _tasks_of(uid: int) -> int:
    """Threads of all processes of ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in pids_of(uid):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def apply_limits(spec: dict) -> None:
    def limit(kind, value):
        if value:
            value = int(value)
            hard = resource.getrlimit(kind)[1]
            if os.geteuid() != 0 and hard != resource.RLIM_INFINITY:
                value = min(value, hard)  # without root a hard limit can only come down
            resource.setrlimit(kind, (value, value))

    limit(resource.RLIMIT_DATA, spec.get("data_bytes"))
    limit(resource.RLIMIT_CPU, spec.get("cpu_seconds"))
    limit(resource.RLIMIT_FSIZE, spec.get("file_bytes"))
    limit(resource.RLIMIT_NOFILE, spec.get("open_files"))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # NPROC counts every task (thread) of the real uid: under a uid of its own the sandbox gets
    # exactly its share; sharing the grader's uid, it gets what that uid runs now plus its share.
    threads = int(spec.get("threads") or 0)
    if threads and os.geteuid() == 0 and spec["level"] in ("namespace", "uid"):
        limit(resource.RLIMIT_NPROC, threads)
    elif threads and os.geteuid() != 0:
        limit(resource.RLIMIT_NPROC, _tasks_of(os.getuid()) + threads)


def drop_privileges(spec: dict) -> None:
    if os.geteuid() == 0 and spec["level"] in ("namespace", "uid"):
        os.setgroups([])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (the init is a sub-reaper, so orphans stay in its tree)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def memory_of(pids: list[int]) -> int:
    """Resident bytes of ``pids``. One process: its RSS. Several: their PSS (pages shared after a
    fork counted once). Very many (only past the process limit): the sum of their RSS, cheap to
    read and over-counting shared pages."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for p in pids:
        try:
            if 1 < len(pids) <= 64:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            else:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * page
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
            continue
    return total


def _watchdog_priority() -> None:
    """Run the watchdog ahead of everything the sandbox runs: a fork bomb makes hundreds of
    processes runnable, and a watchdog that waits its turn behind them stops them late. Needs
    root (or an RLIMIT_RTPRIO); children go back to normal scheduling."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -5)
        except OSError:
            pass


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its whole tree. Its tree is read before ``pid`` dies (its orphans would
    leave it); in the namespace level killing ``pid``, the init, ends the namespace anyway."""
    for p in descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_init(spec: dict, argv: list[str], env: dict) -> None:
    """The sandbox's init: start the command, reap orphans, leave with the command's status."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # SIGINT (a kernel interrupt) reaches the whole process group; only the kernel must act on it.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = os.fork()
    if child == 0:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.execvpe(argv[0], argv, env)
        except OSError as err:
            print(f"dlmi sandbox: cannot run {argv[0]}: {err.strerror}", file=sys.stderr, flush=True)
        finally:
            os._exit(127)
    status = 0
    while True:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = wstatus
            break
    # Whatever the command left behind goes with it.
    if spec["level"] == "uid" and os.geteuid() != 0:
        try:
            os.kill(-1, signal.SIGKILL)  # as the sandbox uid: every process of that uid but us
        except ProcessLookupError:
            pass
    else:
        for p in descendants(os.getpid())[1:]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def child_main(spec: dict, argv: list[str], env: dict) -> None:
    try:
        if spec["level"] == "namespace":
            root = spec["root"]
            mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            os.chroot(root)
        os.chdir(spec["work"])
        apply_limits(spec)
        drop_privileges(spec)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        os.umask(0o077)
        run_init(spec, argv, env)
    except BaseException as err:  # noqa: BLE001 - report anything, then leave
        _event(spec, event="sandbox-error", detail=f"{type(err).__name__}: {err}")
        print(f"dlmi sandbox: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        os._exit(126)


# ---------------------------------------------------------------- the launcher (trusted side)

def _place_connection_file(spec: dict, argv: list[str]) -> list[str]:
    """Jupyter writes the connection file 0600 for the grader; give the kernel its own copy.

    With the ``ipc`` transport (ZMQ over Unix sockets: the only way through the network
    namespace, and used at every level) the grader names the socket files ``IP-PORT``, where
    ``IP`` is a path into the kernel's work folder, by whatever route keeps it under the 107
    bytes of a Unix socket path (see ``isolation.ipc_prefix``). The kernel gets the bare file
    name, resolved against its working directory: that work folder at every level, whatever
    path it has inside the namespace. With ``tcp`` the namespace level refuses: the kernel's
    ports would be in its own network namespace, out of the grader's reach.
    """
    if "-f" not in argv:
        return argv
    i = argv.index("-f") + 1
    with open(argv[i]) as f:
        info = json.load(f)
    if info.get("transport") == "ipc":
        info["ip"] = os.path.basename(info["ip"])
    elif spec["level"] == "namespace":
        raise OSError(f"the kernel has no network at this level: its connection file must use the ipc "
                      f"transport (KernelManager.transport = 'ipc'), not {info.get('transport')!r}")
    text = json.dumps(info)
    if spec["level"] == "namespace":
        inside = "/tmp/kernel-connection.json"
        path = spec["root"] + inside
    else:
        inside = path = os.path.join(spec["work"], ".kernel-connection.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if os.geteuid() == 0 and spec["level"] in ("namespace", "uid"):
        os.chown(path, int(spec["uid"]), int(spec["gid"]))
    return argv[:i] + [inside] + argv[i + 1:]


def launch(spec: dict, argv: list[str]) -> int:
    env = dict(spec.get("env") or {})
    if spec["level"] == "namespace":
        enter_namespaces(spec)
    argv = _place_connection_file(spec, argv)
    child = os.fork()
    if child == 0:
        child_main(spec, argv, env)
    stop = {"by": None}

    def on_term(signum, _frame):  # the grader shuts the kernel down: all of it
        stop["by"] = signum
        kill_tree(child)

    signal.signal(signal.SIGINT, lambda *_: None)  # interrupts reach the kernel directly (same group)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    _watchdog_priority()
    status, peak = watch(spec, child, stop)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    _event(spec, event="exit", code=code, peak_bytes=peak, stopped_by=stop["by"])
    return code


def watch(spec: dict, child: int, stop: dict) -> tuple[int, int]:
    """Every 0.2 s until ``child`` (the init) exits: stop the whole tree when it has more
    processes than allowed or uses more memory than the cap, or when the grader is gone.
    Returns the init's wait status and the peak memory seen."""
    cap, max_procs = int(spec.get("memory_bytes") or 0), int(spec.get("processes") or 0)
    parent = os.getppid()
    peak, stopped = 0, False
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            return status, peak
        if os.getppid() != parent and stop["by"] is None:
            stop["by"] = "parent exited"
            kill_tree(child)
        pids = descendants(child)
        if stopped:
            kill_tree(child)  # stragglers
        elif max_procs and len(pids) > max_procs:
            # Counted before any memory is read: reading the memory map of a process that forks
            # as fast as it can may wait, and a fork bomb must not stall the watchdog.
            if spec["level"] == "namespace":
                os.kill(child, signal.SIGKILL)  # the init: the kernel then ends the whole namespace
            kill_tree(child)
            stopped = True
            _event(spec, event="processes", processes=len(pids), limit=max_procs)
        else:
            used = memory_of(pids)
            peak = max(peak, used)
            if cap and used > cap:
                kill_tree(child)
                stopped = True
                _event(spec, event="memory", bytes=used, limit=cap, processes=len(pids))
        time.sleep(0.2)


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: sandbox.py SPEC.json -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        spec = json.load(f)
    if spec.get("level") not in LEVELS:
        print(f"dlmi sandbox: unknown level {spec.get('level')!r}", file=sys.stderr)
        return 2
    try:
        return launch(spec, args[2:])
    except OSError as err:
        _event(spec, event="sandbox-error", detail=str(err))
        print(f"dlmi sandbox: cannot set up the {spec['level']} level: {err}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
