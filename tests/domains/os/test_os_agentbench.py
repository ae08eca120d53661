"""AgentBench os_interaction files: loading, AgentBench's grading rules, the bundled stand-in scripts,
and the oracle on the real dev file.

Every task script and check runs inside the bubblewrap sandbox (``ShellSandbox.run_script``), never on
the host, including the bundled checkers tested here.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import agentbench_path

from cmat_gym.core.task import Task
from cmat_gym.domains.os.agentbench import BUNDLED_SCRIPTS, PREAMBLE, load_os_interaction, script_dir_of
from cmat_gym.domains.os.backend import ShellSandbox, is_available
from cmat_gym.domains.os.env import GRAMMAR, OSEnv

pytestmark = pytest.mark.skipif(
    not is_available(), reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)"
)


def write_tasks(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def play(env: OSEnv, task: Task, actions: list[str]) -> dict[str, Any]:
    env.reset(options={"task": task})
    info: dict[str, Any] = {}
    for action in actions:
        *_, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return info


@pytest.fixture(scope="module")
def env() -> Iterator[OSEnv]:
    environment = OSEnv(tasks=[Task("os", "x", "x", "")])
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ShellSandbox]:
    with ShellSandbox(prewarm=False) as sb:
        yield sb


# ---------------------------------------------------------------------------- loading
def test_the_dev_file_loads_unchanged() -> None:
    path = agentbench_path("os_interaction", "dev.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every dev task is supported: no "unsupported" warning
        tasks = load_os_interaction(path)
    assert len(tasks) == 26
    assert [t.task_id for t in tasks[:2]] == ["agentbench-os/dev.json/0", "agentbench-os/dev.json/1"]
    records = json.loads(path.read_text())
    for task, record in zip(tasks, records, strict=True):
        assert (task.domain, task.instruction, task.context) == ("os", record["description"], PREAMBLE)
        assert task.payload["source"] == "agentbench" and not task.payload.get("unsupported"), task.payload
    calc = tasks[3].payload
    assert (
        calc["kind"] == "change"
        and calc["check"][0]["source"] == "bundled"
        and calc["check"][0]["file"] == "check/0.sh"
    )
    assert (
        tasks[0].payload["match"] == {"answer": "1", "strip": True}
        and tasks[0].payload["start"]["language"] == "bash"
    )
    assert (
        tasks[6].payload["check"][0] is None
        and tasks[6].payload["check"][1]["file"] == "check/integer-match.py"
    )
    assert tasks[10].payload["init"] == []  # its "create" is a list: no init, as in AgentBench
    assert tasks[21].payload["init"][0]["code"].startswith("echo 123>/root/.tmp")  # a bare-string init
    assert tasks[25].payload["init"][0]["file"] == "init/stock-log.sh"


def test_script_directories_follow_agentbenchs_layout(tmp_path: Path) -> None:
    root = tmp_path / "data" / "os_interaction"
    assert script_dir_of(root / "data" / "7" / "a.json") == (root / "scripts" / "7", "7")
    assert script_dir_of(root / "data" / "dev.json") == (root / "scripts" / "dev", "dev")
    assert script_dir_of(tmp_path / "mine.json") == (tmp_path / "scripts" / "mine", "mine")


def test_scripts_resolve_in_the_checkout_first_then_bundled(tmp_path: Path) -> None:
    root = tmp_path / "data" / "os_interaction"
    (root / "scripts" / "7" / "check").mkdir(parents=True)
    (root / "scripts" / "7" / "check" / "own.sh").write_text("exit 0\n")
    (root / "scripts" / "7" / "check" / "integer-match.py").write_text("# the checkout's own\n")
    path = write_tasks(
        root / "data" / "7" / "t.json",
        [
            {"description": "own", "evaluation": {"check": {"file": "check/own.sh"}}},
            {
                "description": "theirs",
                "evaluation": {
                    "check": [None, {"language": "python", "file": "check/integer-match.py"}],
                    "example": "echo 1",
                },
            },
            {
                "description": "bundled",
                "evaluation": {
                    "check": [None, {"language": "python", "file": "check/in.py"}],
                    "example": "echo 1",
                },
            },
        ],
    )
    own, theirs, bundled = load_os_interaction(path)
    assert own.payload["check"][0] == {
        "language": "bash",
        "code": "exit 0\n",
        "file": "check/own.sh",
        "source": "task",
    }
    assert theirs.payload["check"][1]["code"] == "# the checkout's own\n"
    assert bundled.payload["check"][1]["code"] == (BUNDLED_SCRIPTS / "check" / "in.py").read_text()


def test_unsupported_tasks_are_marked_and_listed_once(tmp_path: Path) -> None:
    path = write_tasks(
        tmp_path / "odd.json",
        [
            {"description": "missing file", "evaluation": {"check": {"file": "check/nowhere.sh"}}},
            {"description": "c code", "evaluation": {"check": {"language": "c", "code": "int main(){}"}}},
            {"description": "no example", "evaluation": {"check": [None, {"code": "exit 0"}]}},
            {
                "description": "missing program",
                "evaluation": {
                    "check": [None, {"code": "exit 0"}],
                    "example": "frobnicate-xyz --all | wc -l",
                },
            },
            {"description": "fine", "evaluation": {"match": "ok"}},
        ],
    )
    with pytest.warns(UserWarning, match="4 of 5 AgentBench OS tasks in odd.json are unsupported") as caught:
        tasks = load_os_interaction(path)
    assert len(caught) == 1
    reasons = [t.payload.get("unsupported", "") for t in tasks]
    assert "check/nowhere.sh" in reasons[0] and "'c' is not supported" in reasons[1]
    assert "no example" in reasons[2] and "`frobnicate-xyz`" in reasons[3] and reasons[4] == ""


def test_an_unsupported_task_is_never_scored_silently(tmp_path: Path, env: OSEnv) -> None:
    path = write_tasks(
        tmp_path / "u.json", [{"description": "x", "evaluation": {"check": {"file": "nope.sh"}}}]
    )
    with pytest.warns(UserWarning):
        (task,) = load_os_interaction(path)
    info = play(env, task, ["Act: finish"])
    assert info["score"] == 0.0 and "nope.sh" in info["evaluation"]["unsupported"]


def test_jsonl_and_a_single_object_load(tmp_path: Path) -> None:
    record = {"description": "d", "evaluation": {"match": "x"}}
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    (tmp_path / "b.json").write_text(json.dumps(record))
    assert len(load_os_interaction(tmp_path / "a.jsonl")) == 2
    assert len(load_os_interaction(tmp_path / "b.json")) == 1


# ---------------------------------------------------------------------------- AgentBench's rules
def test_match_rules(tmp_path: Path, env: OSEnv) -> None:
    path = write_tasks(
        tmp_path / "m.json",
        [
            {"description": "exact", "evaluation": {"match": "log"}},
            {"description": "regex", "evaluation": {"match": {"regex": r"^\d+ files?$", "strip": True}}},
            {"description": "no strip", "evaluation": {"match": {"answer": "a", "strip": False}}},
        ],
    )
    exact, regex, no_strip = load_os_interaction(path)
    assert play(env, exact, ["Act: answer(log)"])["success"]
    assert play(env, exact, ['Act: answer("log")'])["success"]  # quotes are dropped (a leniency)
    assert not play(env, exact, ["Act: answer(log.txt)"])["success"]
    assert not play(env, exact, ["Act: finish"])["success"]  # finish commits no answer
    assert play(env, regex, ["Act: answer(12 files)"])["success"]
    assert not play(env, regex, ["Act: answer(twelve files)"])["success"]
    assert play(env, no_strip, ["Act: answer(a)"])["success"]


def test_check_scripts_get_the_answer_and_the_earlier_outputs(tmp_path: Path, env: OSEnv) -> None:
    path = write_tasks(
        tmp_path / "c.json",
        [
            {
                "description": "How many lines?",
                "create": {"init": {"code": "seq 1 5 > /root/lines"}},
                "evaluation": {
                    "example": "wc -l < /root/lines",
                    "check": [
                        None,
                        {
                            "language": "python",
                            "code": "import sys\n"
                            "print('ok' if sys.argv[1].strip() == sys.argv[2].strip() else 'no')",
                        },
                        {"code": '[ "$(echo $3)" = ok ]'},
                    ],
                },
            }
        ],
    )
    (task,) = load_os_interaction(path)
    assert task.payload["kind"] == "question"
    assert play(env, task, ["Act: answer(5)"])["success"]
    info = play(env, task, ["Act: answer(6)"])
    assert not info["success"] and info["evaluation"]["failed_script"] == 2
    assert OSEnv.oracle_actions(task) == [GRAMMAR.call("bash", "wc -l < /root/lines"), "Act: answer(5)"]


def test_init_start_and_python_scripts(tmp_path: Path, env: OSEnv) -> None:
    path = write_tasks(
        tmp_path / "s.json",
        [
            {
                "description": "What does /root/out hold?",
                "create": {
                    "init": [
                        {"language": "python", "code": "open('/root/in', 'w').write('abc')"},
                        "cat /root/in > /root/copy",
                    ]
                },
                "start": "python3 -c 'import time\nwhile True:\n"
                '    open("/root/out", "w").write("tick")\n    time.sleep(0.2)\' &',
                "evaluation": {"match": "tick"},
            }
        ],
    )
    (task,) = load_os_interaction(path)
    env.reset(options={"task": task})
    observation = env.step("Act: bash\n```bash\nsleep 0.5; cat /root/copy; echo; cat /root/out\n```")[0]
    assert observation == "The output of the OS:\n\nabc\ntick"
    assert env.setup_errors == []


# ---------------------------------------------------------------------------- bundled stand-ins
CHECKS = [
    ("integer-match.py", "3", "3\n", 0),
    ("integer-match.py", " 12 ", "12", 0),
    ("integer-match.py", "3", "4", 1),
    ("integer-match.py", "three", "3", 1),
    ("integer-match.py", "None", "0", 1),
    ("string-match.py", "installed", "installed\n", 0),
    ("string-match.py", "Installed", "installed", 1),
    ("size-match.py", "4.0K", "4.0K\n", 0),
    ("size-match.py", "4K", "4.0K", 0),
    ("size-match.py", "4096", "4.0K", 0),
    ("size-match.py", "4 KB", "4.0K", 0),
    ("size-match.py", "1.5M", "1536K", 0),
    ("size-match.py", "2g", "2048M", 0),
    ("size-match.py", "12M", "12.0MiB", 0),
    ("size-match.py", "5K", "4.0K", 1),
    ("size-match.py", "big", "4.0K", 1),
    ("containing.py", "the answer is 42 files", "42\n", 0),
    ("containing.py", "41", "42", 1),
    ("in.py", "42", "there are 42 files\n", 0),
    ("in.py", "43", "there are 42 files", 1),
]


@pytest.mark.parametrize(("name", "answer", "expected", "status"), CHECKS)
def test_bundled_checkers(sandbox: ShellSandbox, name: str, answer: str, expected: str, status: int) -> None:
    code = (BUNDLED_SCRIPTS / "check" / name).read_text()
    result = sandbox.run_script(code, language="python", args=[answer, expected])
    assert result.exit_code == status, result


def test_the_calc_stand_ins(sandbox: ShellSandbox) -> None:
    sandbox.reset()
    check = (BUNDLED_SCRIPTS / "dev" / "check" / "0.sh").read_text()
    example = (BUNDLED_SCRIPTS / "dev" / "example" / "0.sh").read_text()
    assert sandbox.run_script(check, args=["None"]).exit_code == 1  # no calc yet
    sandbox.run_script(
        "mkdir -p /root/bin && printf '#!/bin/sh\\necho 6\\n' > /root/bin/calc && chmod +x /root/bin/calc"
    )
    assert sandbox.run_script(check, args=["None"]).exit_code == 1  # a calc that always prints 6
    sandbox.run_script("rm /root/bin/calc")
    assert sandbox.run_script(example).exit_code == 0
    result = sandbox.run_script(check, args=["None"])
    assert result.exit_code == 0, result
    calc = sandbox.run_script(
        "export PATH=/root/bin:$PATH; calc '2 * (9 / 3)'; calc 7 / 2; calc '__import__(\"os\")'"
    )
    assert calc.output.startswith("6\n3.5\ncalc: only numbers") and calc.exit_code == 1


def test_the_stock_log_stand_in(sandbox: ShellSandbox) -> None:
    sandbox.reset()
    code = (BUNDLED_SCRIPTS / "init" / "stock-log.sh").read_text()
    assert "Read-only file system" in sandbox.run_script(code).output  # /usr is read-only in this sandbox
    moved = code.replace("/usr/stock.log", "/tmp/stock.log")
    assert sandbox.run_script(moved).exit_code == 0
    first = sandbox.run_script(
        "md5sum < /tmp/stock.log; wc -l < /tmp/stock.log; "
        "grep -cvE '^(Alice|Bob) \\| (Purchase|Sell) \\| [0-9]+ \\| [0-9]+$' /tmp/stock.log"
    )
    sandbox.run_script(moved)
    again = sandbox.run_script("md5sum < /tmp/stock.log")
    digest, lines, bad = first.output.split("\n")[:3]
    assert (lines, bad) == ("400", "0") and again.output.split("\n")[0] == digest  # seeded: the same log


# ---------------------------------------------------------------------------- the oracle on the dev file
def test_the_oracle_passes_the_dev_file() -> None:
    path = agentbench_path("os_interaction", "dev.json")
    env = OSEnv(tasks=path)
    failures = {}
    for index in range(env.num_tasks):
        env.reset(options={"task_index": index})
        info = play(env, env.task, OSEnv.oracle_actions(env.task))
        if not info.get("success"):
            failures[index] = info.get("evaluation")
    env.close()
    # Known failure: task 25's init writes /usr/stock.log, and /usr is read-only in the sandbox.
    assert set(failures) <= {25}, failures
    assert 26 - len(failures) >= 25
