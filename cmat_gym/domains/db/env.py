"""cmat/DB-v0: answer questions about, and make changes to, a real SQL database."""

from __future__ import annotations

from typing import Any

from cmat_gym.core.actions import ANSWER, Arg, BlockProtocol, Grammar, ParsedAction, Tool
from cmat_gym.core.env import Evaluation, TextEnv
from cmat_gym.core.scoring import answer_overlap, answers_match
from cmat_gym.core.task import Task
from cmat_gym.domains.db.agentbench import load_dbbench
from cmat_gym.domains.db.backend import QueryResult, SQLiteSandbox, Table
from cmat_gym.domains.db.scoring import MUTATION_KINDS, row_diff_score

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


class DBEnv(TextEnv):
    """Answer a question about, or make a requested change to, a SQLite database.

    Each episode loads a fresh in-memory database (:class:`~cmat_gym.domains.db.backend.SQLiteSandbox`)
    with the task's tables. The Assistant runs one SQL statement per turn and sees the result as a
    database client prints it; it ends the episode by committing a final answer (for a change, the
    answer text is ignored and the table itself is graded).

    **Task format**: the first observation is the request, then the tables' names and columns.
    Procedural tasks (``tasks="procedural"``) are generated from the seed (unlimited, 8+ schema
    families, all AgentBench question kinds, difficulty 1-3, disjoint train/test splits); AgentBench
    dbbench files load with ``tasks="path/to/dev.jsonl"``.

    **Actions**: AgentBench's text protocol (``Action: Operation`` with a fenced ``sql`` block, or
    ``Action: Answer`` with ``Final Answer: [...]``) or a JSON tool call (``execute_sql`` with
    ``sql``, ``commit_final_answer`` with ``answers``). Malformed actions come back as an error
    observation, cost a round and change nothing.

    **Reward**: 0 until the final answer, then 1 if it is correct and 0 otherwise, graded as
    AgentBench grades (SELECT answers after normalisation, changes by AgentBench's table hash).
    ``info["dense_score"]`` holds a graded score (answer F1, or row-level table similarity).

    **Episode end**: ``terminated`` on a final answer; ``truncated`` after ``max_rounds``
    operations (default 20, as AgentBench).
    """

    domain = "db"
    grammar = GRAMMAR
    default_max_rounds = 20

    def __init__(self, *args: Any, statement_timeout_s: float = 2.0, max_result_rows: int = 50, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sandbox = SQLiteSandbox(timeout_s=statement_timeout_s, max_rows=max_result_rows)

    # ----------------------------------------------------------------- tasks
    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        from cmat_gym.domains.db.tasks import generate_task

        return generate_task(seed, split, difficulty)

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        from cmat_gym.domains.db.tasks import task_from_id

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
    def _setup(self, task: Task) -> None:
        self.sandbox.load(tables_of(task))

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
        payload = self.task.payload
        tables = [t["name"] for t in payload["tables"]]
        got = self.sandbox.tables_hash(tables)
        success = got is not None and got == payload.get("answer_md5")
        dense = 1.0 if success else self._change_similarity()
        return Evaluation(float(success), success, dense, {"kind": payload["kind"], "table_hash": got})

    def _change_similarity(self) -> float:
        """Row-level similarity of the changed table to the gold result (replays the gold SQL aside)."""
        payload = self.task.payload
        target = payload["target_table"]
        gold = SQLiteSandbox(timeout_s=self.sandbox.timeout_s)
        try:
            gold.load(tables_of(self.task))
            for sql in payload["gold_sql"]:
                gold.execute(sql)
            return row_diff_score(self.sandbox.table_rows(target), gold.table_rows(target))
        finally:
            gold.close()

    def _teardown(self) -> None:
        self.sandbox.close()


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
    header = [_cell(c) for c in result.columns]
    body = [[_cell(v) for v in row] for row in result.rows]
    # One format string per table (not one ljust per cell): this runs on every step.
    widths = [max(map(len, column)) for column in zip(header, *body, strict=True)]
    row_format = "| " + " | ".join([f"{{:<{w}}}" for w in widths]) + " |"
    rule = "+" + "+".join(["-" * (w + 2) for w in widths]) + "+"
    lines = [rule, row_format.format(*header), rule, *[row_format.format(*row) for row in body], rule]
    n = len(body)
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
