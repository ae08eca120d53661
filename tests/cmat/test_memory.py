"""The CMAT memory: reflection store (BM25 search, split isolation, frozen mode), short-term memory,
and the gold-free template reflection."""

from __future__ import annotations

import multiprocessing
import pickle
import warnings

import pytest

from cmat_gym.cmat.memory import (
    Reflection,
    ReflectionStore,
    ShortTermMemory,
    format_reflections,
    template_reflection,
    tokenize,
)
from cmat_gym.core.task import Task

TASKS = [
    ("train", "db", "db-train-1", "How many employees work in the sales department?"),
    ("train", "db", "db-train-2", "What is the average price of products in the books category?"),
    ("train", "db", "db-train-3", "List the names of customers who live in Paris."),
    ("train", "os", "os-train-1", "How many files in /var/log are larger than 1 MB?"),
    ("test", "db", "db-test-1", "How many employees work in the marketing department?"),
    ("test", "db", "db-test-2", "Which product in the toys category has the highest price?"),
]


def fill(store: ReflectionStore) -> dict[str, int]:
    ids = {}
    for split, domain, task_id, text in TASKS:
        ids[task_id] = store.add(split=split, domain=domain, task_id=task_id, task_text=text,
                                 text=f"Reflection on {task_id}: check names first.")
    return ids


@pytest.fixture
def store(tmp_path):
    with ReflectionStore(tmp_path / "reflections.sqlite") as s:
        fill(s)
        yield s


def test_add_returns_increasing_ids_and_all_lists_them(store):
    refs = store.all()
    assert [r.id for r in refs] == sorted(r.id for r in refs)
    assert len(store) == len(TASKS) == len(refs)
    assert all(isinstance(r, Reflection) for r in refs)
    assert {r.task_id for r in store.all("test")} == {"db-test-1", "db-test-2"}
    assert store.counts() == {"test": 2, "train": 4}


def test_similar_task_ranks_first(store):
    hits = store.search("How many employees are in the engineering department?", split="train")
    assert hits[0].task_id == "db-train-1"
    hits = store.search("average price of products in the garden category", split="train")
    assert hits[0].task_id == "db-train-2"
    hits = store.search("customers living in Paris", split="train", k=1)
    assert [h.task_id for h in hits] == ["db-train-3"]


def test_search_is_deterministic_with_ties_broken_by_id(tmp_path):
    with ReflectionStore(tmp_path / "r.sqlite") as s:
        ids = [s.add(split="train", domain="db", task_id=f"t{i}", task_text="same words here", text="same")
               for i in range(5)]
        for _ in range(3):
            assert [r.id for r in s.search("same words", split="train", k=5)] == ids


def test_no_shared_words_no_results_and_k(store):
    assert store.search("zebra quantum xylophone", split="train") == []
    assert store.search("", split="train") == []
    assert store.search("employees", split="train", k=0) == []
    assert len(store.search("check names first", split="train", k=2)) == 2


def test_split_isolation_both_ways(store):
    # The test-split reflection about employees in a department must never reach a train search
    # and vice versa, however well it matches.
    train_hits = store.search("How many employees work in the marketing department?", split="train", k=10)
    assert train_hits and all(r.split == "train" for r in train_hits)
    assert "db-test-1" not in {r.task_id for r in train_hits}
    test_hits = store.search("How many employees work in the sales department?", split="test", k=10)
    assert test_hits and all(r.split == "test" for r in test_hits)
    assert "db-train-1" not in {r.task_id for r in test_hits}
    assert store.search("employees", split="valid") == []


def test_split_isolation_extends_to_bm25_statistics(tmp_path):
    # Adding many test reflections must not change train scores (IDF is per split).
    with ReflectionStore(tmp_path / "r.sqlite") as s:
        s.add(split="train", domain="db", task_id="a", task_text="employees salary", text="x")
        s.add(split="train", domain="db", task_id="b", task_text="products price", text="y")
        before = [(r.id, r.task_id) for r in s.search("employees price", split="train", k=2)]
        for i in range(20):
            s.add(split="test", domain="db", task_id=f"t{i}", task_text="employees employees", text="z")
        after = [(r.id, r.task_id) for r in s.search("employees price", split="train", k=2)]
        assert before == after
        idx = s._indexes[("train", None)]
        assert len(idx.doc_len) == 2


def test_domain_filter(store):
    hits = store.search("How many files are larger", split="train", domain="os")
    assert [h.task_id for h in hits] == ["os-train-1"]
    hits = store.search("How many files are larger", split="train", domain="db", k=10)
    assert hits and all(h.domain == "db" for h in hits)
    assert store.search("How many files", split="train", domain="kg") == []


