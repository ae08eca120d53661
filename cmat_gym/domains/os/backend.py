"""A bubblewrap shell sandbox: the real machine behind the OS-interaction tasks (AgentBench's OS
tasks without Docker).

Agent shell commands are hostile input. They only ever run inside a fresh ``bwrap`` sandbox per
episode; nothing here runs them on the host.

Sandbox layout (one ``bwrap`` per episode)
------------------------------------------
* ``--unshare-all``: own user, mount, PID, IPC, UTS, cgroup and network namespaces (only ``lo``,
  no route out), ``--hostname sandbox``, ``--new-session`` (no terminal to push input into),
  ``--die-with-parent``, ``--clearenv`` and a clean environment, working directory ``/root``.
* host ``/usr`` bound read-only, ``/bin``, ``/sbin``, ``/lib*`` recreated as on the host (symlinks on
  merged-usr Debian 12, read-only binds otherwise); own ``/proc`` and ``/dev``.
* fresh size-capped tmpfs for ``/root``, ``/home``, ``/tmp``, ``/var``, ``/run``, ``/dev/shm``,
  ``/usr/local`` (writable, so tasks can install commands on the PATH; the host's is hidden) and
  ``/etc``. ``/etc`` is filled with a minimal snapshot of the host's (users, groups, PAM, login.defs,
  skel, profile, ld.so.cache, alternatives links, ...), taken once per process; password hashes in
  ``shadow``/``gshadow`` are replaced by ``!`` so no host secret enters. ``useradd``, ``chown``,
  ``su - user -c cmd`` work and vanish at reset. Nothing else of the host (``/work``, the host's
  ``/root``, ``/home``, ``/tmp``, sockets) is mounted. ``/`` and ``/dev`` are read-only, so every
  writable place has a size cap.

Users and the process limit
---------------------------
``RLIMIT_NPROC`` is never enforced for host uid 0, and this host has ``pid_max = 32768``, so a fork
bomb run as (host) root would take the whole machine down. Each sandbox therefore gets its own range
of 65,536 unused host uids (a random slot above 2^30): ``bwrap`` is started *as the first uid of that
range* and we write the user-namespace map ``0..65535 -> range`` ourselves (bwrap's
``--userns-block-fd`` waits for it; writing a range needs host root). Inside, the shell is uid 0 with
Docker's default capability set (no ``CAP_SYS_ADMIN``: ``mount`` fails; ``unshare -r`` still
makes a nested namespace, inside this one), and ``useradd``'d users are real, distinct uids, so
``su`` works. Writing a uid-range map needs host root: without it ``is_available()`` is False.
Because the namespace's creator is not root, the kernel counts
*every* process of the sandbox, whatever its uid inside, against ``max_processes`` (ucounts of the
namespace owner) -- a fork bomb stops there and cannot exhaust the host's PIDs. The price: host root
is not mapped, so host files (``/usr``) appear owned by ``nobody`` (65534) inside, and setuid bits
of host binaries have no effect (the shell is root anyway).

``/usr`` stays read-only: bwrap 0.8.0 (Debian 12) has no ``--tmp-overlay``, and even with an overlay
the unmapped host root owns ``/usr``'s directories, so root inside could not create files there
(``/usr/stock.log`` fails with "Read-only file system"). ``bwrap_features()`` detects ``--size``
(used) and ``--tmp-overlay`` (reported, not used, for that reason).

Other limits (``prlimit`` before ``exec bwrap``, inherited by every process inside): ``RLIMIT_AS`` =
``memory_mb`` per process, ``RLIMIT_CPU`` = ``cpu_time_s`` per process, ``RLIMIT_FSIZE`` =
``max_file_mb`` per file, ``RLIMIT_CORE`` = 0. tmpfs mounts are capped with ``--size tmpfs_mb``
each. Without cgroups, total memory across processes is bounded only by ``max_processes x
memory_mb`` plus the tmpfs caps.

Shells and the protocol
-----------------------
bwrap runs with ``--as-pid-1``: pid 1 inside is a trusted *supervisor* bash reading our pipe, and
pid 1 ignores every signal sent from inside its namespace, so ``kill -9 -1`` or ``pkill bash`` cannot
take it down. It starts the agent's persistent ``bash --noprofile --norc`` on separate pipes (under a
small wrapper that reports the shell's exit status) and runs ``run_script`` / ``start_background``
as separate processes: nothing the agent does to its shell (functions named ``printf``,
``exec >/dev/null``, ``exit``) changes how a check script runs or what it returns.

A command goes to the agent shell as ``eval -- '<quoted>' </dev/null`` followed by a ``printf`` of a
sentinel carrying a fresh 128-bit nonce and ``$?``: cwd and variables persist, the command cannot
read the protocol's input (``cat``/``read`` see EOF at once), cannot guess the sentinel, and a
syntax error cannot swallow it. stdout and stderr are merged; output is kept up to
``max_output_chars`` and the rest drained and dropped (bounded memory), invalid UTF-8 is replaced.
Output that background jobs print between commands comes with the next command, as on a terminal.

* ``exit N`` (or ``exec``) returns code N and a new shell is started (files kept, cwd/vars reset);
  so is a shell killed between commands.
* On a timeout every process started in the sandbox since the command began is SIGKILLed (older
  background jobs live on). Processes are found from the host (children links under pid 1, or by
  the sandbox's host uid range) and killed through a pidfd after re-checking their start time, so
  a recycled host PID is never signalled. If the shell still does not answer (a builtin loop,
  ``exec sleep``), it is killed and replaced; if the supervisor fails, the sandbox is rebuilt and
  the output says that all state was lost.
* If a command finds the sandbox holding half of ``max_processes`` or more (a fork bomb left
  running), every process but the shells is killed first and its pending output dropped.

A root process inside can still read and disturb anything inside, including a running check
script (as with ``docker exec`` in AgentBench); ``stop_agent_processes()`` before a check removes
that possibility. Not thread-safe: one ``ShellSandbox`` per thread.

Reset
-----
``reset()`` kills the old sandbox (SIGKILL to its pid 1 takes the whole PID namespace) and takes a
spare built by a background thread during the previous episode; a fresh bwrap per episode means
nothing can carry over. The thread is long-lived on purpose (``--die-with-parent`` is tied to the
spawning *thread*). Nothing is left on the host: no temp dirs (the /etc snapshot travels in
memfds), no mounts outside the sandbox's own namespace, no processes or fds after ``close()``.

Measured (``benchmark()``, e.g. ``python -c "from cmat_gym.domains.os.backend import benchmark;
print(benchmark())"``: 200 episodes of a reset, five ``run("ls -la | wc -l")`` and one
``run("true")``; this host: 2 cores shared with another test run
(load average ~3), kernel 6.18, bwrap 0.8.0): ``reset()`` median 1.4-5.5 ms with the spare (three
runs; ``cold_reset_ms``, a reset without it: 17-18 ms); ``run("ls -la | wc -l")`` median 3.9-4.2 ms
(the host itself needs 3.0 ms for ``subprocess.run("ls -la | wc -l", shell=True)``);
``run("true")`` 0.4 ms. An earlier, less loaded run: ``ls -la | wc -l`` 2.8 ms, ``true`` 0.3 ms.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import functools
import json
import math
import os
import queue
import random
import re
import secrets
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV = {"PATH": _PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
        "LANG": "C.UTF-8", "TERM": "dumb"}
# Docker's default capability set: enough for useradd/chown/su/kill/chroot, not for mount or ptrace.
_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
         "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
         "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
_UID_RANGE = 65_536
_UID_SLOTS = (1 << 30) // _UID_RANGE  # slots between 2^30 and 2^31: far above any real account
# /usr/local is a fresh tmpfs over the read-only /usr: tasks install commands there (AgentBench's
# calc tasks write /usr/local/bin/calc), and the host's own /usr/local (CUDA, tools) stays hidden.
_TMPFS = ("/root", "/home", "/tmp", "/var", "/run", "/dev/shm", "/usr/local")
_VAR_DIRS = ("/var/tmp", "/var/log", "/var/mail", "/var/spool", "/var/lib", "/var/cache", "/var/local",
             "/var/opt", "/run/lock", "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib", "/usr/local/share",
             "/usr/local/include", "/usr/local/etc")
# /etc entries copied into each sandbox (recursively for directories). Deliberately an allowlist:
# /etc also holds credentials (pip.conf, gitconfig, ssh keys, security/opasswd).
_ETC_ENTRIES = ("passwd", "group", "shadow", "gshadow", "nsswitch.conf", "login.defs", "default", "skel",
                "bash.bashrc", "profile", "profile.d", "environment", "shells", "pam.conf", "pam.d",
                "security", "adduser.conf", "deluser.conf", "alternatives", "ld.so.cache", "ld.so.conf",
                "ld.so.conf.d", "localtime", "timezone", "os-release", "debian_version", "issue",
                "inputrc", "services", "protocols", "networks", "host.conf", "subuid", "subgid",
                "locale.alias", "mime.types", "python3", "python3.11", "vim", "terminfo")
_ETC_SKIP = frozenset({"security/opasswd"})
_ETC_GENERATED = {
    "hostname": b"sandbox\n",
    "hosts": b"127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}
_MAX_ETC_FILE = 1 << 20
_TRUNCATED = "\n[... output truncated ...]"
_MARK_TAIL = 160  # bytes kept unscanned between reads: longer than any sentinel
_GRACE_S = 1.0  # how long a killed command gets to let its shell print the sentinel
_EXIT_MARK_WAIT_S = 0.2  # after the shell died: how long its exit marker may take
_START_TIMEOUT_S = 10.0
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CommandResult:
    """What one command printed (stdout and stderr merged) and how it ended.

    ``exit_code`` is None when the command did not finish on its own (timed out, or the sandbox had
    to be rebuilt); ``truncated`` is True when output beyond ``max_output_chars`` was dropped.
    """

    output: str
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class BwrapFeatures:
    """Optional bwrap options this host's bwrap understands (detected once from ``bwrap --help``)."""

    version: str
    tmpfs_size: bool  # --size (bwrap >= 0.8 in practice)
    tmp_overlay: bool  # --overlay-src/--tmp-overlay (bwrap >= 0.10)


