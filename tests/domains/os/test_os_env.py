"""cmat/OS-v0: the episode loop, the action grammar, what the Assistant sees, and the oracle.

Every command and script here runs inside the bubblewrap sandbox; nothing runs on the host.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import pytest

from cmat_gym import cli
from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.core.actions import ActionError, ParsedAction
from cmat_gym.core.task import Task
from cmat_gym.domains.os import DOMAIN, random_shell_action
from cmat_gym.domains.os.backend import CommandResult, is_available
from cmat_gym.domains.os.env import GRAMMAR, TRUNCATION_NOTE, OSEnv, format_output

pytestmark = pytest.mark.skipif(
    not is_available(), reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)"
)


def task(
    instruction: str = "How many files are in /root/data?",
    *,
    kind: str = "question",
    init: str = "",
    answer: str | None = "3",
    check: str | None = None,
    match: str = "integer",
    solution: list[str] | None = None,
    **extra: Any,
) -> Task:
    """A hand-made task in the procedural payload format."""
    payload = {
        "source": "procedural",
        "family": "test",
        "kind": kind,
        "init": init,
        "start": None,
        "solution": solution or [],
        "answer": answer,
        "check": check,
        "match": match,
        **extra,
    }
    return Task("os", f"os/handmade/{instruction[:24]}", instruction, "You are root.", payload, "test", 1)


COUNT = task(
    init="mkdir -p /root/data && touch /root/data/a /root/data/b /root/data/c",
    solution=["ls /root/data | wc -l"],
)
CHANGE = task(
    "Create the file /root/done.txt.",
    kind="change",
    answer=None,
    check="[ -f /root/done.txt ]",
    solution=["touch /root/done.txt"],
)


def bash(command: str) -> str:
    return f"Act: bash\n\n```bash\n{command}\n```"


@pytest.fixture(scope="module")
def shared() -> Iterator[OSEnv]:
    env = OSEnv(tasks=[COUNT])
    yield env
    env.close()


@pytest.fixture
def env(shared: OSEnv) -> OSEnv:
    shared.reset(options={"task": COUNT})
    return shared


# ---------------------------------------------------------------------------- the episode
def test_reset_step_and_a_correct_answer(env: OSEnv) -> None:
    assert env.trajectory[0]["content"].startswith("How many files are in /root/data?")
    observation, reward, terminated, truncated, info = env.step(bash("ls /root/data | wc -l"))
    assert observation == "The output of the OS:\n\n3\n"
    assert (reward, terminated, truncated, info["error"]) == (0.0, False, False, None)
    assert info["parsed_action"]["tool"] == "bash"
    observation, reward, terminated, truncated, info = env.step("Think: three files.\n\nAct: answer(3)")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    assert observation == "Final answer received (correct). Score: 1."


def test_wrong_answer_and_finish_on_a_question_score_zero(env: OSEnv) -> None:
    assert env.step("Act: answer(4)")[1] == 0.0
    env.reset(options={"task": COUNT})
    *_, info = env.step("Act: finish")
    assert info["score"] == 0.0 and info["evaluation"]["answer"] is None
    assert "finish gives no answer" in info["evaluation"]["reason"]


def test_a_change_task_is_graded_by_its_check(env: OSEnv) -> None:
    env.reset(options={"task": CHANGE})
    assert env.step("Act: finish")[1] == 0.0  # nothing done yet
    env.reset(options={"task": CHANGE})
    env.step(bash("touch /root/done.txt"))
    observation, reward, terminated, *_ = env.step("Act: finish")
    assert (reward, terminated) == (1.0, True)


def test_truncation_after_eight_rounds_and_the_max_rounds_override() -> None:
    assert OSEnv.default_max_rounds == 8 and DOMAIN.max_rounds == 8
    for rounds in (None, 12):
        kwargs = {} if rounds is None else {"max_rounds": rounds}
        env = gym.make("cmat/OS-v0", tasks=[COUNT], **kwargs)
        env.reset(seed=0)
        limit = rounds or 8
        assert env.unwrapped.max_rounds == limit
        for i in range(limit):
            _, _, terminated, truncated, _ = env.step(bash("true") if i % 2 else "garbage, not an action")
            assert not terminated and truncated == (i == limit - 1)
        env.close()


def test_output_is_cut_at_800_characters_with_agentbenchs_marker(env: OSEnv) -> None:
    observation = env.step(bash("seq 1 1000"))[0]
    body = observation.removeprefix("The output of the OS:\n\n")
    assert body.endswith(TRUNCATION_NOTE) and len(body) == 780 + len(TRUNCATION_NOTE)
    assert body.startswith("1\n2\n3\n")
    observation = env.step(bash("printf 'x%.0s' $(seq 1 800)"))[0]  # exactly 800: shown whole
    assert observation == "The output of the OS:\n\n" + "x" * 800


def test_empty_output_exit_status_and_timeout_notes() -> None:
    env = OSEnv(tasks=[COUNT], command_timeout_s=0.5)
    env.reset(seed=0)
    assert env.step(bash("true"))[0] == "The output of the OS is empty."
    assert env.step(bash("false"))[0] == "The output of the OS is empty.\n[exit status 1]"
    observation = env.step(bash("ls /nonexistent"))[0]
    assert "No such file or directory" in observation and observation.endswith("[exit status 2]")
    observation = env.step(bash("echo start; sleep 3"))[0]
    assert observation.startswith("The output of the OS:\n\nstart\n") and "timed out" in observation
    assert env.last_result is not None and env.last_result.timed_out
    assert env.step(bash("echo alive"))[0] == "The output of the OS:\n\nalive\n"
    env.close()


def test_format_output_keeps_the_sandboxs_notes_after_the_marker() -> None:
    cut = CommandResult(
        "y" * 800 + "\n[... output truncated ...]\n[command timed out after 5 s and was killed]",
        None,
        timed_out=True,
        truncated=True,
    )
    observation = format_output(cut)
    assert observation.endswith(TRUNCATION_NOTE + "\n[command timed out after 5 s and was killed]")
    assert observation.count("timed out") == 1


def test_reset_isolates_episodes(env: OSEnv) -> None:
    env.step(
        bash("echo secret > /root/left.txt; echo x > /tmp/left; useradd mallory; export LEFT=1; cd /tmp")
    )
    env.reset(options={"task": COUNT})
    observation = env.step(bash('ls /root/left.txt /tmp/left; id mallory; echo "[$LEFT]"; pwd'))[0]
    assert observation.count("No such file") == 2 and "no such user" in observation
    assert "[]" in observation and "/root" in observation


def test_the_working_directory_persists_and_root_bin_is_on_the_path(env: OSEnv) -> None:
    env.step(
        bash("cd /root/data && mkdir -p /root/bin && printf '#!/bin/sh\\necho mine\\n' > /root/bin/mine")
    )
    env.step(bash("chmod +x /root/bin/mine"))
    assert env.step(bash("pwd; mine"))[0] == "The output of the OS:\n\n/root/data\nmine\n"


def test_init_failures_are_reported_and_the_episode_still_starts(env: OSEnv) -> None:
    broken = task(init="touch /root/data_made; exit 3", answer="1", solution=[])
    env.reset(options={"task": broken})
    assert env.step(bash("ls /root/data_made"))[0] == "The output of the OS:\n\n/root/data_made\n"
    *_, info = env.step("Act: answer(1)")
    assert info["success"] and "init" in info["evaluation"]["init_errors"][0]


def test_an_unsupported_task_scores_zero_and_says_why(env: OSEnv) -> None:
    unsupported = task(unsupported="needs `frobnicate`, not installed in the sandbox")
    env.reset(options={"task": unsupported})
    *_, info = env.step("Act: answer(3)")
    assert info["score"] == 0.0 and info["evaluation"] == {"unsupported": unsupported.payload["unsupported"]}
    assert OSEnv.oracle_actions(unsupported) == [GRAMMAR.call("finish")]


# ---------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "tool", "value"),
    [
        ("Act: bash\n\n```bash\nls\n```", "bash", "ls"),
        (
            "Think: list it.\n\nAct: bash\n\n```bash\nls -la /root\ncat /etc/hostname\n```",
            "bash",
            "ls -la /root\ncat /etc/hostname",
        ),
        ("Act: bash\n```sh\npwd\n```", "bash", "pwd"),
        ("Think: To count the files, I count the lines.\n\nAct: answer(220)", "answer", ["220"]),
        ("Act: answer(foo (bar))", "answer", ["foo (bar)"]),
        ("Act: finish", "finish", []),
        ("Think: done.\n\nAct: finish", "finish", []),
        ('{"tool": "bash", "args": {"command": "ls"}}', "bash", "ls"),
        ('{"name": "answer", "arguments": "{\\"answer\\": \\"42\\"}"}', "answer", ["42"]),
        ('<tool_call>{"name": "bash", "arguments": {"command": "whoami"}}</tool_call>', "bash", "whoami"),
        ('<tool_call>{"name": "finish", "arguments": {}}</tool_call>', "finish", []),
        (
            '{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "answer", '
            '"arguments": "{\\"answer\\": \\"7\\"}"}}]}',
            "answer",
            ["7"],
        ),
    ],
)
def test_every_action_form_parses(text: str, tool: str, value: Any) -> None:
    parsed = GRAMMAR.parse(text)
    assert isinstance(parsed, ParsedAction), parsed
    assert (parsed.tool, parsed.value) == (tool, value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello there",
        "Act: dance",
        "Act: bash",
        "Act: bash\n```bash\n```",
        "Act: answer(",
        "Act: answer()",
        '{"tool": "rm", "args": {}}',
    ],
)
def test_garbage_is_an_error_observation_that_runs_nothing(env: OSEnv, text: str) -> None:
    assert isinstance(GRAMMAR.parse(text), ActionError)
    observation, reward, terminated, truncated, info = env.step(text)
    assert observation.startswith("Error: ") and info["error"] == "parse_error"
    assert (reward, terminated) == (0.0, False) and env.last_result is None


def test_the_grammar_writes_agentbench_forms_and_exports_schemas() -> None:
    assert GRAMMAR.call("bash", "ls") == "Act: bash\n```bash\nls\n```"
    assert GRAMMAR.answer(["42"]) == "Act: answer(42)"
    assert GRAMMAR.parse(GRAMMAR.call("finish")).tool == "finish"
    assert [s["function"]["name"] for s in GRAMMAR.tool_schemas()] == ["bash", "answer", "finish"]
    assert "Act: bash" in GRAMMAR.help() and "Act: answer(220)" in GRAMMAR.help()


def test_random_actions_are_bash_calls() -> None:
    rng = random.Random(0)
    for _ in range(30):
        parsed = GRAMMAR.parse(random_shell_action(rng, ["/root/data", "a;b", "hello"], "first"))
        assert isinstance(parsed, ParsedAction) and parsed.tool == "bash"


# ---------------------------------------------------------------------------- oracles and the loop
@pytest.mark.parametrize("split", ["train", "test"])
def test_the_oracle_solves_procedural_tasks(split: str) -> None:
    env = OSEnv(split=split)
    for seed in range(4):
        env.reset(options={"task_index": seed})
        for action in OSEnv.oracle_actions(env.task):
            _, reward, terminated, truncated, info = env.step(action)
        assert terminated and reward == 1.0, (env.task.task_id, info)
    env.close()


def test_the_oracle_of_a_hand_made_task(env: OSEnv) -> None:
    actions = OSEnv.oracle_actions(COUNT)
    assert actions == [GRAMMAR.call("bash", "ls /root/data | wc -l"), "Act: answer(3)"]
    assert OSEnv.oracle_actions(CHANGE)[-1] == GRAMMAR.call("finish")


def test_make_cmat_with_the_rule_checker_and_the_oracle() -> None:
    env = make_cmat("cmat/OS-v0", checker="rule")
    for seed in range(3):
        env.reset(seed=seed)
        for action in OSEnv.oracle_actions(env.unwrapped.domain_env.task):
            observation, reward, terminated, truncated, info = env.step(action)
            assert "rejected" not in observation, observation
        assert terminated and info["success"], info
    env.close()


def test_hindsight_labels_a_failing_command() -> None:
    env = make_cmat("cmat/OS-v0", checker="rule", tasks=[COUNT])
    env.reset(seed=0)
    _, _, _, _, info = env.step(bash("ls /root/data/nope"))
    assert info["checker_verdict"] == "APPROVE" and info["hindsight"] is False
    _, _, _, _, info = env.step(bash("ls /root/data"))
    assert info["hindsight"] is True
    observation, _, _, _, info = env.step(bash("vi /root/data/a"))
    assert info["checker_verdict"] == "REJECT" and info["hindsight"] is None  # a shell has no dry run
    env.close()


def test_cmat_gym_eval_with_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--env", "cmat/OS-v0", "--policy", "oracle", "--episodes", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 3 and report["success_rate"] == 1.0
