"""Loading AgentBench dbbench files (JSON list or JSONL) as :class:`Task` objects."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from cmat_gym.core.task import Task
from cmat_gym.core.taskfile import read_records
from cmat_gym.domains.db.scoring import MUTATION_KINDS

_MD5 = re.compile(r"[0-9a-f]{32}")
MYSQL = "mysql"  # the dialect AgentBench's tables were created in (MySQL 8, server defaults)


def parse_answer_md5(raw: Any) -> str | None:
    """AgentBench stores the gold hash as the repr of a MySQL result, e.g. ``"[('e638...',)]"``."""
    if raw is None:
        return None
    hashes = _MD5.findall(str(raw))
    if hashes:
        return "_".join(sorted(hashes))  # several tables: AgentBench joins the sorted hashes with "_"
    return None


def record_to_task(record: dict[str, Any], task_id: str) -> Task:
    """One dbbench record as a Task (columns created as TEXT, as AgentBench does; every table is marked
    ``"dialect": "mysql"``, so the env runs it with MySQL's semantics: :mod:`cmat_gym.domains.db.mysql`)."""
    raw_tables = record["table"] if isinstance(record["table"], list) else [record["table"]]
    tables = [
        {
            "name": t["table_name"],
            "columns": [[c["name"], "TEXT"] for c in t["table_info"]["columns"]],
            "rows": [[None if v is None else str(v) for v in row] for row in t["table_info"]["rows"]],
            "primary_key": None,
            "foreign_keys": [],
            "dialect": MYSQL,
        }
        for t in raw_tables
    ]
    kind = record["type"][0] if isinstance(record["type"], list) else str(record["type"])
    if kind in MUTATION_KINDS:
        gold_sql = [s for s in record.get("label", []) if isinstance(s, str)]
        label: list[str] = []
    else:
        sql = record.get("sql")
        query = sql.get("query") if isinstance(sql, dict) else sql
        gold_sql = [query] if isinstance(query, str) and query.strip() else []
        label = ["" if v is None else str(v) for v in record.get("label", [])]
    context = record.get("add_description") or _describe(tables)
    evidence = record.get("evidence")
    if evidence:
        context = f"{context}\nEvidence: {evidence}"
    payload = {
        "source": "agentbench",
        "kind": kind,
        "tables": tables,
        "gold_sql": gold_sql,
        "label": label,
        "answer_md5": parse_answer_md5(record.get("answer_md5")) if kind in MUTATION_KINDS else None,
        "target_table": tables[0]["name"],
    }
    return Task(domain="db", task_id=task_id, instruction=record["description"], context=context,
                payload=payload, split="test", difficulty=0)


def load_dbbench(path: str | os.PathLike[str]) -> list[Task]:
    """Every task of a dbbench file; ``task_id`` is ``dbbench/<file name>/<index>``."""
    path = os.fspath(path)
    name = os.path.basename(path)
    return [record_to_task(r, f"dbbench/{name}/{i}") for i, r in enumerate(read_records(path))]


def _describe(tables: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"The name of this table is {t['name']}, and the headers of this table are "
        f"{','.join(c[0] for c in t['columns'])}." for t in tables
    )


HEADLINE_CATEGORIES = ("SELECT", "INSERT", "UPDATE")


def dbbench_headline(tasks: Sequence[Task], solved: Sequence[bool]) -> dict[str, Any]:
    """AgentBench's ``overall_cat_accuracy``: the mean of the SELECT, INSERT and UPDATE accuracies
    (SELECT = every non-mutation kind; DELETE is in none of the three; an absent category counts 0,
    as in AgentBench)."""
    per: dict[str, list[bool]] = {c: [] for c in HEADLINE_CATEGORIES}
    for task, ok in zip(tasks, solved, strict=True):
        kind = task.payload["kind"]
        category = kind if kind in MUTATION_KINDS else "SELECT"
        if category in per:
            per[category].append(bool(ok))
    accuracy = {c: (sum(v) / len(v) if v else 0.0) for c, v in per.items()}
    return {"headline": sum(accuracy.values()) / len(accuracy), "accuracy": accuracy,
            "counts": {c: len(v) for c, v in per.items()}}
