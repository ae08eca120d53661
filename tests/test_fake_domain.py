"""The domain kit's proof: a fake domain, defined and registered in this file alone, runs through every
generic path (the registry-wide suite, make_cmat, ``cmat-gym eval``/``list``, the AgentBench-style
table, the random agent, one tiny-model PPO iteration) without an edit anywhere else.

EchoEnv (Gymnasium's ``GenericTestEnv`` idea, for text agents): the task names a word; the tools are
``reverse(text)`` (returns the text reversed) and ``upper(text)`` (upper-cased); the answer tool
``submit(answer)`` ends the episode, correct when the answer is the word reversed and upper-cased.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import pettingzoo
import pytest
from env_suite import run_suite

from cmat_gym import cli
from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.core.actions import ANSWER, ActionError, Arg, CallProtocol, Grammar, ParsedAction, Tool
from cmat_gym.core.checking import Checker, DomainHooks, Turn, Verdict, parsed_or_parse
from cmat_gym.core.domain import Domain, get_domain, register_domain, unregister_domain
from cmat_gym.core.env import Evaluation, TextEnv
from cmat_gym.core.procedural import first_in_split, make_task_id, parse_task_id
from cmat_gym.core.task import Task
from cmat_gym.core.taskfile import read_records

WORDS = ("apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "forest", "rocket", "violet",
         "window", "garden", "silver", "planet", "marble", "pencil", "shadow", "anchor", "bridge")
ECHO_GRAMMAR = Grammar(
    tools=(
        Tool("reverse", (Arg("text", "string", "the text to reverse"),), "the text, reversed"),
        Tool("upper", (Arg("text", "string", "the text to upper-case"),), "the text, upper-cased"),
        Tool("submit", (Arg("answer", "string", "the final answer"),), "give the final answer", kind=ANSWER),
    ),
    protocols=(CallProtocol("Action"),),
)


class EchoEnv(TextEnv):
    """Transform a word with two text tools, then submit it (the domain kit's test domain)."""

    domain = "echo"
    grammar = ECHO_GRAMMAR
    default_max_rounds = 6

    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        def draw(rng: Any) -> str:
            return " ".join(rng.choice(WORDS) for _ in range(difficulty))

        phrase = first_in_split("echo", seed, split, difficulty, draw, lambda p: f"Reverse and upper-case '{p}'.")
        return Task("echo", make_task_id("echo", seed, split, difficulty), f"Reverse and upper-case '{phrase}'.",
                    "Tools: reverse(text), upper(text), submit(answer).", {"word": phrase}, split, difficulty)

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        return cls.generate_task(*parse_task_id("echo", task_id))

    @classmethod
    def load_tasks(cls, path: str) -> list[Task]:
        return [Task("echo", f"file/{i}", f"Reverse and upper-case '{r['word']}'.", "", {"word": r["word"]})
                for i, r in enumerate(read_records(path))]

    @classmethod
    def oracle_actions(cls, task: Task) -> list[str]:
        word = task.payload["word"]
        return [cls.grammar.call("reverse", word), cls.grammar.call("upper", text=word[::-1]),
                cls.grammar.answer([word[::-1].upper()])]

    def _setup(self, task: Task) -> None:
        self.calls = 0

    def _execute(self, action: ParsedAction) -> str:
        self.calls += 1
        text = action.args["text"]
        return text[::-1] if action.tool == "reverse" else text.upper()

    def _evaluate(self, answers: list[str]) -> Evaluation:
        success = answers == [self.task.payload["word"][::-1].upper()]
        return Evaluation(float(success), success, 0.0, {"answer": answers})


class EchoChecker(Checker):
    """Gold-free: rejects unparsable actions and a reverse() of a text the instruction never names."""

    name = "rule"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: Any = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        parsed = parsed_or_parse(action, env, parsed)
        if isinstance(parsed, ActionError):
            return Verdict(False, parsed.message, 0.0)
        if parsed.tool == "reverse" and parsed.args["text"] not in task.instruction:
            return Verdict(False, "reverse the text the task names", 0.1)
        return Verdict(True, "", 0.9)


class EchoHooks(DomainHooks):
    """The fake domain's rule checker; hindsight: the generic fallback."""

    def rule_checker(self) -> Checker:
        return EchoChecker()


ECHO = Domain(name="echo", title="Echo", env_class=EchoEnv, hooks=EchoHooks,
              user_reply="Please proceed with the word task.")


@pytest.fixture(scope="module", autouse=True)
def echo_domain() -> Iterator[Domain]:
    register_domain(ECHO)
    yield ECHO
    unregister_domain("echo")


# ---------------------------------------------------------------------------- the kit's contracts
def test_registration_fills_every_registry() -> None:
    assert get_domain("echo") is ECHO
    assert "cmat/Echo-v0" in gym.registry and "cmat/Echo-CMAT-v0" in gym.registry
    assert "cmat/Echo-v0" in pettingzoo.aec_registry and "cmat/Echo-v0" in pettingzoo.parallel_registry
    assert register_domain(ECHO) is ECHO  # the same record again: nothing happens
    with pytest.raises(ValueError, match="already registered"):
        register_domain(Domain(name="echo", title="Echo2", env_class=EchoEnv))


def test_a_record_must_match_its_env_class() -> None:
    with pytest.raises(ValueError, match="domain"):
        Domain(name="other", title="Other", env_class=EchoEnv)


def test_the_grammar_parses_writes_and_exports_every_tool() -> None:
    g = ECHO_GRAMMAR
    assert g.call("reverse", "abc") == "Action: reverse(abc)"
    for text in ("Action: reverse(abc)", "reverse(abc)", '{"tool": "reverse", "args": {"text": "abc"}}',
                 '{"name": "reverse", "arguments": "{\\"text\\": \\"abc\\"}"}',
                 '<tool_call>{"name": "reverse", "arguments": {"text": "abc"}}</tool_call>',
                 '{"role": "assistant", "tool_calls": [{"type": "function", "function": '
                 '{"name": "reverse", "arguments": "{\\"text\\": \\"abc\\"}"}}]}'):
        parsed = g.parse(text)
        assert isinstance(parsed, ParsedAction) and (parsed.tool, parsed.value) == ("reverse", "abc"), text
    assert g.parse("Action: submit(CBA)").value == ["CBA"]
    assert [s["function"]["name"] for s in g.tool_schemas()] == ["reverse", "upper", "submit"]
    assert g.tool_schemas()[0]["function"]["parameters"]["required"] == ["text"]
    assert "Unknown tool 'shout'" in g.parse('{"tool": "shout", "args": {}}').message


def test_the_fake_domain_passes_the_registry_wide_suite() -> None:
    run_suite(ECHO)


def test_make_cmat_uses_the_records_rule_checker_and_user_reply() -> None:
    env = make_cmat("cmat/Echo-v0", checker="rule")
    env.reset(seed=0)
    observation, *_ = env.step("Action: reverse(not in the task)")
    assert "rejected by the checker" in observation and "reverse the text the task names" in observation
    observation, *_ = env.step('{"tool": "ask_user", "args": {"question": "Why?"}}')
    assert observation == "User: Please proceed with the word task."
    assert env.unwrapped.grammar is ECHO_GRAMMAR and env.unwrapped.domain == "echo"
    env.close()


def test_cmat_gym_list_and_eval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["list"]) == 0
    assert "cmat/Echo-CMAT-v0" in capsys.readouterr().out
    assert cli.main(["eval", "--env", "cmat/Echo-v0", "--policy", "oracle", "--episodes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["success_rate"] == 1.0
    tasks = tmp_path / "echo.jsonl"
    tasks.write_text('{"word": "abc"}\n{"word": "xyz"}\n')
    assert cli.main(["eval", "--env", "cmat/Echo-v0", "--tasks", str(tasks), "--cmat", "--policy", "random",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and "cmat" in report


def test_agentbench_table_has_a_column_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "agentbench_table.py"
    spec = importlib.util.spec_from_file_location("agentbench_table_echo", script)
    table = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = table
    spec.loader.exec_module(table)
    assert table.main(["--policy", "oracle", "random", "--envs", "Echo", "--episodes", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Echo-v0 test (3)" in out


def test_one_tiny_model_ppo_iteration(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from algorithms import ppo_train

    ppo_train.main([
        "--env", "cmat/Echo-v0", "--model", "tiny-random", "--device", "cpu", "--iterations", "1",
        "--episodes-per-iteration", "2", "--max-turns", "2", "--max-new-tokens", "8", "--checker", "rule",
        "--checker-weight", "0.5", "--max-seq-len", "1024", "--minibatch-size", "2", "--micro-batch-size", "1",
        "--output-dir", str(tmp_path / "ppo"), "--no-progress"])
    metrics = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and metrics[-1]["iteration"] == 1 and metrics[-1]["episodes"] == 2
