"""The procedural DB task generator: determinism, ids, coverage, disjoint splits, gold answers."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from cmat_gym.core.task import Task
from cmat_gym.domains.db import tasks as db_tasks
from cmat_gym.domains.db.backend import SQLiteSandbox, Table, agentbench_table_hash
from cmat_gym.domains.db.tasks import (
    MUTATION_KINDS,
    QUESTION_KINDS,
    SCHEMA_FAMILIES,
    generate_task,
    instruction_split,
    task_from_id,
)

SEEDS_PER_CELL = 150  # x 2 splits x 3 difficulties = 900 tasks shared by most tests


@pytest.fixture(scope="module")
def sample() -> list[Task]:
    return [generate_task(seed, split, d) for d in (1, 2, 3) for split in ("train", "test")
            for seed in range(SEEDS_PER_CELL)]


def run_gold(task: Task, reverse_rows: bool = False) -> tuple[list[tuple], list[tuple], list[tuple], str | None]:
    """Load the task's tables (optionally in reverse row order) and run its gold SQL.

    Returns (rows of the last result, target table before, target table after, AgentBench's
    fingerprint of all the task's tables after).
    """
    payload = task.payload
    tables = [Table(t["name"], [tuple(c) for c in t["columns"]],
                    t["rows"][::-1] if reverse_rows else t["rows"],
                    t["primary_key"], [tuple(fk) for fk in t["foreign_keys"]]) for t in payload["tables"]]
    sandbox = SQLiteSandbox()
    try:
        sandbox.load(tables)
        before = sandbox.table_rows(payload["target_table"])
        result = None
        for sql in payload["gold_sql"]:
            result = sandbox.execute(sql)
            assert result.error is None, (task.task_id, sql, result.error)
        after = sandbox.table_rows(payload["target_table"])
        assert result is not None
        return result.rows, before, after, sandbox.tables_hash([t["name"] for t in payload["tables"]])
    finally:
        sandbox.close()


# ---------------------------------------------------------------------- public constants and fields
def test_public_constants():
    assert QUESTION_KINDS == ("counting", "comparison", "ranking", "aggregation-SUM", "aggregation-MIN",
                              "aggregation-MAX", "aggregation-AVG", "other", "INSERT", "UPDATE", "DELETE")
    assert len(SCHEMA_FAMILIES) >= 8
    assert len(set(SCHEMA_FAMILIES)) == len(SCHEMA_FAMILIES)


def test_task_fields(sample):
    for task in sample:
        p = task.payload
        assert task.domain == "db"
        assert task.task_id == f"db/{task.split}/d{task.difficulty}/{task.task_id.rsplit('/', 1)[1]}"
        assert task.instruction and task.context
        assert set(p) == {"source", "family", "kind", "tables", "gold_sql", "label", "answer_md5",
                          "target_table"}
        assert p["source"] == "procedural"
        assert p["family"] in SCHEMA_FAMILIES
        assert p["kind"] in QUESTION_KINDS
        assert p["target_table"] in [t["name"] for t in p["tables"]]
        assert p["gold_sql"] and all(isinstance(s, str) and s for s in p["gold_sql"])
        for table in p["tables"]:
            assert all(sqltype in ("TEXT", "INTEGER", "REAL") for _, sqltype in table["columns"])
            assert all(len(row) == len(table["columns"]) for row in table["rows"])


def test_labels_and_hashes_are_set(sample):
    for task in sample:
        p = task.payload
        if p["kind"] in MUTATION_KINDS:
            assert p["label"] == []
            # One 32-hex MD5 per table, joined with "_" (AgentBench's multi-table fingerprint).
            assert isinstance(p["answer_md5"], str)
            assert [len(h) for h in p["answer_md5"].split("_")] == [32] * len(p["tables"])
        else:
            assert p["answer_md5"] is None
            assert p["label"], task.task_id
            assert all(isinstance(v, str) and v and v != "None" for v in p["label"]), task.task_id


def test_context_shows_schema_but_no_rows(sample):
    for task in sample:
        for table in task.payload["tables"]:
            headers = ",".join(name for name, _ in table["columns"])
            hint = f"The name of this table is {table['name']}, and the headers of this table are {headers}."
            assert hint in task.context
            for col, ref_table, _ in table["foreign_keys"]:
                assert f'"{col}" references "{ref_table}"' in task.context.replace(f'"{table["name"]}".', "")
            text_cols = [i for i, (_, sqltype) in enumerate(table["columns"]) if sqltype == "TEXT"]
            values = [row[i] for row in table["rows"] for i in text_cols]
            assert not any(f"'{v}'" in task.context or f'"{v}"' in task.context for v in values)


# ---------------------------------------------------------------------- determinism and ids
def test_same_name_same_task():
    for d in (1, 2, 3):
        for split in ("train", "test"):
            for seed in (0, 7, 12345):
                assert generate_task(seed, split, d) == generate_task(seed, split, d)


def test_same_task_under_other_hash_seeds():
    names = [(seed, split, d) for d in (1, 2, 3) for split in ("train", "test") for seed in (0, 3, 99)]
    expected = [generate_task(*name).to_json() for name in names]
    script = ("import json, sys\nfrom cmat_gym.domains.db.tasks import generate_task\n"
              f"print(json.dumps([generate_task(*n).to_json() for n in {names!r}]))")
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             check=True)
        assert json.loads(out.stdout) == expected


@pytest.mark.parametrize("seed", [0, 1, 17, 2**31 - 1, 2**70 + 3])
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_task_id_round_trip(seed, split, difficulty):
    task = generate_task(seed, split, difficulty)
    assert task.task_id == f"db/{split}/d{difficulty}/{seed}"
    assert task_from_id(task.task_id) == task


@pytest.mark.parametrize("bad", [
    "", "db/train/d2", "db/dev/d1/3", "db/train/d4/3", "db/train/d0/3", "db/train/2/3", "db/train/d1/-1",
    "db/train/d1/01", "db/train/d1/x", "os/train/d1/3", "db/train/d1/3/", " db/train/d1/3", "db/TRAIN/d1/3",
])
def test_bad_task_ids_raise(bad):
    with pytest.raises(ValueError, match=r"Expects .*actual"):
        task_from_id(bad)


@pytest.mark.parametrize("args", [(-1, "train", 1), (1, "dev", 1), (1, "train", 0), (1, "train", 4),
                                  (1.0, "train", 1), (True, "train", 1), (1, "train", True)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError, match="Expects"):
        generate_task(*args)


def test_json_round_trip(sample):
    for task in sample:
        text = task.to_json()
        assert Task.from_json(text) == task  # lists, not tuples, all the way down


# ---------------------------------------------------------------------- coverage
def test_every_kind_and_family_appears(sample):
    for d in (1, 2, 3):
        tasks = [t for t in sample if t.difficulty == d]
        assert {t.payload["kind"] for t in tasks} == set(QUESTION_KINDS), d
        assert {t.payload["family"] for t in tasks} == set(SCHEMA_FAMILIES), d
    pairs = {(t.payload["family"], t.payload["kind"]) for t in sample}
    assert len(pairs) >= 0.9 * len(SCHEMA_FAMILIES) * len(QUESTION_KINDS)


def test_some_names_have_spaces(sample):
    names = [name for t in sample for table in t.payload["tables"] for name, _ in table["columns"]]
    assert any(" " in n for n in names) and any("_" in n for n in names)


# ---------------------------------------------------------------------- splits
def test_splits_disjoint_by_construction():
    # Difficulty 1 only, to keep the test quick: the split is a function of the instruction text alone,
    # which test_split_follows_the_instruction checks at every difficulty.
    train = {generate_task(seed, "train", 1).instruction for seed in range(2000)}
    test = {generate_task(seed, "test", 1).instruction for seed in range(2000)}
    assert not train & test
    assert all(instruction_split(i) == "train" for i in train)
    assert all(instruction_split(i) == "test" for i in test)
    assert len(train) > 1000 and len(test) > 1000  # varied, not a handful of templates


def test_split_follows_the_instruction(sample):
    for task in sample:
        assert instruction_split(task.instruction) == task.split


# ---------------------------------------------------------------------- gold answers
def test_gold_sql_reproduces_label_and_hash(sample):
    for task in sample:
        p = task.payload
        # Reversed row order: a tie in a ranking or a lookup would show as a different answer.
        rows, before, after, after_hash = run_gold(task, reverse_rows=True)
        if p["kind"] in MUTATION_KINDS:
            assert after_hash == p["answer_md5"], task.task_id
            if len(p["tables"]) == 1:
                assert agentbench_table_hash(after) == p["answer_md5"], task.task_id
            assert agentbench_table_hash(before) != agentbench_table_hash(after), task.task_id
        else:
            values = [db_tasks._label_value(v) for row in rows for v in row]
            assert sorted(values) == sorted(p["label"]), (task.task_id, task.instruction)


def test_mutations_change_the_right_amount(sample):
    for task in sample:
        kind = task.payload["kind"]
        if kind not in MUTATION_KINDS:
            continue
        _, before, after, _ = run_gold(task)
        if kind == "INSERT":
            assert len(after) == len(before) + 1
        elif kind == "DELETE":
            assert 0 < len(after) < len(before), task.instruction
        else:
            assert len(after) == len(before) and sorted(map(repr, after)) != sorted(map(repr, before))


def test_insert_instruction_states_every_value(sample):
    for task in sample:
        if task.payload["kind"] != "INSERT":
            continue
        _, before, after, _ = run_gold(task)
        (new_row,) = [r for r in after if r not in before]
        table = next(t for t in task.payload["tables"] if t["name"] == task.payload["target_table"])
        fk_cols = {fk[0] for fk in table["foreign_keys"]}
        for (name, _), value in zip(table["columns"], new_row, strict=True):
            if name in fk_cols:
                continue
            shown = [f"{value:.1f}", f"{value:.2f}"] if isinstance(value, float) else [str(value)]
            assert any(f"{name} = {s}" in task.instruction or f'{name} = "{s}"' in task.instruction
                       for s in shown), (name, value, task.instruction)


# ---------------------------------------------------------------------- difficulty shapes
def test_difficulty_shapes(sample):
    for task in sample:
        p, d = task.payload, task.difficulty
        tables = p["tables"]
        for table in tables:
            assert len(table["rows"]) <= 40
        if d == 1:
            assert len(tables) == 1
            assert 5 <= len(tables[0]["rows"]) <= 12 and 3 <= len(tables[0]["columns"]) <= 5
        elif d == 2:
            assert len(tables) == 1
            assert 12 <= len(tables[0]["rows"]) <= 30 and 4 <= len(tables[0]["columns"]) <= 7
        else:
            assert 2 <= len(tables) <= 3
            assert any(t["foreign_keys"] for t in tables)
            sql = " ".join(p["gold_sql"])
            if p["kind"] in ("UPDATE", "DELETE", "INSERT"):
                assert "(SELECT" in sql, sql
            else:
                assert "JOIN" in sql, sql


def test_difficulty_two_uses_two_conditions_or_grouping(sample):
    for task in sample:
        if task.difficulty != 2 or task.payload["kind"] == "INSERT":
            continue
        sql = task.payload["gold_sql"][0]
        assert " AND " in sql or "GROUP BY" in sql or (" WHERE " in sql and "ORDER BY" in sql), sql


# ---------------------------------------------------------------------- speed
def test_generation_is_fast():
    """Loose bound only (a loaded CI machine); the real figure comes from the benchmarks."""
    times = []
    for seed in range(60):
        for split in ("train", "test"):
            start = time.perf_counter()
            generate_task(10_000 + seed, split, 1)
            times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.250
