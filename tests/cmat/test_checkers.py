"""Checkers: the verdict text form and its lenient parser, the DB rule checker on hand-written good and
bad actions (gold-free, dry runs that leave the database as it was), the LLM, reward-model and null
checkers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from cmat_gym.cmat.checkers import (
    LLMChecker,
    NoChecker,
    RewardModelChecker,
    Verdict,
    make_checker,
    parse_verdict,
    public_task,
)
from cmat_gym.core.actions import ParsedAction
from cmat_gym.core.task import Task
from cmat_gym.domains.db.checker import DBHooks, DBRuleChecker, dry_run, has_top_level_where, task_intent
from cmat_gym.domains.db.env import GRAMMAR, DBEnv

TABLES = [
    {"name": "customers", "columns": [["id", "INTEGER"], ["name", "TEXT"], ["city", "TEXT"]],
     "rows": [[1, "Ann", "Paris"], [2, "Bob", "Oslo"], [3, "Cid", "Paris"]], "primary_key": "id"},
    {"name": "orders", "columns": [["id", "INTEGER"], ["customer_id", "INTEGER"], ["total", "REAL"]],
     "rows": [[1, 1, 9.5], [2, 1, 20.0], [3, 2, 5.0]], "primary_key": "id"},
]
CONTEXT = "Tables: customers(id, name, city), orders(id, customer_id, total)."


def make_task(instruction: str, kind: str = "counting") -> Task:
    payload = {"kind": kind, "tables": TABLES, "gold_sql": [], "label": ["2"], "answer_md5": None,
               "target_table": "customers"}
    return Task("db", f"t/{kind}", instruction, CONTEXT, payload)


QUESTION = make_task("How many customers live in Paris?")
CHANGE = make_task("Update the city of Bob to Rome.", kind="UPDATE")


@pytest.fixture
def env() -> Iterator[DBEnv]:
    env = DBEnv(tasks=[QUESTION, CHANGE])
    env.reset(options={"task_index": 0})
    yield env
    env.close()


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def review(env: DBEnv, task: Task, action: str, history: list[dict] | None = None) -> Verdict:
    return DBRuleChecker().review(public_task(task), history or [], action, env)


def rows(env: DBEnv) -> dict[str, list[tuple]]:
    return {t: env.sandbox.table_rows(t) for t in env.sandbox.table_names()}


# ---------------------------------------------------------------------------- verdict text
def test_verdict_text_round_trip() -> None:
    for verdict in (Verdict(True, "", 0.9), Verdict(False, "no table 'x'", 0.1), Verdict(True, "", None),
                    Verdict(False, "bad", None), Verdict(True, "dry run: 3 rows affected", 0.9)):
        assert parse_verdict(verdict.to_text()) == verdict
    assert Verdict(True, "", 0.9).to_text() == "APPROVE [score=0.90]"
    assert Verdict(False, "use WHERE", 0.1).to_text() == "REJECT: use WHERE [score=0.10]"


@pytest.mark.parametrize("text, approve, feedback, score", [
    ("approve", True, "", None),
    ("**APPROVED** looks fine", True, "looks fine", None),
    ("LGTM score: 0.7", True, "", 0.7),
    ("Reject - the table is wrong. [score=1.4]", False, "the table is wrong.", 1.0),
    ("I would reject: no WHERE clause", False, "no WHERE clause", None),
    ('{"verdict": "reject", "feedback": "typo", "score": 0.2}', False, "typo", 0.2),
    ('```\n{"verdict": "approve"}\n```', True, "", None),
])
def test_parse_verdict_is_lenient(text: str, approve: bool, feedback: str, score: float | None) -> None:
    verdict = parse_verdict(text)
    assert verdict is not None
    assert (verdict.approve, verdict.feedback, verdict.score) == (approve, feedback, score)


@pytest.mark.parametrize("text", ["", "   ", "the action looks odd", '{"foo": 1}', None])
def test_parse_verdict_none_without_a_verdict(text: Any) -> None:
    assert parse_verdict(text) is None


# ---------------------------------------------------------------------------- the DB rule checker
def test_good_select_is_approved(env: DBEnv) -> None:
    verdict = review(env, QUESTION, op("SELECT COUNT(*) FROM customers WHERE city = 'Paris'"))
    assert verdict.approve and verdict.score is not None and verdict.score >= 0.5


def test_unknown_table_names_the_tables(env: DBEnv) -> None:
    verdict = review(env, QUESTION, op("SELECT * FROM customer"))
    assert not verdict.approve
    assert "no table 'customer'" in verdict.feedback
    assert "customers, orders" in verdict.feedback and "did you mean 'customers'" in verdict.feedback


def test_unknown_column_names_the_table_and_its_columns(env: DBEnv) -> None:
    verdict = review(env, QUESTION, op("SELECT nme FROM customers"))
    assert not verdict.approve
    assert "no column 'nme' in customers; columns: id, name, city" in verdict.feedback
    assert "did you mean 'name'" in verdict.feedback
    # Through an alias, in a join: sqlglot resolves the alias to the right table.
    verdict = review(env, QUESTION, op("SELECT o.totl FROM customers c JOIN orders o ON o.customer_id = c.id"))
    assert "no column 'totl' in orders; columns: id, customer_id, total" in verdict.feedback
    assert "did you mean 'total'" in verdict.feedback
    # MySQL syntax that sqlglot's sqlite dialect rejects still gets named tables (mysql fallback).
    verdict = review(env, QUESTION, op("SELECT nme FROM `customers` LIMIT 0, 1"))
    assert "no column 'nme' in customers" in verdict.feedback


@pytest.mark.parametrize("sql", [
    "INSERT INTO customers VALUES (9, 'Zed', 'Rome')",
    "UPDATE customers SET city = 'Rome' WHERE id = 2",
    "DELETE FROM orders WHERE id = 3",
    "CREATE TABLE notes (x TEXT)",
    "DROP TABLE orders",
    "ALTER TABLE customers ADD COLUMN age INTEGER",
])
def test_data_change_on_a_question_is_rejected(env: DBEnv, sql: str) -> None:
    before = rows(env)
    verdict = review(env, QUESTION, op(sql))
    assert not verdict.approve and "asks a question" in verdict.feedback
    assert rows(env) == before


@pytest.mark.parametrize("sql, words", [
    ("DELETE FROM orders", ["DELETE without a WHERE", "'orders'", "(3 rows)"]),
    ("UPDATE customers SET city = 'Rome'", ["UPDATE without a WHERE", "'customers'", "(3 rows)"]),
    ("UPDATE customers SET city = (SELECT city FROM customers WHERE id = 1)", ["UPDATE without a WHERE"]),
    ("DROP TABLE customers", ["DROP TABLE would delete the whole table 'customers'"]),
])
def test_destructive_statements_are_rejected_on_a_change_task(env: DBEnv, sql: str, words: list[str]) -> None:
    env.reset(options={"task_index": 1})
    before = rows(env)
    verdict = review(env, CHANGE, op(sql))
    assert not verdict.approve
    for word in words:
        assert word in verdict.feedback
    assert rows(env) == before


def test_good_change_is_approved_with_the_dry_run_count_and_not_applied(env: DBEnv) -> None:
    env.reset(options={"task_index": 1})
    before = rows(env)
    verdict = review(env, CHANGE, op("UPDATE customers SET city = 'Rome' WHERE name = 'Bob'"))
    assert verdict.approve and verdict.feedback == "dry run: 1 row affected"
    verdict = review(env, CHANGE, op("UPDATE customers SET city = 'Rome' WHERE name = 'Nobody'"))
    assert verdict.approve and "0 rows affected" in verdict.feedback and verdict.score < 0.5
    assert rows(env) == before


def test_dry_run_errors_are_reported(env: DBEnv) -> None:
    env.reset(options={"task_index": 1})
    verdict = review(env, CHANGE, op("INSERT INTO customers VALUES (1, 'Dup', 'Rome')"))
    assert not verdict.approve and verdict.feedback.startswith("dry run error:") and "UNIQUE" in verdict.feedback
    verdict = review(env, QUESTION, op("SELEC COUNT(*) FROM customers"))
    assert not verdict.approve and "syntax error" in verdict.feedback
    verdict = review(env, QUESTION, op("SELECT 1; SELECT 2"))
    assert not verdict.approve and "one SQL statement" in verdict.feedback


def test_malformed_action_is_rejected_with_the_parse_message(env: DBEnv) -> None:
    verdict = review(env, QUESTION, "I think I should look at the data first.")
    assert not verdict.approve and verdict.feedback.startswith("malformed action: No action found")
    assert "Action: Operation" in verdict.feedback


def test_final_answer_is_approved_scored_by_evidence(env: DBEnv) -> None:
    answer = 'Action: Answer\nFinal Answer: ["2"]'
    early = review(env, QUESTION, answer)
    assert early.approve and "before any successful query" in early.feedback
    history = [{"role": "assistant", "content": op("SELECT 1")}, {"role": "env", "content": "| 2 |"}]
    late = review(env, QUESTION, answer, history)
    assert late.approve and late.score > early.score
    change = review(env, CHANGE, answer, [{"role": "env", "content": "Query OK, 1 row affected."}])
    assert change.approve and change.score >= 0.9


def test_transaction_control_is_approved_and_never_dry_run(env: DBEnv) -> None:
    env.reset(options={"task_index": 1})
    assert review(env, CHANGE, op("BEGIN")).approve
    env.step(op("BEGIN"))
    env.step(op("UPDATE customers SET city = 'Rome' WHERE id = 2"))
    # A dry run inside the agent's own open transaction must keep both the transaction and its change.
    assert review(env, CHANGE, op("DELETE FROM orders WHERE id = 1")).approve
    assert review(env, CHANGE, op("ROLLBACK")).approve
    assert env.sandbox.conn.in_transaction
    assert ("Bob", "Rome") in [(r[1], r[2]) for r in env.sandbox.table_rows("customers")]
    assert len(env.sandbox.table_rows("orders")) == 3


def test_a_statement_already_in_the_statement_cache_is_still_classified(env: DBEnv) -> None:
    env.reset(options={"task_index": 1})
    sql = "DELETE FROM orders WHERE id = 3"
    env.step(op(sql))  # compiled and cached by the real run
    run = dry_run(env.sandbox, sql)
    assert run.statement == "DELETE" and run.table == "orders" and run.error is None


def test_the_checker_never_reads_the_payload(env: DBEnv) -> None:
    class Forbidden(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise AssertionError(f"the checker read payload[{key!r}]")

        def __iter__(self) -> Iterator[str]:
            raise AssertionError("the checker iterated the payload")

        def __len__(self) -> int:
            raise AssertionError("the checker measured the payload")

    sealed = Task("db", "sealed", QUESTION.instruction, QUESTION.context, Forbidden())
    checker = DBRuleChecker()
    for action in (op("SELECT * FROM customers"), op("DELETE FROM orders"), 'Action: Answer\nFinal Answer: ["2"]',
                   op("SELECT nme FROM customers"), "junk"):
        checker.review(sealed, [], action, env)


@pytest.mark.parametrize("instruction, intent", [
    ("How many customers live in Paris?", "question"),
    ("Name the least touchdowns for 11 points", "question"),
    ("Which Attendance is the highest one that has a Record of 15-28?", "change"),  # 'record': lenient
    ("Update the city of Bob to Rome.", "change"),
    ("Delete all orders below 10.", "change"),
    ("Insert 'Another Plant' into the table.", "change"),
    ("On 8 March 2007 the match result for Porto was 1-0, with an attendance of 41,000.", "unknown"),
])
def test_task_intent_from_the_instruction(instruction: str, intent: str) -> None:
    assert task_intent(instruction) == intent


@pytest.mark.parametrize("sql, expected", [
    ("DELETE FROM t WHERE id = 1", True),
    ("delete from t where id = 1", True),
    ("DELETE FROM t", False),
    ("UPDATE t SET a = (SELECT b FROM u WHERE u.id = 1)", False),
    ("UPDATE t SET a = 'WHERE'", False),
    ('UPDATE "WHERE" SET a = 1', False),
    ("UPDATE t SET a = 1 -- WHERE id = 1", False),
    ("WITH x AS (SELECT id FROM u WHERE v > 1) DELETE FROM t WHERE id IN (SELECT id FROM x)", True),
])
def test_top_level_where(sql: str, expected: bool) -> None:
    assert has_top_level_where(sql) is expected


def test_gold_actions_are_never_rejected(agentbench_db_path: Any) -> None:
    """Every oracle operation that runs without error in the raw env is approved (no false alarms)."""
    for tasks in ("procedural", str(agentbench_db_path)):
        env = DBEnv(tasks=tasks)
        checker = DBRuleChecker()
        for i in range(40):
            env.reset(options={"task_index": i})
            for action in DBEnv.oracle_actions(env.task)[:-1]:
                verdict = checker.review(public_task(env.task), [], action, env)
                observation = env.step(action)[0]
                if not observation.startswith("Error"):
                    assert verdict.approve, (env.task.instruction, action, verdict)
                else:
                    assert not verdict.approve
        env.close()


# ---------------------------------------------------------------------------- hindsight
def sql(text: str) -> ParsedAction:
    """The parsed operation running ``text`` (what the loop hands the hooks)."""
    parsed = GRAMMAR.parse(GRAMMAR.call("execute_sql", sql=text))
    assert isinstance(parsed, ParsedAction)
    return parsed


def test_hindsight_of_dry_runs(env: DBEnv) -> None:
    hooks = DBHooks()
    assert hooks.dry_run_ok(env, sql("SELECT * FROM customers")) is True
    assert hooks.dry_run_ok(env, sql("SELECT * FROM nowhere")) is False
    assert hooks.dry_run_ok(env, sql("DELETE FROM orders")) is False  # a question task: changing data is bad
    env.reset(options={"task_index": 1})
    assert hooks.dry_run_ok(env, sql("DELETE FROM orders")) is True  # runs fine on a change task
    assert hooks.dry_run_ok(env, sql("INSERT INTO customers VALUES (1, 'x', 'y')")) is False
    assert len(env.sandbox.table_rows("orders")) == 3
    assert "1 row affected (rolled back)" in hooks.dry_run_text(env, sql("DELETE FROM orders WHERE id = 1"))
    assert "returns 2 rows" in hooks.dry_run_text(env, sql("SELECT * FROM customers WHERE city = 'Paris'"))


# ---------------------------------------------------------------------------- other checkers
class ChatModel:
    """A stand-in for LMPolicy: records the batch and replies from a script."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.batches: list[list[list[dict[str, str]]]] = []

    def act_messages(self, batch: list[list[dict[str, str]]]) -> list[str]:
        self.batches.append(batch)
        return self.replies[: len(batch)]


