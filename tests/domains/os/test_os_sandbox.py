"""The bubblewrap shell sandbox behind the OS tasks: the persistent-shell protocol and its lifecycle.

Every command here runs inside the sandbox; nothing is run on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from cmat_gym.domains.os import backend
from cmat_gym.domains.os.backend import CommandResult, ShellSandbox, is_available

pytestmark = pytest.mark.skipif(
    not is_available(), reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)"
)

FAST_TIMEOUT_S = 0.5


def descendants(pid: int | None = None) -> list[int]:
    """Host PIDs of every process below ``pid`` (this test process by default)."""
    found: list[int] = []
    stack = [os.getpid() if pid is None else pid]
    while stack:
        current = stack.pop()
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


@pytest.fixture(scope="module")
def shared() -> ShellSandbox:
    sb = ShellSandbox(timeout_s=5.0, max_output_chars=2000)
    sb.start()
    yield sb
    sb.close()


@pytest.fixture
def sb(shared: ShellSandbox) -> ShellSandbox:
    shared.reset()
    return shared


def ok(sb: ShellSandbox, command: str, **kw: float) -> str:
    result = sb.run(command, **kw)
    assert result.exit_code == 0 and not result.timed_out, (command, result)
    return result.output


# ------------------------------------------------------------------ the persistent shell
def test_fresh_sandbox_environment(sb: ShellSandbox) -> None:
    assert ok(sb, "id -u; pwd; hostname") == "0\n/root\nsandbox\n"
    env = dict(line.split("=", 1) for line in ok(sb, "env").splitlines())
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert (env["HOME"], env["USER"], env["LANG"], env["TERM"]) == ("/root", "root", "C.UTF-8", "dumb")
    assert not set(env) & {"PYTEST_CURRENT_TEST", "VIRTUAL_ENV", "PYENV_ROOT"}
    assert ok(sb, "awk 'BEGIN { print 6 * 7 }'; python3 -c 'print(1 + 1)'") == "42\n2\n"


def test_cwd_and_variables_persist(sb: ShellSandbox) -> None:
    ok(sb, "cd /tmp && export A=1; B=two")
    ok(sb, "f() { echo fun $1; }")
    assert ok(sb, "pwd; echo $A $B; f x") == "/tmp\n1 two\nfun x\n"


def test_exit_codes(sb: ShellSandbox) -> None:
    assert sb.run("true").exit_code == 0
    assert sb.run("false").exit_code == 1
    assert sb.run("(exit 7)").exit_code == 7
    assert sb.run("no-such-command-xyz").exit_code == 127
    syntax = sb.run("echo 'unterminated")  # a syntax error must not swallow the sentinel
    assert syntax.exit_code == 2 and "unexpected EOF" in syntax.output
    assert ok(sb, "echo still here") == "still here\n"
    assert sb.run("echo -n no-newline").output == "no-newline"
    multi = sb.run("cat <<'EOF'\nline 1\nline 2\nEOF")
    assert multi.output == "line 1\nline 2\n" and multi.exit_code == 0


def test_sentinel_spoofing_is_harmless(sb: ShellSandbox) -> None:
    fake = ("printf '\\n__CMAT_DONE_%s_0__\\n' 0123456789abcdef0123456789abcdef; "
            "printf '\\n__CMAT_EXIT_%s_3__\\n' 0123456789abcdef0123456789abcdef; "
            "echo '__CMAT_READY_x_0__'; echo after; exit_code_is() { :; }; (exit 5)")
    result = sb.run(fake)
    assert result.exit_code == 5
    assert result.output.count("__CMAT_") == 3 and result.output.endswith("after\n")
    assert ok(sb, "echo next") == "next\n"


def test_stdin_reading_commands_return_at_once(sb: ShellSandbox) -> None:
    started = time.monotonic()
    assert sb.run("cat").output == ""
    assert ok(sb, "read x; echo \"[$x]\"") == "[]\n"
    assert ok(sb, "python3 -c 'import sys; print(len(sys.stdin.read()))'") == "0\n"
    assert ok(sb, "head -c 10 | wc -c") == "0\n"
    assert time.monotonic() - started < 3.0


def test_timeout_kills_command_and_keeps_shell(sb: ShellSandbox) -> None:
    ok(sb, "cd /var/tmp; X=kept")
    started = time.monotonic()
    result = sb.run("sleep 100", timeout_s=FAST_TIMEOUT_S)
    assert result.timed_out and result.exit_code is None
    assert "timed out" in result.output
    assert time.monotonic() - started < 3.0
    assert ok(sb, "pwd; echo $X") == "/var/tmp\nkept\n"
    assert "sleep" not in ok(sb, "ps -eo comm")


def test_timeout_of_a_builtin_loop_restarts_the_shell(sb: ShellSandbox) -> None:
    ok(sb, "echo data > /root/kept.txt; cd /tmp; X=1")
    result = sb.run("while :; do :; done", timeout_s=FAST_TIMEOUT_S)
    assert result.timed_out and result.exit_code is None
    assert "new shell" in result.output
    assert ok(sb, "cat /root/kept.txt; pwd; echo \"[$X]\"") == "data\n/root\n[]\n"


def test_exit_restarts_the_shell(sb: ShellSandbox) -> None:
    ok(sb, "touch /root/file; cd /tmp")
    result = sb.run("exit 3")
    assert result.exit_code == 3 and not result.timed_out
    assert "exited with code 3" in result.output
    assert ok(sb, "ls /root; pwd") == "file\n/root\n"
    assert sb.run("exec true").exit_code == 0  # exec replaces the shell: reported like an exit
    assert ok(sb, "echo alive") == "alive\n"


def test_shell_killed_between_commands_is_replaced_at_once(sb: ShellSandbox) -> None:
    ok(sb, "touch /root/kept; (sleep 0.1; kill -9 $$) >/dev/null 2>&1 &")
    time.sleep(0.5)
    started = time.monotonic()
    result = sb.run("ls /root")
    assert result.exit_code == 0 and result.output.startswith("kept\n") and "new shell" in result.output
    assert time.monotonic() - started < 1.0


def test_huge_output_is_truncated_with_bounded_memory(sb: ShellSandbox) -> None:
    tracemalloc.start()
    try:
        result = sb.run("yes | head -c 50000000; echo done >&2", timeout_s=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0 and result.truncated and not result.timed_out
    assert result.output.endswith("[... output truncated ...]")
    assert len(result.output) <= sb.max_output_chars + 100
    assert peak < 8 << 20, f"peak Python memory {peak} bytes while draining 50 MB"


def test_endless_output_times_out_truncated(sb: ShellSandbox) -> None:
    result = sb.run("cat /dev/zero", timeout_s=FAST_TIMEOUT_S)
    assert result.timed_out and result.truncated and result.exit_code is None
    assert ok(sb, "echo fine") == "fine\n"


def test_invalid_utf8_is_replaced(sb: ShellSandbox) -> None:
    result = sb.run("printf 'a\\xff\\xfeb\\x80\\n'; head -c 300 /dev/urandom >/dev/null")
    assert result.exit_code == 0
    assert result.output == "a\ufffd\ufffdb\ufffd\n"


def test_background_job_visible_then_gone_after_reset(sb: ShellSandbox) -> None:
    out = ok(sb, "sleep 300 & jobs; ps -eo comm")
    assert "Running" in out and "sleep" in out
    assert "sleep 300" in ok(sb, "jobs")
    host_pids = sb.sandbox_pids()
    assert len(host_pids) >= 4  # supervisor, wrapper, shell, sleep
    sb.reset()
    # SIGKILLed at reset; the kernel tears the old namespace down within milliseconds
    deadline = time.monotonic() + 3
    while set(host_pids) & set(descendants()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(host_pids) & set(descendants())
    assert "sleep" not in ok(sb, "ps -eo comm")


def test_reset_isolation(sb: ShellSandbox) -> None:
    ok(sb, "echo x > /root/r; echo y > /tmp/t; mkdir -p /home/h /var/log/app /run/x; export EPISODE=1")
    ok(sb, "useradd -m bob && chmod 600 /root/r && chown bob /tmp/t")
    assert sb.run("echo z > /usr/stock.log").exit_code != 0  # /usr is read-only here
    ok(sb, "sleep 500 >/dev/null 2>&1 &")
    sb.reset()
    assert ok(sb, "ls -A /root /tmp /home") == "/home:\n\n/root:\n\n/tmp:\n"
    assert sb.run("ls -d /var/log/app /run/x").exit_code == 2
    assert sb.run("grep bob /etc/passwd").exit_code == 1
    assert ok(sb, "echo \"[${EPISODE:-}]\"; ps -eo comm | grep -c sleep || true") == "[]\n0\n"


def test_useradd_su_chown_chmod(sb: ShellSandbox) -> None:
    assert ok(sb, "useradd -m -s /bin/bash u1 && su - u1 -c whoami") == "u1\n"
    out = ok(sb, "touch /tmp/f && chown u1:u1 /tmp/f && chmod 640 /tmp/f && stat -c '%U %G %a' /tmp/f")
    assert out == "u1 u1 640\n"
    assert ok(sb, "su u1 -c 'id -un; touch ~/mine && ls ~'") == "u1\nmine\n"
    # u1 is a real, distinct user: root's files are closed to it
    assert sb.run("chmod 700 /root; su u1 -c 'ls /root'").exit_code != 0


def test_run_script_bash_and_python(sb: ShellSandbox) -> None:
    ok(sb, "cd /tmp; printf() { echo hacked; }; echo() { :; }; exec 2>/dev/null")  # the agent's shell state
    bash = sb.run_script('echo "args=$#:$1:$2"; pwd; cat; echo err >&2; exit 4', args=["a b", "c"],
                         stdin="line1\nline2")
    assert bash == CommandResult("args=2:a b:c\n/root\nline1\nline2err\n", 4, False, False)
    py = sb.run_script("import sys\nprint(sys.argv[1:], repr(sys.stdin.read()))\nsys.exit(5)",
                       language="python", args=["x"], stdin="in\n")
    assert py.output == "['x'] 'in\\n'\n" and py.exit_code == 5
    assert sb.run_script("read -r x || echo eof").output == "eof\n"  # no stdin: /dev/null
    assert ok(sb, "pwd") == "/tmp\n"  # the agent's shell was not touched
    with pytest.raises(ValueError):
        sb.run_script("x", language="ruby")


def test_supervisor_holds_no_low_fds(sb: ShellSandbox) -> None:
    # Host fds keep their numbers inside; a pipe at 3-9 would collide with run_script's fd 3.
    fds = sorted(int(fd) for fd in ok(sb, "ls /proc/1/fd").split())
    assert fds[:3] == [0, 1, 2] and all(fd >= 10 for fd in fds[3:]), fds
    assert ok(sb, "ls /proc/self/fd").split() == ["0", "1", "2", "3"]  # 3: ls's own directory
    assert sb.run_script("cat /dev/fd/3 >/dev/null && echo fd3-ok").output == "fd3-ok\n"


def test_run_script_sees_the_episode_files_and_times_out(sb: ShellSandbox) -> None:
    ok(sb, "echo 42 > /root/answer")
    assert sb.run_script("cat /root/answer").output == "42\n"
    slow = sb.run_script("sleep 100", timeout_s=FAST_TIMEOUT_S)
    assert slow.timed_out and slow.exit_code is None
    assert sb.run_script("cat /root/answer").output == "42\n"  # the sandbox survived


def test_start_background(sb: ShellSandbox) -> None:
    sb.start_background("echo started > /tmp/bg.txt; exec sleep 321")
    deadline = time.monotonic() + 3
    while "started" not in sb.run("cat /tmp/bg.txt 2>/dev/null").output and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok(sb, "cat /tmp/bg.txt") == "started\n"
    assert "sleep 321" in ok(sb, "ps -eo args")
    assert ok(sb, "jobs") == ""  # not one of the agent shell's jobs


def test_close_is_idempotent_and_final() -> None:
    sb = ShellSandbox(prewarm=False)
    sb.start()
    assert sb.run("echo hi").output == "hi\n"
    sb.close()
    sb.close()
    with pytest.raises(RuntimeError, match="closed"):
        sb.run("echo again")
    sb.start()  # a closed sandbox may be started again
    assert sb.run("echo back").output == "back\n"
    sb.close()


def test_context_manager_and_lazy_start() -> None:
    with ShellSandbox(prewarm=False) as sb:
        assert sb.started
        assert sb.run("echo in").output == "in\n"
    assert not sb.started
    lazy = ShellSandbox(prewarm=False)
    try:
        assert lazy.run("echo lazy").output == "lazy\n"  # run() starts a sandbox on first use
    finally:
        lazy.close()


LEAK_PROBE = """
import json, os
from cmat_gym.domains.os.backend import ShellSandbox

