"""benchmarks/agentbench_table.py: the AgentBench-style table and AgentBench's DB headline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from cmat_gym.core.task import Task
from cmat_gym.domains.db.agentbench import dbbench_headline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "agentbench_table.py"
spec = importlib.util.spec_from_file_location("agentbench_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = table  # dataclasses look their module up there
spec.loader.exec_module(table)


def test_db_headline_is_agentbench_overall_cat_accuracy() -> None:
    kinds = ["counting", "aggregation-SUM", "INSERT", "INSERT", "UPDATE", "DELETE"]
    tasks = [Task("db", f"t{i}", "", "", {"kind": kind}) for i, kind in enumerate(kinds)]
    solved = [True, False, True, True, False, True]
    headline = dbbench_headline(tasks, solved)
    assert headline["accuracy"] == {"SELECT": 0.5, "INSERT": 1.0, "UPDATE": 0.0}
    assert headline["headline"] == pytest.approx(0.5)
    assert headline["counts"] == {"SELECT": 2, "INSERT": 2, "UPDATE": 1}  # DELETE is in no category
    missing = dbbench_headline(tasks[:2], solved[:2])  # no INSERT or UPDATE task: they count 0, as in AgentBench
    assert missing["headline"] == pytest.approx(0.5 / 3)


def test_table_for_oracle_and_random(capsys, tmp_path, agentbench_db_path) -> None:
    out_json = tmp_path / "table.json"
    status = table.main(["--policy", "oracle", "random", "--episodes", "4", "--envs", "DB", "--agentbench-file", f"DB={agentbench_db_path}",
                         "--json", str(out_json), "--quiet", "--batch-size", "3"])
    assert status == 0
    out = capsys.readouterr().out
    assert "command: python benchmarks/agentbench_table.py --policy oracle random" in out
    assert "DB-v0 test (4)" in out and "dbbench dev (60)" in out and "overall" in out and "format errors" in out
    assert "AgentBench headline on dbbench dev" in out
    rows = {r["agent"]: r for r in json.loads(out_json.read_text())["rows"]}
    oracle, random = rows["oracle"], rows["random"]
    assert oracle["overall"]["success_rate"] == 1.0 and oracle["overall"]["episodes"] == 64
    assert oracle["sources"]["dbbench dev"]["headline"]["headline"] == 1.0
    assert oracle["sources"]["dbbench dev"]["headline"]["counts"] == {"SELECT": 20, "INSERT": 20, "UPDATE": 20}
    assert random["sources"]["dbbench dev"]["headline"]["headline"] < 0.5
    assert random["overall"]["format_error_rate"] > 0


def test_ablations_side_by_side(capsys, tmp_path, agentbench_db_path) -> None:
    out_json = tmp_path / "table.json"
    status = table.main(["--policy", "oracle", "--episodes", "2", "--envs", "DB", "--agentbench-file", f"DB={agentbench_db_path}",
                         "--agentbench-tasks", "3", "--ablations", "--checker-model", "tiny-random", "--max-new-tokens",
                         "4", "--threads", "1", "--device", "cpu", "--json", str(out_json), "--quiet"])
    assert status == 0
    out = capsys.readouterr().out
    assert "memory on: a fresh in-memory ReflectionStore" in out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["agent"] for r in rows] == ["oracle", "oracle + CMAT, no checker", "oracle + CMAT, rule checker",
                                          "oracle + CMAT, LLM checker", "oracle + CMAT, rule checker, memory on"]
    for row in rows[1:]:
        assert set(row["sources"]) == {"DB-v0 test", "dbbench dev"}
        assert all("cmat" in cell for cell in row["sources"].values())
    # the evenly spaced subset keeps every category of the sorted file
    assert rows[0]["sources"]["dbbench dev"]["headline"]["counts"] == {"SELECT": 1, "INSERT": 1, "UPDATE": 1}
    # the oracle never fails, so nothing is written: the store says it stayed empty
    assert rows[-1]["sources"]["DB-v0 test"]["memory"] == "reflection memory: empty (in-memory, not persisted)"
    assert rows[2]["sources"]["DB-v0 test"]["cmat"]["rejected_actions"] == 0  # the rule checker passes the oracle


def test_missing_dbbench_file_is_skipped_with_a_message(capsys, tmp_path) -> None:
    status = table.main(["--policy", "oracle", "--episodes", "2", "--envs", "DB", "--agentbench-file", f"DB={tmp_path / 'none.jsonl'}", "--quiet"])
    assert status == 0
    out = capsys.readouterr().out
    assert "not found" in out and "'dbbench dev' skipped" in out and "DB-v0 test (2)" in out


def test_the_default_agentbench_dir_is_the_bundled_data(capsys) -> None:
    assert table.DEFAULT_AGENTBENCH_DIR.is_dir() and "cmat_gym" in table.DEFAULT_AGENTBENCH_DIR.parts
    status = table.main(["--policy", "oracle", "--episodes", "1", "--envs", "DB", "--agentbench-tasks", "3", "--quiet"])
    assert status == 0
    out = capsys.readouterr().out
    assert "dbbench dev (3)" in out and "not found" not in out