def test_exclude_task_id(store):
    query = "How many employees work in the marketing department?"
    assert store.search(query, split="test")[0].task_id == "db-test-1"
    hits = store.search(query, split="test", exclude_task_id="db-test-1", k=10)
    assert "db-test-1" not in {h.task_id for h in hits}


def test_read_only_refuses_writes_and_still_searches(tmp_path):
    path = tmp_path / "r.sqlite"
    with ReflectionStore(path) as s:
        fill(s)
    with ReflectionStore(path, mode="ro") as frozen:
        assert frozen.mode == "ro"
        with pytest.raises(PermissionError, match="frozen"):
            frozen.add(split="train", domain="db", task_id="x", task_text="t", text="r")
        assert frozen.search("employees sales department", split="train")[0].task_id == "db-train-1"
        assert len(frozen) == len(TASKS)
        with pytest.raises(Exception, match="readonly|read-only|query_only"):  # SQLite refuses too
            frozen._conn.execute("DELETE FROM reflections")
        assert frozen.describe("test") == f"reflection memory: frozen (read-only) {path}, 2 reflections in split 'test'"
    with ReflectionStore(path) as s:
        assert len(s) == len(TASKS)


def test_read_only_needs_an_existing_file_and_mode_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        ReflectionStore(tmp_path / "missing.sqlite", mode="ro")
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(ValueError, match="mode"):
        ReflectionStore(tmp_path / "r.sqlite", mode="w")


def test_in_memory_store_is_private_and_empty(tmp_path):
    a, b = ReflectionStore(None), ReflectionStore(None)
    assert a.describe() == "reflection memory: empty (in-memory, not persisted)"
    a.add(split="train", domain="db", task_id="t", task_text="employees", text="r")
    assert len(a) == 1 and len(b) == 0
    assert a.search("employees", split="train")[0].task_id == "t"
    assert "read-write in-memory" in a.describe()
    assert list(tmp_path.iterdir()) == []
    frozen = ReflectionStore(None, mode="ro")
    assert frozen.describe() == "reflection memory: empty (in-memory, read-only, not persisted)"
    with pytest.raises(PermissionError):
        frozen.add(split="train", domain="db", task_id="t", task_text="x", text="y")
    for s in (a, b, frozen):
        s.close()


def test_describe(tmp_path):
    path = tmp_path / "r.sqlite"
    with ReflectionStore(path) as s:
        assert s.describe() == f"reflection memory: read-write {path}, empty"
        fill(s)
        assert s.describe() == f"reflection memory: read-write {path}, 6 reflections (test: 2, train: 4)"
        assert s.describe("train").endswith("4 reflections in split 'train'")
        assert s.describe("valid").endswith("0 reflections in split 'valid'")


def test_persistence_across_reopen(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"
    with ReflectionStore(path) as s:
        ids = fill(s)
        before = s.all()
    with ReflectionStore(path) as s:
        assert s.all() == before
        new = s.add(split="train", domain="db", task_id="late", task_text="late task", text="late")
        assert new > max(ids.values())
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_search_sees_rows_written_by_another_handle(tmp_path):
    path = tmp_path / "r.sqlite"
    with ReflectionStore(path) as reader, ReflectionStore(path) as writer:
        assert reader.search("employees", split="train") == []
        writer.add(split="train", domain="db", task_id="t", task_text="employees", text="r")
        assert [r.task_id for r in reader.search("employees", split="train")] == ["t"]


def test_add_validates_and_close_is_idempotent(tmp_path):
    s = ReflectionStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="split"):
        s.add(split="", domain="db", task_id="t", task_text="x", text="y")
    with pytest.raises(TypeError, match="text"):
        s.add(split="train", domain="db", task_id="t", task_text="x", text=None)  # type: ignore[arg-type]
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="close"):
        s.add(split="train", domain="db", task_id="t", task_text="x", text="y")


def test_pickle_roundtrip(tmp_path):
    path = tmp_path / "r.sqlite"
    with ReflectionStore(path, mode="rw") as s:
        fill(s)
        clone = pickle.loads(pickle.dumps(s))
        assert clone.path == path and clone.mode == "rw" and len(clone) == len(TASKS)
        clone.close()
    mem = ReflectionStore(None)
    mem.add(split="train", domain="db", task_id="t", task_text="employees", text="r")
    clone = pickle.loads(pickle.dumps(mem))
    assert [r.task_id for r in clone.search("employees", split="train")] == ["t"]