def test_llm_checker_batches_and_parses() -> None:
    model = ChatModel(["REJECT: wrong table [score=0.2]", "APPROVE", "hmm, not sure"])
    checker = LLMChecker(model)
    from cmat_gym.cmat.checkers import ReviewRequest

    requests = [ReviewRequest(public_task(QUESTION), [], op(s)) for s in ("SELECT 1", "SELECT 2", "SELECT 3")]
    verdicts = checker.review_batch(requests)
    assert verdicts == [Verdict(False, "wrong table", 0.2), Verdict(True, "", None), Verdict(True, "", None)]
    assert len(model.batches) == 1 and len(model.batches[0]) == 3
    system, user = model.batches[0][0]
    assert system["role"] == "system" and "Checker" in system["content"]
    assert QUESTION.instruction in user["content"] and "SELECT 1" in user["content"]


def test_llm_checker_accepts_act_policies_and_callables() -> None:
    class TextPolicy:
        def act(self, prompts: list[str]) -> list[str]:
            return ["REJECT: no" for _ in prompts]

    assert not LLMChecker(TextPolicy()).review(QUESTION, [], op("SELECT 1")).approve
    assert LLMChecker(lambda prompt: "approve [score=0.6]").review(QUESTION, [], op("SELECT 1")).score == 0.6
    with pytest.raises(TypeError):
        LLMChecker(42)