# ------------------------------------------------------------------ availability
def _bwrap_path() -> str | None:
    return shutil.which("bwrap") or (os.path.exists("/usr/bin/bwrap") and "/usr/bin/bwrap") or None


@functools.lru_cache(maxsize=1)
def bwrap_features() -> BwrapFeatures:
    """The bwrap version and which optional options it supports (raises if bwrap is missing)."""
    path = _bwrap_path()
    if path is None:
        raise RuntimeError(_install_hint("bwrap was not found on PATH"))
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
    return BwrapFeatures(version=version, tmpfs_size="--size" in usage, tmp_overlay="--tmp-overlay" in usage)


def _install_hint(reason: str) -> str:
    return (f"The OS sandbox needs bubblewrap: {reason}. Install it with `apt-get install -y bubblewrap` "
            "(as root; `make test` installs it too). It must be able to create user namespaces, and "
            "the sandbox maps a range of uids, which needs root.")


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """None if a real sandbox starts and answers here, else why not (cached for the process)."""
    if _bwrap_path() is None:
        return "bwrap was not found on PATH"
    if os.geteuid() != 0:
        return "not running as root (mapping a uid range per sandbox needs CAP_SETUID)"
    if shutil.which("prlimit") is None:
        return "prlimit (util-linux) was not found"
    try:
        with ShellSandbox(prewarm=False) as sb:
            result = sb.run("echo ok")
        if result.output.strip() != "ok":
            return f"the probe sandbox answered {result.output!r}"
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"bwrap cannot create its namespaces here ({exc})"
    return None


def is_available() -> bool:
    """True when bwrap is installed and a sandbox really starts (probed once per process)."""
    return _probe() is None


def require_bwrap() -> None:
    """Raise a RuntimeError that says how to install bubblewrap when the sandbox cannot run here."""
    reason = _probe()
    if reason is not None:
        raise RuntimeError(_install_hint(reason))


# ------------------------------------------------------------------ /etc snapshot
@dataclass(frozen=True)
class _EtcEntry:
    path: str  # inside /etc, e.g. "pam.d/su"
    kind: str  # "file" | "dir" | "symlink"
    mode: int = 0o644
    data: bytes = b""  # file content, or the symlink's target


