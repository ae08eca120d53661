"""Tests of the discrete DB-v0 wrapper: gymnasium/SB3 env checks, gold-free candidates, result parsing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import QueryResult
from cmat_gym.domains.db.discrete import COMMIT, SLOTS, DiscreteDBWrapper, build_candidates, parse_result
from cmat_gym.domains.db.env import DBEnv, format_result
from cmat_gym.domains.db.tasks import generate_task

COMMIT_SLOT = SLOTS.index(COMMIT)


class GuardedPayload(Mapping[str, Any]):
    """A task payload that records every key read (the env may read ``tables``; the wrapper nothing)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.read: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.read.append(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        self.read.append("<iter>")
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def guarded(task: Task) -> tuple[Task, GuardedPayload]:
    payload = GuardedPayload(task.payload)
    return dataclasses.replace(task, payload=payload), payload


def test_sb3_check_env_passes_without_warnings() -> None:
    env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env = DiscreteDBWrapper()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any SB3 compatibility warning fails the test
        env_checker.check_env(env)
    env.close()


def test_gymnasium_check_env_passes() -> None:
    env = DiscreteDBWrapper(difficulty=3)
    gym_check_env(env, skip_render_check=True)
    env.close()


def test_candidates_are_built_without_reading_the_payload() -> None:
    for seed, difficulty in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3)]:
        task, payload = guarded(generate_task(seed, "train", difficulty))
        env = DiscreteDBWrapper()
        _, info = env.reset(seed=0, options={"task": task})
        # Candidates are a pure function of the first observation text.
        assert env.candidates == build_candidates(env.env.trajectory[0]["content"])
        for slot in np.flatnonzero(info["action_mask"]):
            if slot == COMMIT_SLOT:
                continue
            env.reset(options={"task": task})
            env.step(slot)
        # Setting up the database reads the tables; nothing else (no gold SQL, label, hash, kind) was read.
        assert set(payload.read) == {"tables"}, payload.read
        env.close()


def test_a_correct_query_then_commit_scores_one() -> None:
    task = generate_task(6, "train", 1)  # "How many students majoring in ..." (a COUNT)
    assert task.instruction.startswith("How many")
    env = DiscreteDBWrapper()
    env.reset(options={"task": task})
    obs, reward, terminated, truncated, info = env.step(SLOTS.index("count"))
    assert reward == 0.0 and not terminated and not truncated and not info["invalid_action"]
    assert env.last is not None and env.last.is_query and len(env.last.cells) == 1
    assert obs[np.flatnonzero(obs)].size > 0 and env.observation_space.contains(obs)
    _, reward, terminated, _, info = env.step(COMMIT_SLOT)
    assert terminated and reward == 1.0 and info["success"]
    env.close()


def test_invalid_choice_is_a_no_op_and_the_budget_truncates() -> None:
    env = DiscreteDBWrapper(max_steps=3, invalid_penalty=-0.1)
    _, info = env.reset(seed=0, options={"task": generate_task(6, "train", 1)})  # a question: no INSERT
    invalid = SLOTS.index("insert")
    assert not info["action_mask"][invalid]
    rounds = env.env.rounds
    obs1, reward, terminated, truncated, info = env.step(invalid)
    assert info["invalid_action"] and reward == -0.1 and not terminated and not truncated
    assert env.env.rounds == rounds  # nothing reached the database
    env.step(invalid)
    _, _, terminated, truncated, _ = env.step(invalid)
    assert truncated and not terminated
    env.close()


def test_changes_commit_done_and_are_graded_by_the_table() -> None:
    task = generate_task(1, "train", 1)  # INSERT a new airline
    assert task.payload["kind"] == "INSERT"
    env = DiscreteDBWrapper()
    _, info = env.reset(options={"task": task})
    assert info["action_mask"][SLOTS.index("insert")]
    _, _, _, _, info = env.step(SLOTS.index("insert"))
    assert env.last is not None and not env.last.is_query and env.last.affected == 1
    _, reward, terminated, _, info = env.step(COMMIT_SLOT)
    assert terminated and reward == 1.0
    env.close()


def test_parse_result_reads_the_env_output() -> None:
    table = format_result(QueryResult(columns=["a", "b"], rows=[(1, "x y"), (None, "z")]))
    result = parse_result(table)
    assert result.is_query and result.rows == 2 and result.cells == ("1", "x y", "NULL", "z")
    assert parse_result("Query OK, 3 rows affected.").affected == 3
    assert parse_result("Error: no such table: t").error


def test_agentbench_style_schema_is_understood() -> None:
    obs = (
        'How many rows have the city "Paris"?\n\nThe name of this table is people, and the headers of this '
        "table are name,city."
    )
    menu = build_candidates(obs)
    count = menu[SLOTS.index("count")]
    assert count is not None and "'Paris' IN" in count.sql and '"people"' in count.sql


def test_wrapper_can_wrap_a_given_env() -> None:
    env = DiscreteDBWrapper(DBEnv(split="test", difficulty=2, max_rounds=4), max_steps=4)
    _, info = env.reset(seed=3)
    assert info["split"] == "test" and info["action_mask"][COMMIT_SLOT]
    env.close()


def test_module_imports_neither_torch_nor_stable_baselines3() -> None:
    # A fresh interpreter: this test process may already have imported torch for other tests.
    code = ("import sys, cmat_gym.domains.db.discrete\n"
            "print(sorted(m for m in ('torch', 'stable_baselines3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