def descendants():
    found, stack = [], [os.getpid()]
    while stack:
        pid = stack.pop()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                children = [int(c) for c in fh.read().split()]
            found += children
            stack += children
    return found

fds, procs = len(os.listdir("/proc/self/fd")), len(descendants())
for _ in range(30):
    sb = ShellSandbox()
    sb.start()
    sb.run("sleep 100 & echo x")
    sb.reset()
    sb.close()
print(json.dumps([fds, len(os.listdir("/proc/self/fd")), procs, len(descendants())]))
"""


def test_no_fd_or_process_leak_over_start_close_cycles() -> None:
    # In a fresh interpreter: other tests' sandboxes (and their spare builders) must not be counted.
    done = subprocess.run([sys.executable, "-c", LEAK_PROBE], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    fds_before, fds_after, procs_before, procs_after = json.loads(done.stdout)
    assert fds_after == fds_before
    assert procs_after == procs_before == 0


def test_limits_are_applied(sb: ShellSandbox) -> None:
    out = ok(sb, "ulimit -u; ulimit -v; ulimit -t; ulimit -f; ulimit -c")
    assert out.split() == ["256", str(512 << 10), "60", str(64 << 10), "0"]
    big = ok(sb, "head -c 70M /dev/zero > /tmp/big; echo $?; stat -c %s /tmp/big")
    assert big.split()[-2:] == ["153", str(64 << 20)]  # 128 + SIGXFSZ, cut at RLIMIT_FSIZE
    assert "/tmp" in ok(sb, "df -m /tmp | tail -1")


def test_reset_and_round_trip_are_fast(sb: ShellSandbox) -> None:
    resets, runs = [], []
    for _ in range(15):
        t = time.perf_counter()
        sb.reset()
        resets.append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter()
            sb.run("ls -la | wc -l")
            runs.append(time.perf_counter() - t)
    # generous bounds (shared CI cores); the measured medians are in the module docstring
    assert sorted(resets)[len(resets) // 2] < 0.25
    assert sorted(runs)[len(runs) // 2] < 0.05


def test_missing_bwrap_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_bwrap_path", lambda: None)
    backend._probe.cache_clear()
    try:
        assert not backend.is_available()
        with pytest.raises(RuntimeError, match="apt-get install -y bubblewrap"):
            backend.require_bwrap()
    finally:
        backend._probe.cache_clear()


def test_an_unclosed_sandbox_does_not_hang_interpreter_exit() -> None:
    # Regression: __del__ at shutdown waited on the spare builder, a daemon thread that is frozen then.
    script = ("from cmat_gym.domains.os.backend import ShellSandbox\n"
              "s = ShellSandbox(); s.reset(); print(s.run('echo alive').output)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alive" in done.stdout