def _scrub_hashes(data: bytes) -> bytes:
    """shadow/gshadow with every password hash replaced by '!' (locked): no host secret leaks."""
    lines = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(":")
        if len(parts) > 1 and parts[1] not in ("", "!", "*", "!*", "x"):
            parts[1] = "!"
        lines.append(":".join(parts))
    return ("\n".join(lines) + "\n").encode()


@functools.lru_cache(maxsize=1)
def _etc_snapshot() -> tuple[_EtcEntry, ...]:
    """The host /etc files a normal shell needs, read once per process."""
    entries: list[_EtcEntry] = []

    def add(rel: str) -> None:
        if rel in _ETC_SKIP:
            return
        full = os.path.join("/etc", rel)
        try:
            st = os.lstat(full)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            if rel.startswith("alternatives/") and rel.endswith(".gz"):
                return  # man-page links: ~320 of the ~390 alternatives, useless without man pages
            entries.append(_EtcEntry(rel, "symlink", data=os.readlink(full).encode()))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(_EtcEntry(rel, "dir", stat.S_IMODE(st.st_mode)))
            for name in sorted(os.listdir(full)):
                add(f"{rel}/{name}")
        elif stat.S_ISREG(st.st_mode) and st.st_size <= _MAX_ETC_FILE:
            try:
                with open(full, "rb") as fh:
                    data = fh.read()
            except OSError:
                return
            if rel in ("shadow", "gshadow"):
                data = _scrub_hashes(data)
            entries.append(_EtcEntry(rel, "file", stat.S_IMODE(st.st_mode), data))

    for name in _ETC_ENTRIES:
        add(name)
    entries += [_EtcEntry(name, "file", 0o644, data) for name, data in _ETC_GENERATED.items()]
    entries.append(_EtcEntry("mtab", "symlink", data=b"/proc/self/mounts"))
    return tuple(entries)


