"""Recorded episodes as HF datasets: ``run_episodes(..., record=True)``, ``save_trajectories`` and
``cmat-gym eval --save-trajectories DIR``, round-tripped through ``datasets.load_from_disk``, for bare envs
and the CMAT loop, on DB-v0 and on the fake domain of ``test_fake_domain`` (any registered domain)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets")

from test_fake_domain import ECHO  # noqa: E402  (the domain kit's test domain, defined in that file alone)

from cmat_gym import cli  # noqa: E402
from cmat_gym.agents.policies import make_policy  # noqa: E402
from cmat_gym.core.domain import get_domain, register_domain, unregister_domain  # noqa: E402
from cmat_gym.evaluation import env_factory, run_episodes  # noqa: E402
from cmat_gym.trajectories import MISSING_DATASETS, load_trajectories, save_trajectories, to_dataset  # noqa: E402


@pytest.fixture(scope="module")
def echo_domain() -> Iterator[None]:
    register_domain(ECHO)
    yield
    unregister_domain("echo")


def _check_row(row: dict[str, Any], domain: str, cmat: bool) -> None:
    """The invariants of every saved row (see cmat_gym.trajectories' docstring)."""
    n = row["steps"]
    assert n >= 1 and len(row["actions"]) == len(row["rewards"]) == len(row["errors"]) == n
    assert len(row["observations"]) == n + 1
    assert row["domain"] == domain and row["cmat"] is cmat
    assert [s["function"]["name"] for s in json.loads(row["tools"])] == \
        [s["function"]["name"] for s in get_domain(domain).grammar.tool_schemas()]
    messages = row["messages"]
    assert all(set(m) == {"role", "content"} for m in messages)
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "user"] * (n - 1) + ["assistant"]
    assert [m["content"] for m in messages[2::2]] == row["actions"]
    assert [m["content"] for m in messages[3::2]] == row["observations"][1:-1]
    assert messages[1]["content"] == row["observations"][0]
    assert row["return"] == pytest.approx(sum(row["rewards"]))
    verdicts = row["checker_verdicts"]
    if cmat:
        assert all(v in ("APPROVE", "REJECT", None) for v in verdicts) and any(v is not None for v in verdicts)
        assert json.loads(row["episode_metrics"])["assistant_turns"] == n
    else:
        assert verdicts == [None] * n and row["hindsight"] == [None] * n and row["episode_metrics"] is None


@pytest.mark.parametrize("cmat", [False, True], ids=["bare", "cmat"])
def test_db_oracle_episodes_round_trip(tmp_path: Path, cmat: bool) -> None:
    oracle = make_policy("oracle")
    results = run_episodes(env_factory("cmat/DB-v0", cmat=cmat), oracle, 4, 7, progress=False, batch_size=2,
                           record=True)
    unrecorded = run_episodes(env_factory("cmat/DB-v0", cmat=cmat), oracle, 4, 7, progress=False)
    assert results == unrecorded  # recording changes no outcome
    path = save_trajectories(results, tmp_path / "traj", env_id="cmat/DB-v0", policy="oracle")
    dataset = datasets.load_from_disk(str(path))
    assert len(dataset) == 4
    for i, (row, result) in enumerate(zip(dataset, results, strict=True)):
        _check_row(row, "db", cmat)
        assert (row["task_id"], row["seed"], row["success"], row["score"], row["steps"]) == \
            (result.task_id, 7 + i, result.success, result.score, result.steps)
        assert row["success"] and row["rewards"][-1] == row["score"] == 1.0  # the oracle solves every task
        assert (row["env_id"], row["policy"], row["split"]) == ("cmat/DB-v0", "oracle", "train")
        if cmat:  # the oracle's actions are all fine: approved, and fine in hindsight
            assert set(row["checker_verdicts"]) == {"APPROVE"} and set(row["hindsight"]) == {True}
            assert all(s is not None for s in row["checker_scores"])
    parsed = json.loads(dataset[0]["parsed_actions"][-1])
    assert parsed["kind"] == "answer"


def test_random_policy_in_cmat_loop_records_rejections(tmp_path: Path) -> None:
    results = run_episodes(env_factory("cmat/DB-v0", cmat=True), make_policy("random", seed=3, domain="db"), 12, 0,
                           progress=False, record=True)
    dataset = datasets.load_from_disk(str(save_trajectories(results, tmp_path / "t")))
    for row in dataset:
        _check_row(row, "db", True)
    verdicts = [v for row in dataset for v in row["checker_verdicts"]]
    hindsight = [h for row in dataset for h in row["hindsight"]]
    assert "REJECT" in verdicts and False in hindsight  # the random policy makes mistakes the loop labels
    rejected = [(row["observations"][i + 1], row["errors"][i]) for row in dataset
                for i, v in enumerate(row["checker_verdicts"]) if v == "REJECT"]
    assert all(error == "rejected" and "rejected by the checker" in obs for obs, error in rejected)


@pytest.mark.parametrize("cmat", [False, True], ids=["bare", "cmat"])
def test_any_registered_domain(echo_domain: None, tmp_path: Path, cmat: bool) -> None:
    results = run_episodes(env_factory("cmat/Echo-v0", cmat=cmat), make_policy("oracle"), 3, 0, progress=False,
                           record=True)
    dataset = load_trajectories(save_trajectories(results, tmp_path / "echo"))
    assert len(dataset) == 3
    for row in dataset:
        _check_row(row, "echo", cmat)
        assert row["success"] and row["actions"][-1].startswith("Action: submit(")
        assert "reverse(text)" in row["messages"][0]["content"]  # the domain's grammar in the system prompt


def test_successful_only_and_trials(tmp_path: Path) -> None:
    code = cli.main(["eval", "--env", "cmat/DB-v0", "--policy", "random", "--episodes", "3", "--cmat",
                     "--memory", "on", "--trials", "2", "--save-trajectories", str(tmp_path / "d"), "--json"])
    assert code == 0
    dataset = load_trajectories(tmp_path / "d")
    assert sorted(set(dataset["trial"])) == [1, 2]  # every failed task was retried: both trials saved
    assert all(row["reflection"] for row in dataset if not row["success"])
    kept = load_trajectories(tmp_path / "d", successful_only=True)
    assert len(kept) == sum(dataset["success"])


def test_cli_saves_and_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "runs" / "traj"
    for episodes in ("2", "3"):
        code = cli.main(["eval", "--env", "cmat/DB-v0", "--policy", "oracle", "--episodes", episodes,
                         "--save-trajectories", str(target), "--json"])
        assert code == 0
        report = json.loads(capsys.readouterr().out)  # stdout is still one JSON object
        dataset = datasets.load_from_disk(str(target))
        assert len(dataset) == report["episodes"] == int(episodes)
        assert dataset["task_id"] == [r["task_id"] for r in report["results"]]
    assert sorted(p.name for p in target.parent.iterdir()) == ["traj"]  # no temp or old folder left behind


def test_unrecorded_results_are_refused() -> None:
    results = run_episodes(env_factory("cmat/DB-v0"), make_policy("oracle"), 1, 0, progress=False)
    with pytest.raises(ValueError, match="record=True"):
        to_dataset(results)


def test_missing_datasets_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    code = cli.main(["eval", "--policy", "oracle", "--episodes", "1", "--save-trajectories", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and MISSING_DATASETS in err
    assert not (tmp_path / "x").exists()
