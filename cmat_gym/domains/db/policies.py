"""DB-specific pieces of the generic policies and data builders, found through the domain record:
random SQL for :class:`~cmat_gym.agents.policies.RandomPolicy`, and near-miss flawed actions for the
checker-aware SFT data (:mod:`algorithms.sft_train`)."""

from __future__ import annotations

import random
import re
from typing import Any

from cmat_gym.core.task import Task
from cmat_gym.domains.db.env import GRAMMAR

# Table names as the DB observations state them: AgentBench's sentence, a CREATE TABLE, or "Table x".
_TABLE_PATTERNS = (
    re.compile(r"The name of this table is (.+?), and the headers of this table are (.+?)\.?$", re.MULTILINE),
    re.compile(r"CREATE TABLE\s+[`\"]?([^`\"(\s]+)[`\"]?\s*\((.*?)\)", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*[-*]?\s*[Tt]able\s+[`\"']?([^`\"'\s:(]+)[`\"']?\s*[:(]\s*(.*?)\)?$", re.MULTILINE),
)


def random_sql_action(rng: random.Random, words: list[str], first_observation: str) -> str:
    """A random query on a table named in the episode's first observation (``SELECT *``, one random
    column, a count, a random filter), as AgentBench text or a JSON tool call."""
    tables = find_tables(first_observation)
    name, columns = rng.choice(tables) if tables else (rng.choice(words) if words else "t", [])
    table = _quote(name)
    column = _quote(rng.choice(columns)) if columns else "*"
    templates = [
        f"SELECT * FROM {table}",
        f"SELECT * FROM {table} LIMIT {rng.randint(1, 5)}",
        f"SELECT {column} FROM {table}",
        f"SELECT COUNT(*) FROM {table}",
        f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}",
    ]
    if words:
        value = rng.choice(words).replace("'", "''")
        templates.append(f"SELECT * FROM {table} WHERE {column if columns else 'rowid'} = '{value}'")
    sql = rng.choice(templates)
    if rng.random() < 0.5:
        return GRAMMAR.call("execute_sql", sql=f"{sql};")
    return GRAMMAR.call_json("execute_sql", sql=sql)


def find_tables(observation: str) -> list[tuple[str, list[str]]]:
    """(table, columns) pairs named in a DB observation; empty when none is recognised."""
    for pattern in _TABLE_PATTERNS:
        typed = pattern is _TABLE_PATTERNS[1]  # CREATE TABLE bodies hold "name TYPE" column definitions
        found = [(m.group(1).strip(), _split_columns(m.group(2), typed)) for m in pattern.finditer(observation)]
        if found:
            return found
    return []


def _split_columns(text: str, typed: bool) -> list[str]:
    columns = []
    for part in text.split(","):
        name = part.strip().split(" ")[0] if typed else part.strip()
        name = name.strip("`\"'")
        if name and name.upper() not in ("PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "CONSTRAINT"):
            columns.append(name)
    return columns


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------- flawed actions (SFT data)
def _typo(name: str, taken: set[str], rng: random.Random) -> str:
    """A misspelling of ``name`` that is no existing name (case-insensitively): drop, swap or double a letter."""
    for _ in range(50):
        chars = list(name)
        i = rng.randrange(len(chars))
        op = rng.choice(("drop", "swap", "double")) if len(chars) > 2 else "double"
        if op == "drop":
            del chars[max(i, 1)]
        elif op == "swap" and i < len(chars) - 1 and chars[i] != chars[i + 1]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars.insert(i, chars[i])
        typo = "".join(chars)
        if typo.lower() not in taken and "`" not in typo:
            return typo
    return name + "_x"


def task_schema(task: Task) -> list[tuple[str, list[str]]]:
    """``(table, columns)`` of a DB task: the schema the Assistant sees in its first observation."""
    return [(t["name"], [c[0] for c in t["columns"]]) for t in task.payload.get("tables", [])]


def flawed_sql_action(task: Task, next_action: str, rng: random.Random, *, near_miss: bool = True
                      ) -> tuple[str, str] | None:
    """``(kind, action)``: a plausible wrong action to play before ``next_action`` (the oracle's).

    ``kind`` is drawn from ``column``, ``table``, ``malformed``: with ``near_miss``, and when the
    oracle's next action is SQL, that SQL with one column or table name misspelled (the checker
    rejects it with a did-you-mean) or without its fenced code block; otherwise a probe query on a
    misspelled column or table of the schema, or a malformed one (no fence; before the final answer:
    the answer without ``Final Answer:``). Misspelled names are written with backticks: SQLite reads an
    unknown double-quoted name as a string literal, which would not fail. None when the task has no
    schema (the generic flawed action applies).
    """
    schema = task_schema(task)
    if not schema:
        return None
    parsed = GRAMMAR.parse(next_action) if near_miss else None
    sql: Any = parsed.args.get("sql") if parsed is not None and getattr(parsed, "tool", "") == "execute_sql" else None
    taken = {n.lower() for table, cols in schema for n in (table, *cols)}
    kind = rng.choice(("column", "table", "malformed"))
    table, columns = rng.choice(schema)
    if kind == "malformed":
        if sql:
            return kind, f"Action: Operation\n{sql}"
        if next_action.startswith("Action: Answer") and "Final Answer: " in next_action:
            return kind, next_action.replace("Final Answer: ", "", 1)
        return kind, f'Action: Operation\nSELECT * FROM "{table}" LIMIT 3'
    name = table if kind == "table" or not columns else rng.choice(columns)
    if sql:  # a near miss: the oracle's own statement with one of its names misspelled
        names = [n for t, cols in schema for n in ((t,) if kind == "table" else cols)]
        used = [n for n in names if re.search(rf"[\"`]{re.escape(n)}[\"`]", sql)]
        if used:
            name = rng.choice(used)
            typo = _typo(name, taken, rng)
            fixed = re.sub(rf"[\"`]{re.escape(name)}[\"`]", f"`{typo}`", sql, count=1)
            return kind, GRAMMAR.call("execute_sql", sql=fixed)
    typo = _typo(name, taken, rng)
    query = f"SELECT * FROM `{typo}` LIMIT 3" if name == table else f"SELECT `{typo}` FROM `{table}` LIMIT 3"
    return kind, GRAMMAR.call("execute_sql", sql=query)
