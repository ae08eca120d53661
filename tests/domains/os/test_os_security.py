"""Adversarial suite for the bubblewrap shell sandbox: each attack runs inside the sandbox only, must
leave the host untouched, and must leave the sandbox usable (or transparently rebuilt) afterwards.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmat_gym.domains.os.backend import ShellSandbox, is_available

pytestmark = pytest.mark.skipif(
    not is_available(), reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)"
)

MAX_PROCESSES = 64
# Set before any sandbox starts, so a leak of this process's environment would carry it.
SECRET = f"cmat-secret-{secrets.token_hex(8)}"
os.environ["CMAT_TEST_SECRET"] = SECRET


def host_processes_with(marker: str) -> list[int]:
    """Host PIDs whose command line contains ``marker`` (scans all of the host's /proc)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        pids.append(int(name))
            except OSError:
                continue
    return pids


def digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def shared() -> Iterator[ShellSandbox]:
    sb = ShellSandbox(timeout_s=5.0, max_output_chars=2000, max_processes=MAX_PROCESSES)
    sb.start()
    yield sb
    sb.close()


@pytest.fixture
def sb(shared: ShellSandbox) -> ShellSandbox:
    shared.reset()
    return shared


def assert_usable(sb: ShellSandbox) -> None:
    result = sb.run("echo usable; ls / | wc -l")
    assert result.exit_code == 0 and result.output.startswith("usable\n"), result


def test_host_files_are_invisible_and_unchanged(sb: ShellSandbox, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("host data\n")
    passwd, group = digest("/etc/passwd"), digest("/etc/group")
    attack = (f"cat {canary}; ls {tmp_path}; echo pwned > {canary}; rm -f {canary}; "
              "echo evil:x:0:0::/:/bin/sh >> /etc/passwd; echo evil:x:0: >> /etc/group; "
              "touch /usr/bin/cmat-x; mkdir -p /work/pwned; echo x > /work/main/pwned; "
              "cp /bin/bash /usr/local/bin/evil; ls /work /old_root /farm /mnt 2>&1; echo end")
    result = sb.run(attack)
    assert "host data" not in result.output and result.output.endswith("end\n")
    assert canary.read_text() == "host data\n"
    assert (digest("/etc/passwd"), digest("/etc/group")) == (passwd, group)
    assert not os.path.exists("/usr/bin/cmat-x") and not os.path.exists("/usr/local/bin/evil")
    assert not os.path.exists("/work/pwned") and not os.path.exists("/work/main/pwned")
    # the sandbox's own /etc copy did change, and stays private to it
    assert "evil" in sb.run("grep evil /etc/passwd").output
    assert_usable(sb)


def test_host_secrets_are_unreadable(sb: ShellSandbox) -> None:
    out = sb.run("ls -A /root /home; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                 "ls /work /sys 2>&1; ps -e | wc -l; cat /etc/shadow | cut -d: -f2 | sort -u").output
    assert "main" not in out and ".bashrc" not in out
    assert "bash --noprofile --norc" in out  # pid 1 is the sandbox's own supervisor, not the host's init
    assert "No such file or directory" in out
    hashes = out.strip().splitlines()[-3:]
    assert all(not h.startswith("$") for h in hashes), "host password hashes leaked"
    assert "secret" not in sb.run("cat /etc/pip.conf /etc/gitconfig 2>&1; echo").output.lower()


def test_this_process_environment_is_invisible(sb: ShellSandbox) -> None:
    assert os.environ["CMAT_TEST_SECRET"] == SECRET
    # A regular expression that matches the secret but not its own text, so grep never finds itself.
    pattern = "cmat-secret-[0-9a-f]{16}"
    out = sb.run(f"grep -a -E -r -l '{pattern}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; "
                 f"env | grep -c -E '{pattern}'; echo end").output
    assert out.split() == ["0", "end"]
    checker = sb.run_script(f"grep -a -E -r -l '{pattern}' /proc/[0-9]*/environ; "
                            f"env | grep -c -E '{pattern}'")
    assert checker.output.split() == ["0"]


def test_no_network_to_the_host(sb: ShellSandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                 "    print('connected')\nexcept OSError as e:\n    print('refused', type(e).__name__)")
        result = sb.run(f"python3 -c \"{probe}\"")
        assert "refused" in result.output and "connected" not in result.output
        assert sb.run_script(probe, language="python").output.startswith("refused")
        server.settimeout(0.05)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    links = sb.run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '").output.split()
    assert links == ["lo"]
    outside = "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)\""
    assert sb.run(outside).exit_code != 0


def processes_of(uids: range) -> int:
    """How many host processes run under one of ``uids`` (a sandbox's range)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid in uids
            except OSError:
                continue
    return count


def test_fork_bomb_is_contained(sb: ShellSandbox) -> None:
    uids = sb.host_uid_range()
    assert uids is not None
    sb.run("touch /root/before-the-bomb")
    result = sb.run(":(){ :|:& };:", timeout_s=2)
    assert result.exit_code is not None or result.timed_out
    # The bomb runs in the background: watch it from the host while it grows to the limit.
    peak, deadline = 0, time.monotonic() + 5
    while peak < MAX_PROCESSES // 2 and time.monotonic() < deadline:
        peak = max(peak, processes_of(uids))
        time.sleep(0.01)
    for _ in range(20):
        peak = max(peak, processes_of(uids))
        time.sleep(0.01)
    assert MAX_PROCESSES // 2 <= peak <= MAX_PROCESSES + 1, peak  # + bwrap's outer process
    after = sb.run("echo usable; ls / | wc -l", timeout_s=10)
    assert "usable" in after.output and after.exit_code == 0
    assert "process limit" in after.output
    assert len(sb.sandbox_pids()) <= 4
    assert "before-the-bomb" in sb.run("ls /root").output  # contained, not rebuilt: files survived
    sb.reset()
    deadline = time.monotonic() + 5  # the old namespace's teardown is asynchronous
    while processes_of(uids) and time.monotonic() < deadline:
        time.sleep(0.02)
        sb.run("true")  # also collects the old bwrap's exit status (a zombie until then)
    assert processes_of(uids) == 0


def test_memory_bomb_is_killed(sb: ShellSandbox) -> None:
    result = sb.run("python3 -c 'x = bytearray(4 << 30); print(len(x))'")
    assert result.exit_code == 1 and "MemoryError" in result.output
    grow = "python3 -c 'import itertools\nchunks = []\nfor _ in itertools.count(): chunks.append(bytearray(10**7))'"
    result = sb.run(grow, timeout_s=10)
    assert result.exit_code == 1 and "MemoryError" in result.output
    assert_usable(sb)


def test_endless_output_and_sleep_time_out(sb: ShellSandbox) -> None:
    started = time.monotonic()
    flood = sb.run("yes pwned", timeout_s=0.5)
    assert flood.timed_out and flood.truncated and len(flood.output) < 2200
    sleeper = sb.run("sleep 1000", timeout_s=0.5)
    assert sleeper.timed_out and sleeper.exit_code is None
    assert time.monotonic() - started < 6
    assert_usable(sb)


def test_background_processes_die_with_the_sandbox() -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(1000)}"
    sb = ShellSandbox(prewarm=False)
    sb.start()
    try:
        sb.run(f"nohup sleep {marker} >/dev/null 2>&1 & setsid sleep {marker} & "
               f"(sleep {marker} &) ; disown -a; echo ok")
        sb.start_background(f"sleep {marker}")
        deadline = time.monotonic() + 3
        while len(host_processes_with(marker)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)  # a forked child shows its command line only once it has exec'd
        assert len(host_processes_with(marker)) == 4, sb.run("ps -eo pid,ppid,args").output
        for pid in host_processes_with(marker):
            assert os.stat(f"/proc/{pid}").st_uid >= 1 << 30  # a dedicated, unprivileged host uid
    finally:
        sb.close()
    assert host_processes_with(marker) == []


def test_mount_unshare_chroot_stay_inside(sb: ShellSandbox) -> None:
    mounts = digest("/proc/self/mountinfo")
    out = sb.run("mount -t tmpfs none /tmp; echo mount=$?; unshare -m true; echo unshare=$?; "
                 "chroot / true; echo chroot=$?; mount -o remount,rw /usr; echo remount=$?; "
                 "unshare -r -m sh -c 'mount -t tmpfs none /usr && touch /usr/x && echo inner-ok'; "
                 "mknod /tmp/sda b 8 0; echo mknod=$?").output
    assert "mount=32" in out and "unshare=1" in out and "remount=32" in out and "chroot=0" in out
    assert "mknod=0" not in out or "sda" not in os.listdir("/tmp")
    assert digest("/proc/self/mountinfo") == mounts and not os.path.exists("/usr/x")
    assert_usable(sb)


def test_kill_all_inside_spares_the_host(sb: ShellSandbox) -> None:
    canary = subprocess.Popen(["sleep", "60"])
    try:
        result = sb.run(f"kill -9 -1; kill -9 {canary.pid} {os.getpid()} 1; pkill -9 sleep; echo done")
        assert result.output.endswith("done\n")
        time.sleep(0.1)
        assert canary.poll() is None, "a host process was killed from inside the sandbox"
        assert_usable(sb)
        assert sb.run_script("echo checker-ok").output == "checker-ok\n"
    finally:
        canary.kill()
        canary.wait()


def test_ptrace_and_proc_tricks_stay_inside(sb: ShellSandbox) -> None:
    out = sb.run("cat /proc/1/root/etc/hostname; ls /proc/1/root/ | head -3; "
                 "cat /proc/sys/kernel/hostname; cat /proc/self/uid_map").output
    assert "sandbox" in out
    outer_uid = int(out.split()[-2])
    assert outer_uid >= 1 << 30  # root inside is an unprivileged uid outside
    assert sb.run("echo 1 > /proc/sys/kernel/hostname").exit_code != 0
    assert socket.gethostname() != "sandbox"
    assert_usable(sb)


def test_checker_ignores_the_agent_shell_and_can_stop_its_processes(sb: ShellSandbox) -> None:
    # The agent poisons its own shell and leaves a process behind that rewrites the answer file.
    sb.run("printf() { echo 'fake'; }; cd /tmp; touch /tmp/.agent-was-here; exec 2>/dev/null")
    sb.run("echo right > /root/answer; (while :; do echo wrong > /root/answer; sleep 0.01; done) &")
    sb.stop_agent_processes()
    sb.run_script("echo right > /root/answer")
    time.sleep(0.05)
    assert sb.run_script("cat /root/answer; ps -eo comm | grep -c sleep").output == "right\n0\n"
    assert sb.run("pwd").output == "/root\n"  # a fresh shell...
    assert "right" in sb.run("cat /root/answer").output and sb.started  # ...in the same sandbox
    assert sb.run("ls /tmp/.agent-was-here").exit_code == 0