def test_reward_model_checker_thresholds() -> None:
    class Model:
        def score(self, task_text: str, history: Any, action: str) -> float:
            return 0.8 if "SELECT" in action else 0.2

    checker = RewardModelChecker(Model(), threshold=0.5)
    assert checker.review(QUESTION, [], op("SELECT 1")) == Verdict(True, "", 0.8)
    verdict = checker.review(QUESTION, [], "junk")
    assert not verdict.approve and verdict.score == 0.2 and "0.20" in verdict.feedback


def test_no_checker_and_make_checker() -> None:
    assert NoChecker().review(QUESTION, [], "anything") == Verdict(True, "", None)
    assert isinstance(make_checker("rule", "db"), DBRuleChecker)
    assert isinstance(make_checker("none", "db"), NoChecker)
    with pytest.raises(ValueError, match="registered domain"):
        make_checker("rule", "no-such-domain")
    with pytest.raises(ValueError):
        make_checker("llm", "db")
    with pytest.raises(ValueError):
        make_checker("oracle", "db")


@pytest.mark.slow
def test_llm_checker_with_a_real_language_model() -> None:
    """LMPolicy (tiny random llama, CPU) as the critic inside the loop: any reply yields a verdict."""
    pytest.importorskip("torch")
    from cmat_gym.agents.lm_policy import LMPolicy
    from cmat_gym.cmat.wrapper import make_cmat

    checker = LLMChecker(LMPolicy.from_pretrained("tiny-random", max_new_tokens=8, seed=0))
    env = make_cmat("cmat/DB-v0", checker=checker)
    env.reset(seed=0)
    info = env.step(op("SELECT 1"))[4]
    assert info["checker_verdict"] in ("APPROVE", "REJECT") and len(checker.last_replies) == 1