def _host_root_layout() -> list[str]:
    """bwrap arguments recreating the host's /bin, /sbin, /lib* (merged-usr symlinks or binds)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


# ------------------------------------------------------------------ output collection
@dataclass
class _Collector:
    """Reads one answer from a shell's output pipe: bounded output plus the sentinel it ends with."""

    limit_bytes: int
    pattern: re.Pattern[bytes]
    out: bytearray = field(default_factory=bytearray)
    scan: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    match: re.Match[bytes] | None = None
    leftover: bytes = b""

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; True once the sentinel was seen (then ``leftover`` holds what followed it)."""
        self.scan += chunk
        # bytes.find is a fast scan; the regular expression runs only where a sentinel could start.
        start = self.scan.find(b"\n__CMAT_")
        match = self.pattern.search(self.scan, start) if start >= 0 else None
        if match is not None:
            self._keep(self.scan[: match.start()])
            self.leftover = bytes(self.scan[match.end():])
            self.scan = bytearray()
            self.match = match
            return True
        if len(self.scan) > _MARK_TAIL:
            # A sentinel could straddle two reads: keep a tail unscanned, commit the rest.
            cut = len(self.scan) - _MARK_TAIL
            self._keep(self.scan[:cut])
            del self.scan[:cut]
        return False

    def _keep(self, data: bytes | bytearray) -> None:
        room = self.limit_bytes - len(self.out)
        if room > 0:
            self.out += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self, limit_chars: int) -> tuple[str, bool]:
        """The output decoded (invalid UTF-8 replaced), cut to ``limit_chars``, and whether it was cut."""
        self._keep(self.scan)  # unterminated answer (timeout, EOF): what did arrive still counts
        self.scan = bytearray()
        text = bytes(self.out).decode("utf-8", "replace")
        truncated = self.dropped > 0 or len(text) > limit_chars
        if truncated:
            text = text[:limit_chars] + _TRUNCATED
        return text, truncated


class _Channel:
    """One shell's pipes as seen from the host: a write end (its stdin) and a read end (its output)."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.pending = b""  # output that arrived after the previous sentinel (background jobs)
        os.set_blocking(write_fd, False)
        with contextlib.suppress(OSError):  # bigger pipe: fewer reads when draining huge output
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 1 << 20)

    def exchange(self, data: bytes, collector: _Collector, deadline: float, watch_fd: int = -1) -> str:
        """Write ``data``, read into ``collector`` until its sentinel; "match", "timeout", "eof" or "died".

        Writing and reading are interleaved so a long command whose output fills the pipe cannot
        deadlock against our own write. ``watch_fd`` is the shell's pidfd: when the shell is gone,
        only a short wait remains for the exit marker its wrapper prints, then "died".
        """
        if self.pending:
            pending, self.pending = self.pending, b""
            if collector.feed(pending):
                self.pending = collector.leftover
                return "match"
        todo = memoryview(data)
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        if todo:
            poller.register(self.write_fd, select.POLLOUT)
        if watch_fd >= 0:
            poller.register(watch_fd, select.POLLIN)
        died = False
        while True:
            # Checked before every poll, not only when poll comes back empty: a writer faster than
            # us would otherwise keep the pipe non-empty and the deadline would never be seen.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "died" if died else "timeout"
            for fd, _event in poller.poll(math.ceil(remaining * 1000)):
                if fd == watch_fd:
                    poller.unregister(watch_fd)
                    died = True
                    deadline = min(deadline, time.monotonic() + _EXIT_MARK_WAIT_S)
                elif fd == self.write_fd:
                    try:
                        todo = todo[os.write(fd, todo):]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the shell is gone; its output may still tell why
                        todo = todo[:0]
                    if not todo:
                        poller.unregister(self.write_fd)
                else:
                    try:
                        chunk = os.read(fd, 1 << 20)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        return "eof"
                    if collector.feed(chunk):
                        self.pending = collector.leftover
                        return "match"

    def discard_output(self) -> None:
        """Drop what is waiting in the output pipe (the stderr of a killed fork bomb, for instance)."""
        self.pending = b""
        os.set_blocking(self.read_fd, False)
        try:
            for _ in range(64):  # bounded: a writer that is still alive cannot keep us here
                if not os.read(self.read_fd, 1 << 20):
                    break
        except OSError:
            pass
        finally:
            os.set_blocking(self.read_fd, True)

    def close(self) -> None:
        """Close both host ends."""
        for fd in (self.write_fd, self.read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _marker(kind: str, secret: str) -> re.Pattern[bytes]:
    return re.compile(rb"\n__CMAT_" + kind.encode() + rb"_" + secret.encode() + rb"_(-?\d+)__\n")


# ------------------------------------------------------------------ one sandbox
@dataclass(frozen=True)
class _Proc:
    pid: int
    start: int  # clock ticks since boot (field 22 of /proc/PID/stat)
    parent: int


def _now_ticks() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return int(data.rsplit(b")", 1)[1].split()[19])


def _kill_verified(pid: int, start: int) -> bool:
    """SIGKILL ``pid`` only if it is still the process that started at ``start`` (no PID reuse)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if _start_ticks(pid) != start:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


@dataclass(frozen=True)
class _Limits:
    """What a new sandbox is built with (a snapshot: the spare builder never holds the ShellSandbox)."""

    memory_mb: int
    max_processes: int
    cpu_time_s: int
    max_file_mb: int
    tmpfs_mb: int
    max_output_chars: int


def _build(limits: _Limits) -> _Instance:
    """A started, ready sandbox; on failure nothing of it is left (safe to call from any thread)."""
    inst = _Instance(limits)
    try:
        inst.wait_ready(limits.max_output_chars)
    except BaseException:
        inst.kill()
        inst.reap(block=True)
        raise
    return inst


_LIVE: weakref.WeakSet[ShellSandbox] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close every sandbox still open when the interpreter exits. atexit runs while the spare
    builder threads still run: a sandbox left open used to hang the exit on a pending spare."""
    for sandbox in list(_LIVE):
        with contextlib.suppress(Exception):
            sandbox.close()


class _SpareBuilder:
    """One long-lived thread that builds spare sandboxes.

    Long-lived on purpose: bwrap's ``--die-with-parent`` (PR_SET_PDEATHSIG) fires when the *thread*
    that spawned it exits, so a thread per spare would kill each spare as soon as it was built.
    The thread lives until ``close()``, after every sandbox it spawned is dead.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Limits, Future[_Instance]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="cmat-os-sandbox-spares", daemon=True)
        self._thread.start()

    def submit(self, limits: _Limits) -> Future[_Instance]:
        """Queue one build; the future holds the ready sandbox or the error."""
        future: Future[_Instance] = Future()
        self._jobs.put((limits, future))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            limits, future = job
            try:
                future.set_result(_build(limits))
            except BaseException as exc:  # handed to reset(), which falls back to a synchronous build
                future.set_exception(exc)

    def stop(self) -> None:
        """End the thread once queued builds are done (call only when their sandboxes are dead)."""
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _Instance:
    """One running bwrap sandbox: its supervisor (pid 1), the agent shell and the host-side handles."""

    def __init__(self, limits: _Limits) -> None:
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0  # host pid of the supervisor bash, pid 1 inside
        self.init_pidfd = -1
        self.wrapper_pid = 0  # the supervisor's child that waits for the shell and prints its exit code
        self.shell_pid = 0  # the agent's bash
        self.shell_pidfd = -1
        self.ready = False
        self.uid = 0  # first host uid of this sandbox's range; root inside is this uid outside
        self.inner_fds = (-1, -1)  # the agent pipes' fd numbers inside the supervisor
        self.supervisor: _Channel | None = None
        self.agent: _Channel | None = None
        self._spawn(limits)

    @property
    def protected(self) -> frozenset[int]:
        """Processes a kill sweep never touches: the supervisor, the shell's wrapper, the shell."""
        return frozenset({self.init_pid, self.wrapper_pid, self.shell_pid})

    # ---------------------------------------------------------- start
    def _spawn(self, sb: _Limits) -> None:
        bwrap = _bwrap_path()
        if bwrap is None:
            raise RuntimeError(_install_hint("bwrap was not found on PATH"))
        if os.geteuid() != 0:
            raise RuntimeError(_install_hint("not running as root"))
        uid = self.uid = (1 << 30) + random.randrange(_UID_SLOTS) * _UID_RANGE
        owned: list[int] = []  # every fd opened here; closed at the end unless kept

        def high(fd: int) -> int:
            # Passed fds keep their numbers inside the sandbox. Moved to >= 10 so they can never be
            # 0-2 (when the host closed its stdio) nor 3-9, which the supervisor's commands use
            # (run_script's script is fd 3).
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            owned.append(moved)
            return moved

        def pipe() -> tuple[int, int]:
            r, w = os.pipe()
            return high(r), high(w)

        sup_in_r, sup_in_w = pipe()
        sup_out_r, sup_out_w = pipe()
        agent_in_r, agent_in_w = pipe()
        agent_out_r, agent_out_w = pipe()
        info_r, info_w = pipe()
        block_r, block_w = pipe()
        # --as-pid-1: the supervisor is pid 1, and pid 1 ignores every signal sent from inside its
        # namespace, so `kill -9 -1` or `pkill bash` in the sandbox cannot take the supervisor down.
        args = [bwrap, "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session",
                "--hostname", "sandbox", "--clearenv", "--info-fd", str(info_w)]
        for key, value in _ENV.items():
            args += ["--setenv", key, value]
        args += ["--unshare-user", "--userns-block-fd", str(block_r)]
        for cap in _CAPS:
            args += ["--cap-add", cap]
        args += ["--ro-bind", "/usr", "/usr", *_host_root_layout(), "--proc", "/proc", "--dev", "/dev"]
        size = ["--size", str(sb.tmpfs_mb << 20)] if bwrap_features().tmpfs_size else []
        for path in _TMPFS:
            args += ["--perms", "1777" if path in ("/tmp", "/dev/shm") else "0755", *size, "--tmpfs", path]
        for path in _VAR_DIRS:
            args += ["--perms", "1777" if path == "/var/tmp" else "0755", "--dir", path]
        args += ["--perms", "0755", *size, "--tmpfs", "/etc"]
        file_fds: list[int] = []
        for entry in _etc_snapshot():
            dest = f"/etc/{entry.path}"
            if entry.kind == "dir":
                args += ["--perms", f"{entry.mode:o}", "--dir", dest]
            elif entry.kind == "symlink":
                args += ["--symlink", entry.data.decode(), dest]
            else:
                fd = high(os.memfd_create("etc", os.MFD_CLOEXEC))
                file_fds.append(fd)
                os.write(fd, entry.data)
                os.lseek(fd, 0, os.SEEK_SET)
                args += ["--perms", f"{entry.mode:o}", "--file", str(fd), dest]
        # The root (bwrap's tmpfs) and /dev have no size cap: read-only, so every writable place
        # is a capped tmpfs. Device nodes stay usable (MS_RDONLY does not affect device I/O).
        args += ["--remount-ro", "/dev", "--remount-ro", "/"]
        args += ["--chdir", "/root", "/usr/bin/bash", "--noprofile", "--norc"]
        limits = [f"--as={sb.memory_mb << 20}", f"--nproc={sb.max_processes}",
                  f"--cpu={sb.cpu_time_s}", f"--fsize={sb.max_file_mb << 20}", "--core=0"]
        self.inner_fds = (agent_in_r, agent_out_w)
        passed = [agent_in_r, agent_out_w, info_w, block_r, *file_fds]
        kept = {sup_in_w, sup_out_r, agent_in_w, agent_out_r}
        try:
            # prlimit sets the limits and execs bwrap: no preexec_fn, which can deadlock in a process
            # with threads (a training loop). The uid switch is done by _posixsubprocess itself.
            self.proc = subprocess.Popen(
                ["prlimit", *limits, "--", *args], stdin=sup_in_r, stdout=sup_out_w, stderr=sup_out_w,
                pass_fds=passed, env={"PATH": "/usr/bin:/bin"}, close_fds=True,
                user=uid, group=uid, extra_groups=[],
            )
            for fd in (sup_in_r, sup_out_w, agent_in_r, agent_out_w, info_w, *file_fds):
                os.close(fd)
                owned.remove(fd)
            self.init_pid = self._read_child_pid(info_r, sup_out_r)
            self.init_pidfd = os.pidfd_open(self.init_pid)
            # bwrap runs as `uid`, unprivileged, and waits on block_r until the map exists.
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{self.init_pid}/{name}", "w") as fh:
                    fh.write(f"0 {uid} {_UID_RANGE}\n")
            os.write(block_w, b"1")
            self.supervisor = _Channel(sup_in_w, sup_out_r)
            self.agent = _Channel(agent_in_w, agent_out_r)
            os.write(sup_in_w, self._bootstrap(agent_in_r, agent_out_w, block_r).encode())
        except BaseException:
            kept.clear()  # `finally` closes every pipe end; the channels must not close them again
            self.supervisor = self.agent = None
            self.kill()
            self.reap(block=True)
            raise
        finally:
            for fd in owned:
                if fd not in kept:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    @staticmethod
    def _read_child_pid(info_r: int, out_r: int) -> int:
        deadline = time.monotonic() + _START_TIMEOUT_S
        data = b""
        while b"}" not in data:
            ready, _, _ = select.select([info_r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(info_r, 4096) if ready else b""
            if not chunk:
                os.set_blocking(out_r, False)
                with contextlib.suppress(OSError):
                    data += os.read(out_r, 4096)
                raise RuntimeError(f"bwrap did not start: {data.decode('utf-8', 'replace').strip()}")
            data += chunk
        return int(json.loads(data)["child-pid"])

    def _bootstrap(self, agent_in: int, agent_out: int, block: int) -> str:
        """The supervisor's first input: a function that starts an agent shell on the agent pipes.

        The supervisor keeps the agent pipes open, so a new shell can be started after ``exit``.
        The shell runs under a wrapper subshell that prints its exit status; ``env`` resets the
        SIGINT/SIGQUIT that bash ignores in asynchronous jobs, so the shell behaves like a login.
        """
        exit_mark = f"\\n__CMAT_EXIT_{self.token}_%d__\\n"
        return (
            f"exec {block}<&-\n"
            f"__cmat_shell() {{ {{ env --default-signal bash --noprofile --norc <&{agent_in} "
            f">&{agent_out} 2>&1 {agent_in}<&- {agent_out}<&-; builtin printf '{exit_mark}' \"$?\" "
            f">&{agent_out}; }} </dev/null >/dev/null 2>&1 & }}\n"
            # From here on the supervisor's own messages (job notices naming the exit marker) go nowhere;
            # every command it runs for us redirects its stderr explicitly.
            "exec 2>/dev/null\n"
            f"builtin printf '\\n__CMAT_READY_{self.token}_%d__\\n' 0\n"
        )

    def hide_agent_pipes(self) -> str:
        """Redirections that keep the agent's pipes out of a process the supervisor starts."""
        return f"{self.inner_fds[0]}<&- {self.inner_fds[1]}<&-"

    def wait_ready(self, max_chars: int) -> None:
        """Block until the supervisor answers and the agent shell runs (raise with bwrap's message)."""
        if self.ready:
            return
        assert self.supervisor is not None
        collector = _Collector(max_chars, _marker("READY", self.token))
        state = self.supervisor.exchange(b"", collector, time.monotonic() + _START_TIMEOUT_S)
        if state != "match":
            text, _ = collector.text(max_chars)
            raise RuntimeError(f"the sandbox did not start ({state}): {text.strip()}")
        self.spawn_shell()
        self.ready = True

    def supervisor_call(self, body: str, timeout_s: float, max_chars: int) -> tuple[str, _Collector]:
        """Run shell text in the supervisor; the answer's number is ``$?`` unless body prints its own."""
        assert self.supervisor is not None
        nonce = secrets.token_hex(16)
        collector = _Collector(max_chars, _marker("DONE", nonce))
        text = f"{body}\nbuiltin printf '\\n__CMAT_DONE_{nonce}_%d__\\n' \"$?\"\n"
        deadline = time.monotonic() + timeout_s
        state = self.supervisor.exchange(text.encode("utf-8", "replace"), collector, deadline)
        return state, collector

    def spawn_shell(self) -> None:
        """Start a fresh agent shell (the first, or after ``exit``) and learn its host pids."""
        assert self.supervisor is not None and self.agent is not None
        spawn = "__cmat_shell; builtin printf '%d' \"$!\""
        state, collector = self.supervisor_call(spawn, _START_TIMEOUT_S, 4096)
        wrapper_ns = int(bytes(collector.out) or b"0") if state == "match" else 0
        nonce = secrets.token_hex(16)
        probe = _Collector(4096, _marker("DONE", nonce))
        self.agent.pending = b""  # whatever a dead shell left behind is not the new shell's output
        line = f"builtin printf '\\n__CMAT_DONE_{nonce}_%d__\\n' \"$$\"\n".encode()
        state = self.agent.exchange(line, probe, time.monotonic() + _START_TIMEOUT_S)
        if state != "match" or probe.match is None or not wrapper_ns:
            raise RuntimeError(f"the agent shell did not start ({state})")
        hosts = self._host_pids({wrapper_ns, int(probe.match.group(1))})
        self.wrapper_pid = hosts.get(wrapper_ns, 0)
        self.shell_pid = hosts.get(int(probe.match.group(1)), 0)
        if self.shell_pidfd >= 0:
            os.close(self.shell_pidfd)
        self.shell_pidfd = os.pidfd_open(self.shell_pid)

    def _host_pids(self, ns_pids: set[int]) -> dict[int, int]:
        """Map pids as seen inside the sandbox to host pids (the last NSpid field is the inner one)."""
        found: dict[int, int] = {}
        for proc in self.walk(with_start=False):
            try:
                with open(f"/proc/{proc.pid}/status", "rb") as fh:
                    line = next(row for row in fh if row.startswith(b"NSpid:"))
            except (OSError, StopIteration):
                continue
            inner = int(line.split()[-1])
            if inner in ns_pids:
                found[inner] = proc.pid
        return found

    # ---------------------------------------------------------- processes
    def walk(self, with_start: bool = True) -> list[_Proc]:
        """Every process in the sandbox, found from the host by following /proc children links.

        Nothing inside can hide from this: processes cannot leave their PID namespace, and orphans
        are re-parented to the supervisor (pid 1), the root of the walk.
        """
        procs: list[_Proc] = []
        stack = [(self.init_pid, 0)]
        seen: set[int] = set()
        while stack:
            pid, parent = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            start = _start_ticks(pid) if with_start else 0
            if start is None:
                continue
            procs.append(_Proc(pid, start, parent))
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                        stack.extend((int(c), pid) for c in fh.read().split())
                except OSError:
                    continue
        return procs

    def scan(self) -> list[_Proc]:
        """Every process of the sandbox, by its host uid range: exact, but reads all of the host's /proc.

        The children-link walk can miss a process while it is being re-parented (a fork bomb does
        that all the time); a process's uid cannot be outside the range, whatever it does inside.
        """
        procs = []
        # bwrap's outer process runs as the range's first uid too, but outside: killing it would
        # take the whole sandbox down (--die-with-parent), so it is never part of the scan.
        outer = str(self.proc.pid) if self.proc is not None else ""
        for name in os.listdir("/proc"):
            if not name.isdigit() or name == outer:
                continue
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            if self.uid <= uid < self.uid + _UID_RANGE:
                start = _start_ticks(int(name))
                if start is not None:
                    procs.append(_Proc(int(name), start, 0))
        return procs

    def kill_where(self, doomed: Callable[[_Proc], bool], passes: int = 50) -> int:
        """SIGKILL the matching processes, repeating while new ones appear (fork bombs)."""
        total = 0
        for _ in range(passes):
            killed = sum(_kill_verified(p.pid, p.start) for p in self.scan() if doomed(p))
            total += killed
            if not killed:
                break
        return total

    def shell_dead(self) -> bool:
        """True when the agent shell has exited (its pidfd is readable)."""
        return self.shell_pidfd < 0 or bool(select.select([self.shell_pidfd], [], [], 0)[0])

    def kill_shell(self) -> None:
        """SIGKILL the agent shell (its wrapper then prints the exit marker)."""
        if self.shell_pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.shell_pidfd, signal.SIGKILL)

    def count(self) -> int:
        """How many processes the sandbox holds now."""
        return len(self.walk(with_start=False))

    def alive(self) -> bool:
        """True while bwrap (and so the sandbox) runs."""
        return self.proc is not None and self.proc.poll() is None

    # ---------------------------------------------------------- stop
    def kill(self) -> None:
        """Kill the whole sandbox: SIGKILL to pid 1 of its PID namespace takes every process with it."""
        if self.init_pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()

    def reap(self, block: bool) -> bool:
        """Collect bwrap's exit and release every fd; True when done (non-blocking if not ``block``)."""
        if self.proc is not None:
            if block:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self.proc.wait()
            elif self.proc.poll() is None:
                return False
        if self.init_pidfd >= 0:
            # pid 1 is released only after every process of its namespace is gone (the kernel waits).
            if block:
                select.select([self.init_pidfd], [], [], 5)
            elif not select.select([self.init_pidfd], [], [], 0)[0]:
                return False
            os.close(self.init_pidfd)
            self.init_pidfd = -1
        if self.shell_pidfd >= 0:
            os.close(self.shell_pidfd)
            self.shell_pidfd = -1
        for channel in (self.supervisor, self.agent):
            if channel is not None:
                channel.close()
        self.supervisor = self.agent = None
        return True


# ------------------------------------------------------------------ the public sandbox
class ShellSandbox:
    """A persistent bash inside a fresh bubblewrap sandbox per episode (see the module docstring).

    Args:
        timeout_s: default wall-clock limit of one ``run``/``run_script``.
        max_output_chars: output kept per command; the rest is drained and dropped.
        memory_mb: RLIMIT_AS of every process inside.
        max_processes: processes of the whole sandbox at most (kernel-enforced, any uid inside).
        cpu_time_s: RLIMIT_CPU of every process inside.
        max_file_mb: RLIMIT_FSIZE: the largest file a process may write.
        tmpfs_mb: size cap of each tmpfs (/root, /home, /tmp, /var, /run, /etc, /dev/shm).
        prewarm: build the next episode's sandbox in a background thread so ``reset()`` is quick.

    Not thread-safe: use one ``ShellSandbox`` per thread (each may run its own spare builder).
    """

    def __init__(self, *, timeout_s: float = 5.0, max_output_chars: int = 8000, memory_mb: int = 512,
                 max_processes: int = 256, cpu_time_s: int = 60, max_file_mb: int = 64,
                 tmpfs_mb: int = 256, prewarm: bool = True) -> None:
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.cpu_time_s = cpu_time_s
        self.max_file_mb = max_file_mb
        self.tmpfs_mb = tmpfs_mb
        self.prewarm = prewarm
        self._current: _Instance | None = None
        self._spare: Future[_Instance] | None = None
        self._builder: _SpareBuilder | None = None
        self._dying: list[_Instance] = []
        self._closed = False
        _LIVE.add(self)

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Build a fresh sandbox (killing any previous one)."""
        self.reset()

    def reset(self) -> None:
        """Replace the sandbox by a fresh one: no file, process, user or variable survives."""
        self._closed = False
        self._retire(self._current)
        self._current = None
        fresh = self._take_spare()
        if fresh is None:
            fresh = _build(self._limits())
        self._current = fresh
        if self.prewarm:
            # The next episode's sandbox is built while this one runs. It shares nothing with the
            # current one (own namespaces, uid range, tmpfs), so nothing can carry over.
            if self._builder is None:
                self._builder = _SpareBuilder()
            self._spare = self._builder.submit(self._limits())
        self._reap_dying(block=False)

    def close(self) -> None:
        """Kill every sandbox process and release every fd and thread (idempotent)."""
        self._closed = True
        self._retire(self._take_spare())
        self._retire(self._current)
        self._current = None
        self._reap_dying(block=True)
        if self._builder is not None:
            self._builder.stop()
            self._builder = None

    def _limits(self) -> _Limits:
        return _Limits(self.memory_mb, self.max_processes, self.cpu_time_s, self.max_file_mb, self.tmpfs_mb,
                       self.max_output_chars)

    def _take_spare(self) -> _Instance | None:
        if self._spare is None:
            return None
        future, self._spare = self._spare, None
        try:
            inst = future.result()
        except Exception:  # a broken spare is not worth failing the episode for: reset() builds anew
            return None
        if not inst.alive():
            self._retire(inst)
            return None
        return inst

    def __enter__(self) -> ShellSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # During interpreter shutdown the spare builder (a daemon thread) is frozen, so close() could
        # wait on it forever; the atexit hook (_close_all) has closed every sandbox by then.
        if sys.is_finalizing():
            return
        with contextlib.suppress(Exception):
            self.close()

    @property
    def started(self) -> bool:
        """True while a sandbox is running."""
        return self._current is not None

    def _retire(self, inst: _Instance | None) -> None:
        if inst is not None:
            inst.kill()
            self._dying.append(inst)

    def _reap_dying(self, block: bool) -> None:
        self._dying = [inst for inst in self._dying if not inst.reap(block)]

    def _instance(self) -> _Instance:
        if self._closed:
            raise RuntimeError("Expects an open sandbox, actual: closed (call start() or reset())")
        if self._current is None:
            self.reset()
        assert self._current is not None
        return self._current

    def _rebuild(self, notes: list[str], why: str) -> None:
        self.reset()
        notes.append(f"[{why}: the sandbox was rebuilt and all state was lost]")

    # ---------------------------------------------------------- commands
    def run(self, command: str, timeout_s: float | None = None) -> CommandResult:
        """Run one command in the persistent shell (cwd and variables persist; stdin is /dev/null)."""
        inst = self._instance()
        if self._dying:
            self._reap_dying(block=False)  # bwrap of earlier episodes: zombies until collected
        timeout = self.timeout_s if timeout_s is None else timeout_s
        notes = self._relieve_process_limit(inst)
        if inst.shell_dead():  # killed between commands (by one of the agent's own background jobs)
            assert inst.agent is not None
            inst.agent.discard_output()
            self._new_shell(inst, notes, "the shell had been killed")
            inst = self._instance()
        nonce = secrets.token_hex(16)
        # NUL cannot travel through a shell's input (a terminal cannot send one either): dropped.
        line = (f"eval -- {shlex.quote(command.replace(chr(0), ''))} </dev/null; "
                f"builtin printf '\\n__CMAT_DONE_{nonce}_%d__\\n' \"$?\"\n")
        pattern = re.compile(rb"\n__CMAT_(DONE_" + nonce.encode() + rb"|EXIT_" + inst.token.encode()
                             + rb")_(-?\d+)__\n")
        collector = _Collector(self.max_output_chars * 4, pattern)
        t0 = _now_ticks()
        assert inst.agent is not None
        data = line.encode("utf-8", "replace")  # lone surrogates must not crash the caller
        state = inst.agent.exchange(data, collector, time.monotonic() + timeout, inst.shell_pidfd)
        timed_out = state == "timeout"
        if timed_out:
            notes.append(f"[command timed out after {timeout:g} s and was killed]")
            state = self._stop_command(inst, collector, t0)
        exit_code: int | None = None
        if state == "match" and collector.match is not None:
            code = int(collector.match.group(2))
            exit_code = None if timed_out else code
            if collector.match.group(1).startswith(b"EXIT"):
                why = "the shell did not answer" if timed_out else f"the shell exited with code {code}"
                self._new_shell(inst, notes, why)
        elif state == "died":
            self._new_shell(inst, notes, "the shell was killed")
        else:  # eof: the supervisor, and so the sandbox, is gone
            self._rebuild(notes, "the sandbox died")
        return self._result(collector, exit_code, timed_out, notes)

    def _stop_command(self, inst: _Instance, collector: _Collector, t0: int) -> str:
        """Kill a timed-out command; if its shell still does not answer, kill the shell too."""
        assert inst.agent is not None
        if inst.kill_where(lambda p: p.start >= t0 and p.pid not in inst.protected):
            state = inst.agent.exchange(b"", collector, time.monotonic() + _GRACE_S, inst.shell_pidfd)
            if state != "timeout":
                return state
        # No answer: the shell itself is busy (a builtin loop, `exec sleep`, a closed stdout).
        inst.kill_shell()
        state = inst.agent.exchange(b"", collector, time.monotonic() + _GRACE_S, inst.shell_pidfd)
        return "died" if state == "timeout" else state

    def _new_shell(self, inst: _Instance, notes: list[str], why: str) -> None:
        notes += self._relieve_process_limit(inst)
        try:
            inst.spawn_shell()
        except (OSError, RuntimeError):
            self._rebuild(notes, f"{why} and no new shell started")
            return
        notes.append(f"[{why}; a new shell was started: working directory and variables were reset, "
                     "files were kept]")

    def _relieve_process_limit(self, inst: _Instance) -> list[str]:
        """At the process limit nothing can fork, not even our next command: kill all but the shells."""
        # The cheap walk first; it can miss processes being re-parented, so confirm with the exact scan.
        # Half, not the limit itself: a bomb's processes keep dying and re-forking, and on a loaded
        # host it may still be growing when the next command comes. Real tasks stay far below.
        threshold = self.max_processes // 2
        if inst.count() < threshold // 2 or len(inst.scan()) < threshold:
            return []
        inst.kill_where(lambda p: p.pid not in inst.protected)
        assert inst.agent is not None
        inst.agent.discard_output()
        return ["[the sandbox was at its process limit: every other process was killed and its pending "
                "output dropped]"]

    def _result(self, collector: _Collector, exit_code: int | None, timed_out: bool,
                notes: list[str]) -> CommandResult:
        text, truncated = collector.text(self.max_output_chars)
        if notes:
            text = (text + ("\n" if text and not text.endswith("\n") else "") + "\n".join(notes)).lstrip("\n")
        return CommandResult(text, exit_code, timed_out, truncated)

    def _supervised(self, body: str, timeout_s: float | None) -> CommandResult:
        """Run shell text in the trusted supervisor (never the agent's shell) with the same protocol."""
        inst = self._instance()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        notes = self._relieve_process_limit(inst)
        t0 = _now_ticks()
        state, collector = inst.supervisor_call(body, timeout, self.max_output_chars * 4)
        timed_out = state == "timeout"
        if timed_out:
            notes.append(f"[script timed out after {timeout:g} s and was killed]")
            inst.kill_where(lambda p: p.start >= t0 and p.pid not in inst.protected)
            assert inst.supervisor is not None
            state = inst.supervisor.exchange(b"", collector, time.monotonic() + _GRACE_S)
        if state == "match" and collector.match is not None:
            code = None if timed_out else int(collector.match.group(1))
            return self._result(collector, code, timed_out, notes)
        self._rebuild(notes, "the sandbox supervisor did not answer")
        return self._result(collector, None, timed_out, notes)

    def run_script(self, script: str, *, language: str = "bash", args: Sequence[str] = (),
                   stdin: str | None = None, timeout_s: float | None = None) -> CommandResult:
        """Run a script (bash or python) as its own process in the current sandbox, cwd /root.

        It does not go through the agent's shell, so nothing the agent did to that shell (functions,
        redirections, ``exit``) affects it. The script reaches the interpreter as ``/dev/fd/3`` (a
        here-document with an unguessable delimiter), so no file is left in the sandbox; ``stdin``
        is passed exactly (base64 in transit). stdout and stderr are merged.
        """
        interpreters = {"bash": "/usr/bin/bash", "sh": "/usr/bin/bash", "python": "/usr/bin/python3",
                        "python3": "/usr/bin/python3"}
        if language not in interpreters:
            raise ValueError(f"Expects language in {sorted(interpreters)}, actual: {language!r}")
        inst = self._instance()
        delim = f"CMAT_SCRIPT_{secrets.token_hex(16)}"
        quoted = " ".join(shlex.quote(a) for a in args)
        command = f"{interpreters[language]} /dev/fd/3 {quoted} 3<<'{delim}' 2>&1 {inst.hide_agent_pipes()}"
        if not script.endswith("\n"):
            script += "\n"
        if stdin is None:
            body = f"cd /root && {command} </dev/null\n{script}{delim}"
        else:
            feed = f"CMAT_STDIN_{secrets.token_hex(16)}"
            body = (f"cd /root && base64 -d <<'{feed}' | {command}\n{_b64_lines(stdin.encode())}"
                    f"{feed}\n{script}{delim}")
        return self._supervised(body.replace("\0", ""), timeout_s)

    def start_background(self, command: str) -> None:
        """Start ``command`` detached inside the sandbox (cwd /root, output discarded); do not wait."""
        inst = self._instance()
        body = (f"( cd /root && exec setsid bash --noprofile --norc -c {shlex.quote(command)} ) "
                f"</dev/null >/dev/null 2>&1 {inst.hide_agent_pipes()} &")
        result = self._supervised(body, None)
        if result.exit_code != 0:
            raise RuntimeError(f"could not start background command: {result.output}")

    def stop_agent_processes(self) -> None:
        """Kill every process of the episode but the supervisor, and start a fresh shell.

        Files stay. Call it before a check script whose result must not depend on what the agent's
        background processes might do while it runs (they are root inside and could interfere).
        """
        inst = self._instance()
        inst.kill_where(lambda p: p.pid != inst.init_pid)
        assert inst.agent is not None
        inst.agent.discard_output()
        notes: list[str] = []
        self._new_shell(inst, notes, "the agent's processes were stopped")

    # ---------------------------------------------------------- introspection (tests, scoring)
    def host_uid_range(self) -> range | None:
        """The host uids of the current sandbox: every process inside runs as one of them."""
        if self._current is None:
            return None
        return range(self._current.uid, self._current.uid + _UID_RANGE)

    def sandbox_pids(self) -> list[int]:
        """Host PIDs of every process in the current sandbox (empty when none runs)."""
        if self._current is None or not self._current.ready:
            return []
        return [p.pid for p in self._current.walk(with_start=False)]


def _b64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i:i + 76] + "\n" for i in range(0, len(encoded), 76))


def benchmark(episodes: int = 200) -> dict[str, float]:
    """Median milliseconds of ``reset()`` and of ``run`` round trips (the numbers in the docstring).

    Each episode is a reset then five ``ls -la | wc -l`` and one ``true``, so the warm spare has
    the time a (very short) episode gives it; ``cold_reset_ms`` is a reset without the spare.
    """
    resets: list[float] = []
    ls_wc: list[float] = []
    trues: list[float] = []

    def timed(into: list[float], fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        fn()
        into.append((time.perf_counter() - start) * 1000)

    with ShellSandbox() as sb:
        for _ in range(episodes):
            timed(resets, sb.reset)
            for _ in range(5):
                timed(ls_wc, lambda: sb.run("ls -la | wc -l"))
            timed(trues, lambda: sb.run("true"))
    cold: list[float] = []
    with ShellSandbox(prewarm=False) as sb:
        for _ in range(max(1, episodes // 4)):
            timed(cold, sb.reset)

    def median(xs: list[float]) -> float:
        return round(sorted(xs)[len(xs) // 2], 2)

    return {"reset_ms": median(resets), "cold_reset_ms": median(cold), "run_ls_wc_ms": median(ls_wc),
            "run_true_ms": median(trues)}


if __name__ == "__main__":
    print(benchmark())
