"""The cmat-gym command: list, play, eval, and its errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import gymnasium as gym
import pytest

from cmat_gym import cli
from cmat_gym.domains.db.env import DBEnv


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_shows_db(capsys) -> None:
    status, out, _ = run_cli(capsys, "list")
    assert status == 0
    assert "cmat/DB-v0" in out and "SQLite" in out
    assert "None" not in out and "max 20 actions" in out  # the step limit comes from the record
    lines = out.splitlines()
    assert any(line.startswith("cmat/DB-CMAT-v0") and "gymnasium" in line for line in lines)
    assert any(line.startswith("cmat/DB-v0") and "pettingzoo" in line for line in lines)


def test_play_the_cmat_env(capsys, monkeypatch) -> None:
    # Regression: play on the CMAT wrapper crashed ('CMATEnv' object has no attribute 'grammar').
    task = DBEnv.generate_task(5, "train", 1)
    script = "".join(action + "\n\n" for action in DBEnv.oracle_actions(task))
    status, out = play_with(capsys, monkeypatch, script, "--env", "cmat/DB-CMAT-v0", "--task-index", "5",
                            "--difficulty", "1")
    assert status == 0 and "Episode finished: success=True" in out


def test_eval_max_rounds_holds_past_the_default_limit(capsys) -> None:
    # Regression: --max-rounds 40 stopped at 20 steps (the registration's TimeLimit won).
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "6", "--max-rounds", "40",
                             "--json", "--seed", "1")
    report = json.loads(out)
    assert status == 0 and max(r["steps"] for r in report["results"]) <= 40
    with_answer_prob_zero = cli.evaluation.run_episodes(
        cli.evaluation.env_factory("cmat/DB-CMAT-v0", max_rounds=40), JunkPolicy(), 1, 0, progress=False)
    assert with_answer_prob_zero[0].steps == 40 and with_answer_prob_zero[0].truncated


class JunkPolicy:
    """Never a valid action: every episode runs to its step limit."""

    def act(self, observations, slots=None):
        return ["not an action"] * len(observations)

    def reset(self, slots=None):
        pass


def test_one_model_name_everywhere() -> None:
    from cmat_gym.agents.models import SMOLLM2, resolve_model_name
    from cmat_gym.agents.policies import MODEL_POLICIES, POLICIES

    assert resolve_model_name("smollm2") == SMOLLM2 == resolve_model_name(SMOLLM2)
    assert {"smollm2", SMOLLM2} <= MODEL_POLICIES and POLICIES["smollm2"] == POLICIES[SMOLLM2]


def test_entry_point_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "cmat_gym.cli", "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "cmat/DB-v0" in done.stdout


def check_report(report: dict, env: str, policy: str, episodes: int) -> None:
    assert {"env", "policy", "episodes", "successes", "success_rate", "ci95", "results"} <= set(report)
    assert report["env"] == env and report["policy"] == policy and report["episodes"] == episodes
    assert len(report["results"]) == episodes
    for result in report["results"]:
        assert set(result) == {"task_id", "success", "score", "steps"}
        assert isinstance(result["success"], bool) and isinstance(result["steps"], int)
    assert report["successes"] == sum(r["success"] for r in report["results"])
    assert report["success_rate"] == pytest.approx(report["successes"] / episodes)
    low, high = report["ci95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0


def test_eval_json_oracle_procedural(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--env", "cmat/DB-v0", "--policy", "oracle", "--episodes", "5",
                             "--json", "--seed", "3", "--split", "test", "--difficulty", "2")
    assert status == 0
    report = json.loads(out)  # exactly one JSON object on stdout
    check_report(report, "cmat/DB-v0", "oracle", 5)
    assert report["success_rate"] == 1.0
    assert len({r["task_id"] for r in report["results"]}) == 5  # episode i uses seed+i: different tasks


def test_eval_json_is_reproducible(capsys) -> None:
    outputs = [run_cli(capsys, "eval", "--policy", "random", "--episodes", "4", "--json", "--seed", "9")[1]
               for _ in range(2)]
    assert outputs[0] == outputs[1]


def test_eval_json_oracle_agentbench(capsys, agentbench_db_path) -> None:
    status, out, _ = run_cli(capsys, "eval", "--tasks", str(agentbench_db_path), "--policy", "oracle", "--json")
    assert status == 0
    report = json.loads(out)
    check_report(report, "cmat/DB-v0", "oracle", 60)
    assert report["success_rate"] == 1.0
    assert [r["task_id"] for r in report["results"]] == [f"dbbench/dev.jsonl/{i}" for i in range(60)]


def test_eval_random_policy_mostly_fails(capsys, agentbench_db_path) -> None:
    for extra in ([], ["--tasks", str(agentbench_db_path)]):
        status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "30", "--json", *extra)
        assert status == 0
        report = json.loads(out)
        check_report(report, "cmat/DB-v0", "random", 30)
        assert report["success_rate"] < 0.5


def test_eval_text_summary(capsys) -> None:
    status, out, err = run_cli(capsys, "eval", "--policy", "oracle", "--episodes", "3")
    assert status == 0
    assert "success rate 1.000 (3/3)" in out and "95% CI" in out
    assert "episodes" in err  # the progress bar goes to stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--env", "cmat/Nope-v0"], "unknown env"),
        (["eval", "--env", "CartPole-v1"], "unknown env"),
        (["eval", "--tasks", "/no/such/file.jsonl"], "not found"),
        (["eval", "--policy", "nobody"], "Expects a policy in"),
        (["eval", "--episodes", "0"], "at least 1"),
        (["play", "--tasks", "/no/such/file.jsonl"], "not found"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(capsys, argv: list[str], message: str) -> None:
    status, out, err = run_cli(capsys, *argv)
    assert status != 0
    assert message in err and "Traceback" not in err


def test_bad_task_file_is_a_message(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    status, _, err = run_cli(capsys, "eval", "--tasks", str(bad))
    assert status == 2 and "cannot make" in err


def test_argparse_errors_exit_non_zero(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--difficulty", "7"])
    assert exc.value.code != 0


def play_with(capsys, monkeypatch, stdin: str, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status, out, _ = run_cli(capsys, "play", *argv)
    return status, out


def test_play_solves_a_task_from_scripted_stdin(capsys, monkeypatch) -> None:
    task = DBEnv.generate_task(5, "train", 1)
    script = "".join(action + "\n\n" for action in DBEnv.oracle_actions(task))
    status, out = play_with(capsys, monkeypatch, script, "--task-index", "5", "--difficulty", "1")
    assert status == 0
    assert task.instruction in out
    assert "Episode finished: success=True score=1" in out


def test_play_accepts_plain_sql_and_a_one_line_answer(capsys, monkeypatch) -> None:
    index = next(i for i in range(100)
                 if DBEnv.generate_task(i, "train", 1).payload["kind"] not in ("INSERT", "UPDATE", "DELETE"))
    task = DBEnv.generate_task(index, "train", 1)
    stdin = f"{task.payload['gold_sql'][0]}\n\nFinal Answer: {json.dumps(task.payload['label'])}\n"
    status, out = play_with(capsys, monkeypatch, stdin, "--task-index", str(index), "--difficulty", "1")
    assert status == 0
    assert "in set" in out  # the query ran and its result table was shown
    assert "success=True" in out


def test_play_a_file_task(capsys, monkeypatch, agentbench_db_path) -> None:
    task = DBEnv.load_tasks(str(agentbench_db_path))[3]
    script = "".join(action + "\n\n" for action in DBEnv.oracle_actions(task))
    status, out = play_with(capsys, monkeypatch, script, "--tasks", str(agentbench_db_path), "--task-index", "3")
    assert status == 0
    assert task.instruction in out and "success=True" in out


def test_play_bad_task_index_is_a_message(capsys, monkeypatch, agentbench_db_path) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, _, err = run_cli(capsys, "play", "--tasks", str(agentbench_db_path), "--task-index", "999")
    assert status == 2 and "task_index" in err


def test_play_exits_cleanly_on_eof(capsys, monkeypatch) -> None:
    status, out = play_with(capsys, monkeypatch, "SELECT 1\n\n", "--task-index", "2")
    assert status == 0
    assert "| 1 |" in out and "End of input" in out


def test_read_action_rules() -> None:
    stream = io.StringIO('\n\nAction: Operation\n```sql\nSELECT 1\n```\n\n{"tool": "x", "args": {}}\n'
                         "Action: Answer\nFinal Answer: [1]\nleft over")
    assert cli.read_action(stream) == "Action: Operation\n```sql\nSELECT 1\n```"
    assert cli.read_action(stream) == '{"tool": "x", "args": {}}'
    assert cli.read_action(stream) == "Action: Answer\nFinal Answer: [1]"
    assert cli.read_action(stream) == "left over"
    assert cli.read_action(stream) is None


def test_as_operation_wraps_only_plain_text() -> None:
    env = gym.make("cmat/DB-v0")
    wrapped = json.loads(cli.as_operation("SELECT * FROM transactions", env))
    assert wrapped == {"tool": "execute_sql", "args": {"sql": "SELECT * FROM transactions"}}
    for text in ("Action: Answer\nFinal Answer: [1]", "final answer: 3", '{"tool": "execute_sql"}',
                 "```sql\nSELECT 1\n```"):
        assert cli.as_operation(text, env) == text
    env.close()


# ---------------------------------------------------------------------------------- language models, CMAT
FAST_LM = ("--max-new-tokens", "8", "--max-rounds", "2", "--threads", "1", "--device", "cpu")


def test_eval_tiny_random_language_model_json(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "tiny-random", "--episodes", "2", "--json",
                             "--batch-size", "2", *FAST_LM)
    assert status == 0
    report = json.loads(out)
    check_report(report, "cmat/DB-v0", "tiny-random", 2)
    assert report["format_error_rate"] == 1.0  # random weights never write a parsable action
    assert "cmat" not in report


def test_eval_batch_size_gives_the_sequential_report(capsys) -> None:
    reports = [json.loads(run_cli(capsys, "eval", "--policy", "oracle", "--episodes", "6", "--json", "--split", "test",
                                  "--batch-size", batch)[1]) for batch in ("1", "4")]
    assert reports[0] == reports[1]


def test_eval_batches_a_language_model_by_default_and_plays_the_sequential_episodes(capsys, monkeypatch) -> None:
    # Without --batch-size a local language model plays min(episodes, 16) episodes at once (one decode step
    # for all of them); greedy, every episode's actions and observations equal those of --batch-size 1.
    played = []

    def spy(*args, **kwargs):
        results = cli.evaluation.run_episodes(*args, **{**kwargs, "record": True})
        played.append((kwargs["batch_size"], [[(s.action, s.observation) for s in r.trajectory.steps]
                                               for r in results]))
        return results

    monkeypatch.setattr(cli, "run_episodes", spy)
    argv = ("eval", "--policy", "tiny-random", "--episodes", "3", "--json", "--cmat", "--checker", "rule",
            "--max-new-tokens", "12", "--max-rounds", "3", "--threads", "1", "--device", "cpu")
    reports = [json.loads(run_cli(capsys, *argv, *extra)[1]) for extra in ((), ("--batch-size", "1"))]
    assert [batch for batch, _ in played] == [3, 1]
    assert reports[0] == reports[1]
    assert played[0][1] == played[1][1]
    assert len({steps[0][0] for steps in played[0][1]}) == 3  # the episodes differ: a real comparison
    for policy, memory, batch in (("oracle", (), 1), ("tiny-random", ("--memory", "on"), 1),
                                  ("tiny-random", (), 16), ("tiny-random", ("--batch-size", "2"), 2)):
        args = cli.build_parser().parse_args(["eval", "--policy", policy, "--cmat", *memory])
        cli.check_counts(args)
        assert args.batch_size == batch


def test_eval_cmat_json_reports_checker_and_memory(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "12", "--json", "--cmat",
                             "--checker", "rule", "--memory", "on", "--seed", "1")
    assert status == 0
    report = json.loads(out)
    check_report(report, "cmat/DB-v0", "random", 12)
    cmat = report["cmat"]
    assert cmat["checker"] == "rule"
    assert {"mean_rejected_actions", "checker_precision", "checker_recall", "reflections_used", "memory"} <= set(cmat)
    assert cmat["rejected_actions"] > 0 and 0.0 <= cmat["checker_precision"] <= 1.0
    assert cmat["mean_rejected_actions"] == pytest.approx(cmat["rejected_actions"] / 12)
    # every episode failed, so each wrote a reflection into the fresh store, and later ones used them
    assert cmat["reflections_written"] == 12 and cmat["reflections_used"] > 0
    assert cmat["memory"].startswith("reflection memory: read-write in-memory")


def test_eval_cmat_text_and_a_frozen_memory_file(capsys, tmp_path) -> None:
    path = tmp_path / "reflections.sqlite"
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "3", "--cmat", "--memory", "on",
                             "--memory-path", str(path))
    assert status == 0 and "CMAT loop, rule checker" in out and "rejected actions per episode" in out
    assert f"read-write {path}, 3 reflections" in out
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "3", "--cmat", "--memory", "on",
                             "--memory-path", str(path), "--memory-mode", "ro", "--json")
    assert status == 0
    cmat = json.loads(out)["cmat"]
    assert cmat["memory"].startswith("reflection memory: frozen (read-only)") and "3 reflections" in cmat["memory"]
    assert cmat["reflections_written"] == 0 and cmat["reflections_used"] > 0


def test_eval_cmat_llm_checker(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "oracle", "--episodes", "1", "--json", "--cmat",
                             "--checker", "llm", "--checker-model", "tiny-random", *FAST_LM)
    assert status == 0
    report = json.loads(out)
    assert report["cmat"]["checker"] == "llm" and report["cmat"]["reviewed_actions"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--memory", "on"], "need --cmat"),
        (["eval", "--checker", "rule"], "need --cmat"),
        (["eval", "--cmat", "--memory-path", "x.sqlite"], "needs --memory on"),
        (["eval", "--cmat", "--memory", "on", "--memory-mode", "ro", "--memory-path", "/no/such.sqlite"],
         "reflection memory"),
        (["eval", "--policy", "oracle", "--adapter", "/tmp"], "language-model policy"),
        (["eval", "--batch-size", "0"], "at least 1"),
        (["eval", "--cmat", "--tasks", "/no/such/file.jsonl"], "not found"),
    ],
)
def test_bad_model_and_cmat_flags_are_messages(capsys, argv: list[str], message: str) -> None:
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_eval_smollm2_plays_an_episode(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "smollm2", "--episodes", "1", "--json", "--split", "test",
                             "--max-new-tokens", "64", "--max-rounds", "2", "--threads", "1")
    assert status == 0
    report = json.loads(out)
    check_report(report, "cmat/DB-v0", "smollm2", 1)
    assert 1 <= report["results"][0]["steps"] <= 2


# ---------------------------------------------------------------------------------- seeds, protocols, trials
@pytest.mark.parametrize("argv", [["eval", "--seed", "-5"], ["play", "--seed", "-1"],
                                  ["eval", "--cmat", "--memory", "on", "--trials", "2", "--seed", "-3"]])
def test_negative_seeds_are_a_message(capsys, monkeypatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and "--seed" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_eval_memory_reports_the_single_trial_protocol(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "3", "--cmat", "--memory", "on")
    assert status == 0 and "single-trial: reflections of the same task are never served" in out
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "3", "--cmat", "--memory", "on",
                             "--json")
    assert json.loads(out)["cmat"]["protocol"] == "single-trial: reflections of the same task are never served"


def test_eval_multi_trial_reports_success_at_k(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "oracle", "--episodes", "3", "--cmat", "--memory", "on",
                             "--trials", "3", "--json", "--seed", "2")
    assert status == 0
    report = json.loads(out)
    trials = report["trials"]
    assert trials["protocol"].startswith("multi-trial") and trials["max_trials"] == 3 and trials["tasks"] == 3
    assert [row["k"] for row in trials["success@k"]] == [1, 2, 3]
    assert all(row["success_rate"] == 1.0 for row in trials["success@k"])  # the oracle solves every task at once
    assert len(report["results"]) == 3 and all(r["trial"] == 1 for r in report["results"])  # no retries needed
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "3", "--cmat", "--memory", "on",
                             "--trials", "2", "--json", "--seed", "2")
    report = json.loads(out)
    rates = [row["success_rate"] for row in report["trials"]["success@k"]]
    assert rates == sorted(rates)  # success after k trials never drops
    retried = [r for r in report["results"] if r["trial"] == 2]
    first = [r for r in report["results"] if r["trial"] == 1]
    assert len(first) == 3 and len(retried) == sum(not r["success"] for r in first)
    assert report["cmat"]["own_task_reflections_used"] == len(retried)  # every retry saw its trial-1 reflection
    status, out, _ = run_cli(capsys, "eval", "--policy", "random", "--episodes", "2", "--cmat", "--memory", "on",
                             "--trials", "2")
    assert status == 0 and "success@1" in out and "success@2" in out and "multi-trial" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--cmat", "--memory", "on", "--trials", "0"], "--trials"),
        (["eval", "--cmat", "--trials", "2"], "--memory on"),
        (["eval", "--trials", "2"], "--memory on"),
        (["eval", "--cmat", "--memory", "on", "--reflection", "lm", "--policy", "random"], "language-model policy"),
        (["eval", "--cmat", "--reflection", "lm", "--policy", "tiny-random"], "--memory on"),
    ],
)
def test_bad_trial_and_reflection_flags_are_messages(capsys, argv: list[str], message: str) -> None:
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_eval_lm_reflection_writer(capsys) -> None:
    status, out, _ = run_cli(capsys, "eval", "--policy", "tiny-random", "--episodes", "2", "--json", "--cmat",
                             "--memory", "on", "--reflection", "lm", "--trials", "2", *FAST_LM)
    assert status == 0
    report = json.loads(out)
    assert report["cmat"]["reflection_writer"] == "lm" and report["cmat"]["reflections_written"] >= 1


def test_eval_speculate_sets_the_draft_length(capsys) -> None:
    pytest.importorskip("torch")
    for extra, expected in (((), 8), (("--speculate", "0"), 0), (("--speculate", "3"), 3)):
        args = cli.build_parser().parse_args(["eval", "--policy", "tiny-random", "--device", "cpu", *extra])
        assert cli.build_policy(args).lm.speculate == expected
    status, _, err = run_cli(capsys, "eval", "--policy", "tiny-random", "--speculate", "-1")
    assert status != 0 and "--speculate must be >= 0" in err and "Traceback" not in err
