"""The OS rule checker: what it rejects (and with which fix), what it approves, its cost, and the hooks.

The checker parses commands with bash inside the sandbox; no command under review ever runs, on the
host or in the sandbox.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest

from cmat_gym.core.actions import ParsedAction
from cmat_gym.core.checking import public_task
from cmat_gym.core.task import Task
from cmat_gym.domains.os.backend import CommandResult, is_available
from cmat_gym.domains.os.checker import (
    OSHooks,
    OSRuleChecker,
    asks_question,
    program_names,
    simple_commands,
    static_problem,
)
from cmat_gym.domains.os.env import GRAMMAR, OSEnv

pytestmark = pytest.mark.skipif(
    not is_available(), reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)"
)

QUESTION = Task(
    "os",
    "os/handmade/q",
    "How many files are in /root/data?",
    "",
    {
        "source": "procedural",
        "family": "test",
        "kind": "question",
        "init": "mkdir -p /root/data",
        "start": None,
        "solution": [],
        "answer": "0",
        "check": None,
        "match": "integer",
    },
)
CHANGE = Task(
    "os",
    "os/handmade/c",
    "Create the directory /root/out.",
    "",
    {
        "source": "procedural",
        "family": "test",
        "kind": "change",
        "init": "",
        "start": None,
        "solution": [],
        "answer": None,
        "check": "[ -d /root/out ]",
        "match": "exact",
    },
)
ENV_TURN = [
    {"role": "assistant", "content": "Act: bash\n```bash\nls\n```"},
    {"role": "env", "content": "The output of the OS:\n\ndata\n"},
]


@pytest.fixture(scope="module")
def env() -> Iterator[OSEnv]:
    environment = OSEnv(tasks=[QUESTION])
    environment.reset(options={"task": QUESTION})
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def checker() -> OSRuleChecker:
    return OSHooks().rule_checker()


def review(
    checker: OSRuleChecker, env: OSEnv, command: str, task: Task = QUESTION, history: list | None = None
):
    return checker.review(public_task(task), history or [], GRAMMAR.call("bash", command), env)


# ---------------------------------------------------------------------------- rejections
REJECTED = [
    # destructive outside the working tree
    ("rm -rf /", "system directory /"),
    ("rm -rf /*", "system directory /*"),
    ("rm -r /usr", "/usr"),
    ("sudo rm -rf /etc/", "/etc/"),
    ("cd /tmp && rm -Rf /bin", "/bin"),
    ("rm -rf --no-preserve-root /lib", "/lib"),
    ("find / -name '*.log' -delete", "narrower directory"),
    ("mkfs.ext4 /dev/sda1", "format a disk"),
    ("dd if=/dev/zero of=/dev/sda bs=1M", "overwrite a device"),
    ("chmod -R 000 /", "change every file"),
    ("chown -R nobody /usr", "change every file"),
    (":(){ :|:& };:", "fork bomb"),
    ("bomb() { bomb | bomb & }; bomb", "fork bomb"),
    ("kill -9 -1", "kill every process"),
    ("shutdown -h now", "stop the machine"),
    ("reboot", "stop the machine"),
    ("poweroff", "stop the machine"),
    # endless without & or timeout
    ("yes", "| head -n 20"),
    ("yes > /root/y.txt", "| head -n 20"),
    ("tail -f /var/log/syslog", "timeout 5"),
    ("tail -n 5 -F /root/log", "timeout 5"),
    ("sleep 60", "time limit"),
    ("sleep 1m", "time limit"),
    ("while true; do date; done", "never ends"),
    ("while :; do echo x; sleep 1; done", "never ends"),
    ("watch ls", "run the command once"),
    ("top", "top -b -n 1"),
    ("top -b", "top -b -n 1"),
    ("ping 127.0.0.1", "-c 3"),
    ("nc -l 8080", "background"),
    ("python3 -m http.server 8000", "background"),
    # interactive
    ("vi /root/a.txt", "sed -i"),
    ("vim notes", "sed -i"),
    ("nano /etc/hosts", "sed -i"),
    ("less /etc/passwd", "cat"),
    ("cat /etc/passwd | more", "cat"),
    ("man ls", "cat"),
    ("read name", "redirect"),
    ("python3", "python3 -c"),
    ("bash", "bash -c"),
    ("su - jack", "su - USER -c"),
    ("passwd jack", "chpasswd"),
    ("ssh host", "interactive"),
    # bash cannot parse it
    ("echo (", "bash cannot parse the command: line 1: syntax error"),
    ("if true; then echo yes", "unexpected end of file"),
    ("echo 'unclosed", "bash cannot parse"),
    # missing programs
    ("frobnicate-xyz --all", "`frobnicate-xyz` is not installed"),
    ("sudo ls /root", "you are root already"),
    ("ls /root | frobnicate-xyz", "`frobnicate-xyz` is not installed"),
]


@pytest.mark.parametrize(("command", "feedback"), REJECTED, ids=[c for c, _ in REJECTED])
def test_rejections_name_the_fix(checker: OSRuleChecker, env: OSEnv, command: str, feedback: str) -> None:
    verdict = review(checker, env, command)
    assert not verdict.approve and feedback in verdict.feedback, verdict
    assert verdict.score is not None and verdict.score <= 0.1


APPROVED = [
    "ls -la /root",
    "ls /root/data | wc -l",
    "find /root -type f -name '*.txt' | head -n 20",
    "yes | head -n 3",
    "tail -n 20 /etc/passwd",
    "timeout 3 tail -f /root/log",
    "tail -f /root/log &",
    "sleep 2",
    "sleep 100 &",
    "while true; do echo x; break; done",
    "cat /etc/passwd | while read line; do echo ${line%%:*}; done",
    "while read l; do echo $l; done < /etc/hostname",
    "read a b <<< 'x y'; echo $a",
    "echo 'rm -rf /'",
    "rm -rf /root/data/tmp",
    "rm -rf ./build /tmp/x",
    "chmod -R 755 /root/data",
    "kill -9 1234",
    "kill -1 1234",
    "top -b -n 1 | head -n 5",
    "ps aux | head -n 5",
    "python3 -c 'print(6 * 7)'",
    "echo 1 | python3",
    "python3 - <<'EOF'\nprint('less is more')\nEOF",
    "cat > /root/a.txt <<'EOF'\nvi less more\nEOF",
    "su - jack -c whoami",
    "f() { echo hi; }; f",
    "arr=(one two); echo ${arr[1]}",
    "x=$(ls /root | wc -l); echo $x",
    "echo a # vi is not run",
    "useradd -m bob && id bob",
    "dd if=/dev/zero of=/root/zeros bs=1k count=1",
    '[ -x "$(command -v npm)" ] && echo installed || echo not-yet',
    "env A=1 printenv A",
]


@pytest.mark.parametrize("command", APPROVED)
def test_approvals(checker: OSRuleChecker, env: OSEnv, command: str) -> None:
    verdict = review(checker, env, command)
    assert verdict.approve, verdict
    assert verdict.score == 0.8


def test_a_reviewed_command_never_runs(checker: OSRuleChecker, env: OSEnv) -> None:
    env.reset(options={"task": QUESTION})
    assert review(checker, env, "touch /root/approved").approve
    assert not review(checker, env, "touch /root/rejected; echo (").approve
    assert env.sandbox.run("ls /root").output == "data\n"


def test_functions_and_programs_made_in_the_episode_are_known(checker: OSRuleChecker, env: OSEnv) -> None:
    env.reset(options={"task": QUESTION})
    assert not review(checker, env, "mytool-xyz").approve
    env.step(
        GRAMMAR.call(
            "bash",
            "mkdir -p /root/bin && printf '#!/bin/sh\\necho hi\\n' > /root/bin/mytool-xyz "
            "&& chmod +x /root/bin/mytool-xyz",
        )
    )
    assert review(checker, env, "mytool-xyz").approve
    history = [{"role": "assistant", "content": GRAMMAR.call("bash", "greet() { echo hello $1; }")}]
    assert review(checker, env, "greet you", history=history).approve


# ---------------------------------------------------------------------------- final actions
def test_answers_and_finish(checker: OSRuleChecker, env: OSEnv) -> None:
    question, change = public_task(QUESTION), public_task(CHANGE)
    early = checker.review(question, [], "Act: answer(0)", env)
    assert early.approve and early.score == 0.3 and "before any command" in early.feedback
    assert checker.review(question, ENV_TURN, "Act: answer(0)", env).score == 0.9
    finish = checker.review(question, ENV_TURN, "Act: finish", env)
    assert not finish.approve and "the task asks a question: answer(...)" in finish.feedback
    assert checker.review(change, ENV_TURN, "Act: finish", env).score == 0.9
    assert checker.review(change, [], "Act: finish", env).score == 0.3
    malformed = checker.review(question, [], "Act: bash", env)
    assert not malformed.approve and malformed.score == 0.0 and "malformed action" in malformed.feedback


@pytest.mark.parametrize(
    ("instruction", "question"),
    [
        ("How many hidden files are in /home?", True),
        ("What's the count of my CPUs?", True),
        ("Tell me whether npm is installed or not. If so, return 'installed'.", True),
        ("Find out count of users.", True),
        ("Which process writes to /root/archive/log?", True),
        ('I would like to implement the following function: entering the "calc" command ...', False),
        ("Create the directory /root/out.", False),
        ("Add the user frank to the group interns.", False),
        ("Write the names of the users that appear in /root/a.log to /root/users.txt.", False),
    ],
)
def test_question_or_change(instruction: str, question: bool) -> None:
    assert asks_question(instruction) is question


# ---------------------------------------------------------------------------- the shell reading
def test_simple_commands_read_pipes_backgrounds_and_wrappers() -> None:
    commands = simple_commands("cd /tmp && sudo rm -f a | tee b; timeout 3 tail -f c & x=$(cat d) 2>&1")
    assert [c.words for c in commands] == [
        ("cd", "/tmp"),
        ("rm", "-f", "a"),
        ("tee", "b"),
        ("tail", "-f", "c"),
        ("cat", "d"),
    ]
    assert commands[1].wrappers == ("sudo",) and commands[1].piped_out and commands[2].piped_in
    assert commands[3].background and commands[3].bounded
    assert program_names("cat <<EOF\nvi here\nEOF\nwc -l f # less") == ["cat", "wc"]
    assert static_problem("sleep 100 | cat &") is None and static_problem("sleep 100 | cat") is not None


# ---------------------------------------------------------------------------- cost
def test_reviews_are_cheap(checker: OSRuleChecker, env: OSEnv) -> None:
    commands = [f"ls -la /root/data | grep -c x{i}" for i in range(20)]
    first = []
    for command in commands:  # new texts: one sandbox round trip each
        start = time.perf_counter()
        review(checker, env, command)
        first.append(time.perf_counter() - start)
    again = []
    for command in commands:  # seen before: no sandbox call at all
        start = time.perf_counter()
        review(checker, env, command)
        again.append(time.perf_counter() - start)
    assert statistics.median(again) < 0.005
    assert statistics.median(first) < 0.1  # ~2 ms on an idle machine; loose for busy CI


# ---------------------------------------------------------------------------- hindsight hooks
def test_hooks(env: OSEnv) -> None:
    hooks = OSHooks()
    action = GRAMMAR.parse(GRAMMAR.call("bash", "ls"))
    assert isinstance(action, ParsedAction)
    env.last_result = CommandResult("x\n", 0)
    assert hooks.executed_ok(env, action, "The output of the OS:\n\nx\n", None) is True
    env.last_result = CommandResult("", 1)
    assert hooks.executed_ok(env, action, "The output of the OS is empty.\n[exit status 1]", None) is False
    env.last_result = CommandResult("partial", None, timed_out=True)
    assert hooks.executed_ok(env, action, "...", None) is False
    env.last_result = None
    assert hooks.executed_ok(env, action, "The output of the OS is empty.\n[exit status 2]", None) is False
    assert hooks.dry_run_ok(env, action) is None and hooks.dry_run_text(env, action) is None