def _add_in_child(store: ReflectionStore) -> None:
    store.add(split="train", domain="db", task_id="child", task_text="written after fork", text="r")
    store.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_store_survives_fork(tmp_path):
    with ReflectionStore(tmp_path / "r.sqlite") as store:
        store.add(split="train", domain="db", task_id="parent", task_text="before fork", text="r")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads alive (pytest's)
            child = multiprocessing.get_context("fork").Process(target=_add_in_child, args=(store,))
            child.start()
        child.join(30)
        assert child.exitcode == 0
        assert [r.task_id for r in store.all()] == ["parent", "child"]
        assert store.search("written after fork", split="train")[0].task_id == "child"
        store.add(split="train", domain="db", task_id="parent2", task_text="after", text="r")
        assert len(store) == 3


def test_tokenize():
    assert tokenize("How many Employees in the SALES_dept? 42") == ["many", "employees", "sales", "dept", "42"]


# ---------------------------------------------------------------------------- short-term memory
def test_short_term_memory_keeps_last_k():
    mem = ShortTermMemory(k=3)
    for i in range(5):
        mem.add("user" if i % 2 == 0 else "assistant", f"turn {i}")
    assert [t["content"] for t in mem.turns()] == ["turn 2", "turn 3", "turn 4"]
    assert len(mem) == 3
    mem.turns()[0]["content"] = "mutated"
    assert mem.turns()[0]["content"] == "turn 2"
    assert mem.render() == "--- USER ---\nturn 2\n--- ASSISTANT ---\nturn 3\n--- USER ---\nturn 4"
    mem.clear()
    assert mem.turns() == [] and mem.render() == ""
    assert ShortTermMemory().k == 6
    with pytest.raises(ValueError):
        ShortTermMemory(k=-1)


# ---------------------------------------------------------------------------- reflections
SECRET = "GOLD-7f3a91"


def failed_episode() -> tuple[Task, list[dict]]:
    task = Task(domain="db", task_id="db-test-9", instruction="How many employees work in sales?",
                context="Table employees(id, name, dept)",
                payload={"answer": [SECRET], "sql": f"SELECT '{SECRET}'"}, split="test")
    trajectory = [
        {"role": "user", "content": f"{task.instruction}\n\n{task.context}"},
        {"role": "assistant", "content": "Action: Operation\n```sql\nSELECT count(*) FROM staff\n```"},
        {"role": "user", "content": "Error: no such table: staff"},
        {"role": "assistant", "content": "Action: Operation\n```sql\nSELECT count(*) FROM employees WHERE dept = 'sales'\n```"},
        {"role": "user", "content": "[(3,)]"},
        {"role": "assistant", "content": "Action: Answer\nFinal Answer: [\"3\"]"},
        {"role": "user", "content": "Final answer received (incorrect). Score: 0."},
    ]
    return task, trajectory


def test_template_reflection_is_gold_free_and_mentions_errors():
    task, trajectory = failed_episode()
    text = template_reflection(task.instruction, trajectory)
    assert SECRET not in text
    assert "How many employees work in sales?" in text
    assert "no such table: staff" in text
    assert "SELECT count(*) FROM staff" in text
    assert "judged incorrect" in text
    assert "LIMIT 3" in text  # the lesson for unknown tables
    assert 'Final Answer: ["3"]' not in text  # never quotes the submitted answer


def test_template_reflection_without_final_answer_and_with_summary():
    trajectory = [
        {"role": "user", "content": "Count the rows."},
        {"role": "assistant", "content": "blah"},
        {"role": "user", "content": "Error: No action found. Use Action: Operation ..."},
        {"role": "assistant", "content": "blah"},
        {"role": "user", "content": "Error: No action found. Use Action: Operation ..."},
    ]
    text = template_reflection("Count the rows.", trajectory, error_summary="checker: rejected twice")
    assert text.count("No action found") == 1  # repeated failures are listed once
    assert "without a final answer" in text
    assert "action format" in text and "round budget" in text
    assert "checker: rejected twice" in text
    clean = template_reflection("Count the rows.", [{"role": "user", "content": "Count the rows."}])
    assert "Failed actions" not in clean and "Lessons:" in clean


def test_template_reflection_stored_and_formatted():
    task, trajectory = failed_episode()
    with ReflectionStore(None) as s:
        s.add(split=task.split, domain=task.domain, task_id=task.task_id, task_text=task.instruction,
              text=template_reflection(task.instruction, trajectory))
        hits = s.search("How many employees are in the marketing department?", split="test")
    block = format_reflections(hits)
    assert block.startswith("Lessons from earlier attempts on similar tasks:\n- Task: ")
    assert SECRET not in block
    assert "created" not in block and str(int(hits[0].created)) not in block
    assert format_reflections([]) == ""
