"""The CMAT memory: the last k turns (short-term) and a crash-safe reflection store (long-term).

Short-term memory (:class:`ShortTermMemory`) is the window of the last ``k`` turns that goes into
the Assistant's prompt.

Long-term memory (:class:`ReflectionStore`) is one SQLite file in WAL mode. After a failed episode
a reflection is written by a pluggable :data:`ReflectionWriter` (:func:`template_reflection` here,
or the Assistant's own language model: :class:`cmat_gym.agents.chat_agent.LMReflectionWriter`) and
stored with the task's split, domain, id and text. Later episodes retrieve the reflections of the
most similar tasks (BM25 over the task text and the reflection) and see them, rendered by
:func:`format_reflections`, in their first observation.

What a reflection may hold, and who may see it:

- A reflection is written from the instruction and the Assistant's dialogue only: what it saw and
  did, never the Task payload (gold SQL, expected answer, check script), the grader's details
  (``info["evaluation"]``) or hindsight labels. The loop also replaces each final-answer observation
  (grader feedback, which a domain may word as it likes) by a fixed line before the writer sees it.
  A reflection MAY still hold values the Assistant itself produced (a number it computed, an error
  message quoting it): on a retry of the same task those could be the answer. Hence the protocols:
- **single-trial** (the default everywhere): the loop never serves a task a reflection written on
  that same task (``exclude_task_id`` at retrieval); only other tasks' reflections are lessons.
- **multi-trial** (Reflexion-style retries, :func:`cmat_gym.evaluation.run_trials`): a retry of a
  task is handed the reflections of that task's earlier failed trials explicitly (reset option
  ``trial_reflections``), and reports success after k trials; it is a separate, named protocol.
- :func:`template_reflection` never quotes the submitted final answer.
- Every reflection carries its split and :meth:`ReflectionStore.search` is split-scoped: a search
  for ``split="train"`` never sees a test reflection and vice versa. Even the BM25 statistics (IDF,
  average length) are computed over the searched split only, so test text cannot shift training
  rankings.
- Evaluation can freeze the store (``mode="ro"``: every write raises :class:`PermissionError`) or
  start empty (``path=None``: a private in-memory store); :meth:`ReflectionStore.describe` says
  which, for the evaluation report.

Files: a store opens only a file that is a reflection store already (or a new, empty one). Anything
else (another SQLite database, a ``reflections`` table of another schema, another schema version,
a file that is not SQLite) is refused with :class:`ValueError` before a single byte is written.

Durability: ``synchronous=FULL`` in WAL mode means a reflection whose :meth:`~ReflectionStore.add`
returned is on disk; a writer killed mid-transaction leaves no partial row (SQLite rolls the
uncommitted WAL frames back on the next open). Several processes may write at once: each write is
one ``BEGIN IMMEDIATE`` transaction, and a busy database is waited for (``busy_timeout``, plus a
retry loop for the cases SQLite reports as busy without calling its busy handler).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Reflection",
    "ReflectionStore",
    "ReflectionWriter",
    "ShortTermMemory",
    "format_reflections",
    "format_trial_reflections",
    "template_reflection",
    "tokenize",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
"""How long one SQLite call waits for another process's write lock before reporting busy."""
RETRY_SECONDS = 120.0
"""How long a write keeps retrying a busy database in total before giving up."""
BM25_K1 = 1.5
BM25_B = 0.75

_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []

ReflectionWriter = Callable[[str, list[dict]], str]
"""Writes a reflection from ``(instruction, view)``: the view is the Assistant's dialogue with grader
feedback replaced (:meth:`cmat_gym.cmat.pettingzoo_env.raw_env.reflection_view`); it never sees the
Task payload."""


# ---------------------------------------------------------------------------- reflections
@dataclass(frozen=True)
class Reflection:
    """One stored reflection.

    Attributes:
        id: row id, increasing in commit order.
        split: the split of the task it was written for (``"train"`` / ``"test"``).
        domain: the task's domain, e.g. ``"db"``.
        task_id: the task's id (used by ``exclude_task_id``).
        task_text: the task's instruction, the text retrieval matches against.
        text: the reflection (gold-free; see the module docstring).
        created: unix time of the write (store metadata only; never put it in observations).
    """

    id: int
    split: str
    domain: str
    task_id: str
    task_text: str
    text: str
    created: float


_COLUMNS = "id, split, domain, task_id, task_text, text, created"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reflections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    split TEXT NOT NULL,
    domain TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_text TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reflections_split_domain ON reflections (split, domain);
"""
_SQLITE_HEADER = b"SQLite format 3\x00"
# (name, declared type, NOT NULL, primary key) of each column, as PRAGMA table_info reports them.
_EXPECTED_COLUMNS = (("id", "INTEGER", 0, 1), ("split", "TEXT", 1, 0), ("domain", "TEXT", 1, 0),
                     ("task_id", "TEXT", 1, 0), ("task_text", "TEXT", 1, 0), ("text", "TEXT", 1, 0),
                     ("created", "REAL", 1, 0))

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by do does for from how i in is it its me of on or that the this to was "
    "what when where which who whom whose why with you your".split())


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (letters and digits), without a few English stop words."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


@dataclass
class _Bm25Index:
    """An append-only BM25 index over one (split, domain) slice of the store."""

    doc_len: dict[int, int] = field(default_factory=dict)
    postings: dict[str, dict[int, int]] = field(default_factory=dict)
    total_len: int = 0

    def add(self, doc_id: int, tokens: list[str]) -> None:
        self.doc_len[doc_id] = len(tokens)
        self.total_len += len(tokens)
        for term, tf in Counter(tokens).items():
            self.postings.setdefault(term, {})[doc_id] = tf

    def scores(self, query: Iterable[str]) -> dict[int, float]:
        n = len(self.doc_len)
        if n == 0:
            return {}
        avgdl = self.total_len / n or 1.0
        out: dict[int, float] = {}
        for term in sorted(set(query)):  # fixed order: the float sums are the same on every run
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for doc_id, tf in posting.items():
                norm = tf + BM25_K1 * (1.0 - BM25_B + BM25_B * self.doc_len[doc_id] / avgdl)
                out[doc_id] = out.get(doc_id, 0.0) + idf * tf * (BM25_K1 + 1.0) / norm
        return out


def _row_to_reflection(row: tuple[Any, ...]) -> Reflection:
    return Reflection(int(row[0]), row[1], row[2], row[3], row[4], row[5], float(row[6]))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class ReflectionStore:
    """A persistent, crash-safe, split-scoped store of reflections, searched with BM25.

    Args:
        path: the SQLite file (created with its schema if missing, in ``"rw"`` mode), or None for
            a private in-memory store that starts empty and is never persisted.
        mode: ``"rw"`` (read-write) or ``"ro"`` (frozen: searches work, every write raises
            :class:`PermissionError`; the file must exist).

    Usage::

        with ReflectionStore("runs/reflections.sqlite") as store:
            store.add(split=task.split, domain=task.domain, task_id=task.task_id,
                      task_text=task.instruction, text=template_reflection(task.instruction, traj))
            block = format_reflections(store.search(task.instruction, split=task.split, domain=task.domain))

    The store is safe to share between threads of one process, and any number of processes may
    open the same file at once. After ``fork`` a file-backed store reopens its connection in the
    child; pickling a store carries its path and mode (an in-memory store carries its rows).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, mode: str = "rw") -> None:
        if mode not in ("rw", "ro"):
            raise ValueError(f"Expects mode 'rw' or 'ro', actual {mode!r}")
        self.mode = mode
        self.path: Path | None = None if path is None else Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._indexes: dict[tuple[str, str | None], _Bm25Index] = {}
        self._indexed_upto = 0
        self._rows: dict[int, Reflection] = {}
        self._connect()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        if self.path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.executescript(_SCHEMA)
        elif self.mode == "ro":
            if not self.path.exists():
                raise FileNotFoundError(
                    f"Expects an existing reflection store to open read-only, actual: no file at {self.path}")
            if not self._probe():
                raise ValueError(f"Expects a reflection store, actual: {self.path} has no 'reflections' table")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        else:
            # Look before writing anything: WAL mode, the schema and user_version all modify the file.
            self._probe()
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._retry(lambda: self._init_file(conn))
        if self.mode == "ro":
            conn.execute("PRAGMA query_only = 1")  # belt and braces: SQLite itself refuses writes
        self._conn = conn

    def _probe(self) -> bool:
        """Whether ``self.path`` already holds a reflection store (False: no file, an empty file, or a
        SQLite database without any schema, which a store may take over).

        Reads only (a read-only connection), so a refused file is left byte-for-byte as it was.

        Raises:
            ValueError: the path is not a reflection store: a folder, not a SQLite file, a database
                with other tables, a ``reflections`` table of another schema, or another schema version.
        """
        path = self.path
        assert path is not None
        if not path.exists():
            return False
        if not path.is_file():
            raise ValueError(f"Expects a reflection store file, actual: {path} is not a file")
        with open(path, "rb") as handle:
            header = handle.read(100)
        if not header:
            return False  # an empty file (e.g. from mktemp): nothing to lose
        if not header.startswith(_SQLITE_HEADER):
            raise ValueError(f"Expects a reflection store (a SQLite file), actual: {path} is not a SQLite database; "
                             "refusing to touch it")
        # Even a read-only connection creates -wal and -shm files next to a WAL database that nobody has
        # open (byte 18 of the header is 2 in WAL mode). With no -wal file there is no open connection
        # and no unmerged write, so the main file alone is the database: read it as immutable.
        idle_wal = len(header) > 18 and header[18] == 2 and not Path(f"{path}-wal").exists()
        flags = "mode=ro&immutable=1" if idle_wal else "mode=ro"
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise ValueError(f"Expects a reflection store, actual: cannot read {path} ({exc})") from None
        try:
            objects, columns, version = self._retry(lambda: (
                conn.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall(),
                conn.execute("PRAGMA table_info(reflections)").fetchall(),
                conn.execute("PRAGMA user_version").fetchone()[0]))
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"Expects a reflection store, actual: {path} is not a readable SQLite database "
                             f"({exc})") from None
        finally:
            conn.close()
        foreign = sorted(name for kind, name, table in objects
                         if not (table == "reflections" and kind in ("table", "index")))
        if foreign:
            raise ValueError(f"Expects a reflection store (only a 'reflections' table), actual: {path} also holds "
                             f"{', '.join(foreign)}; refusing to modify another program's database")
        if not columns:
            if version != 0:
                raise ValueError(f"Expects a reflection store, actual: {path} is a database with user_version "
                                 f"{version} and no 'reflections' table; refusing to modify it")
            return False
        found = tuple((str(c[1]), str(c[2]).upper(), int(c[3]), int(c[5])) for c in columns)
        if found != _EXPECTED_COLUMNS:
            raise ValueError(f"Expects a reflection store, actual: the 'reflections' table of {path} has columns "
                             f"({', '.join(c[0] + ' ' + c[1] for c in found)}), not this store's schema; "
                             "refusing to modify it")
        if version not in (0, SCHEMA_VERSION):
            raise ValueError(f"Expects a reflection store of schema version {SCHEMA_VERSION}, actual: {path} has "
                             f"version {version}; refusing to modify it")
        return True

    @staticmethod
    def _init_file(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"database is locked (journal_mode is {mode}, expects wal)")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(f"Expects reflection store schema {SCHEMA_VERSION}, actual {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _retry(fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Expects an open ReflectionStore, actual: used after close()")
        if self.path is not None and os.getpid() != self._pid:
            # A SQLite connection must not be used (nor closed) across fork(): the child opens its
            # own and keeps the inherited one alive, untouched, so it never finalises the parent's.
            _INHERITED_CONNECTIONS.append(self._conn)
            self._pid = os.getpid()
            self._connect()
        return self._conn  # type: ignore[return-value]

    # ------------------------------------------------------------------ writes
    def add(self, *, split: str, domain: str, task_id: str, task_text: str, text: str) -> int:
        """Store one reflection in one durable transaction and return its id.

        Raises:
            PermissionError: the store is frozen (``mode="ro"``).
        """
        if self.mode == "ro":
            raise PermissionError(
                f"Expects a writable reflection store, actual: {self._where()} is frozen (mode='ro'); "
                "open it with mode='rw' to add reflections")
        for name, value in (("split", split), ("domain", domain), ("task_id", task_id)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Expects {name} to be a non-empty str, actual {value!r}")
        for name, value in (("task_text", task_text), ("text", text)):
            if not isinstance(value, str):
                raise TypeError(f"Expects {name} to be a str, actual {type(value).__name__}")
        created = time.time()

        def write() -> int:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no lock upgrade deadlock
            try:
                cursor = conn.execute(
                    "INSERT INTO reflections (split, domain, task_id, task_text, text, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (split, domain, task_id, task_text, text, created))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return int(cursor.lastrowid)  # type: ignore[arg-type]

        with self._lock:
            return int(self._retry(write))

    # ------------------------------------------------------------------ reads
    def _refresh(self) -> None:
        """Index the rows committed since the last call (the table is append-only)."""
        rows = self._retry(lambda: self._db().execute(
            f"SELECT {_COLUMNS} FROM reflections WHERE id > ? ORDER BY id", (self._indexed_upto,)).fetchall())
        for row in rows:
            ref = _row_to_reflection(row)
            tokens = tokenize(f"{ref.task_text}\n{ref.text}")
            for key in ((ref.split, None), (ref.split, ref.domain)):
                self._indexes.setdefault(key, _Bm25Index()).add(ref.id, tokens)
            self._rows[ref.id] = ref
            self._indexed_upto = ref.id

    def search(self, query: str, *, split: str, domain: str | None = None, k: int = 3,
               exclude_task_id: str | None = None) -> list[Reflection]:
        """The ``k`` reflections of ``split`` (and ``domain``, if given) most similar to ``query``.

        Ranked by BM25 (k1=1.5, b=0.75) over each reflection's task text and text, with statistics
        from the searched slice only; ties go to the lower id. Reflections sharing no word with the
        query are not returned. ``exclude_task_id`` drops that task's own reflections (the CMAT loop
        always passes the current task: the single-trial protocol).
        """
        if k <= 0:
            return []
        with self._lock:
            self._refresh()
            index = self._indexes.get((split, domain))
            if index is None:
                return []
            scores = index.scores(tokenize(query))
            ranked = sorted(((-s, i) for i, s in scores.items() if s > 0.0))
            out = []
            for _, doc_id in ranked:
                ref = self._rows[doc_id]
                if exclude_task_id is not None and ref.task_id == exclude_task_id:
                    continue
                out.append(ref)
                if len(out) == k:
                    break
            return out

    def all(self, split: str | None = None) -> list[Reflection]:
        """Every reflection (of ``split``, if given), oldest first."""
        where, args = ("WHERE split = ?", (split,)) if split is not None else ("", ())
        with self._lock:
            rows = self._retry(lambda: self._db().execute(
                f"SELECT {_COLUMNS} FROM reflections {where} ORDER BY id", args).fetchall())
        return [_row_to_reflection(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many reflections each split holds."""
        with self._lock:
            rows = self._retry(lambda: self._db().execute(
                "SELECT split, count(*) FROM reflections GROUP BY split ORDER BY split").fetchall())
        return {split: int(n) for split, n in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(self._retry(lambda: self._db().execute("SELECT count(*) FROM reflections").fetchone()[0]))

    def __iter__(self) -> Iterator[Reflection]:
        return iter(self.all())

    # ------------------------------------------------------------------ reporting
    def _where(self) -> str:
        return "an in-memory store" if self.path is None else str(self.path)

    def describe(self, split: str | None = None) -> str:
        """One line for evaluation reports: frozen / read-write / empty, where, and how many.

        E.g. ``"reflection memory: frozen (read-only) runs/r.sqlite, 12 reflections in split 'test'"``
        or ``"reflection memory: empty (in-memory, not persisted)"``.
        """
        counts = self.counts()
        n = counts.get(split, 0) if split is not None else sum(counts.values())
        state = "frozen (read-only)" if self.mode == "ro" else "read-write"
        if self.path is None:
            if not counts:
                ro = ", read-only" if self.mode == "ro" else ""
                return f"reflection memory: empty (in-memory{ro}, not persisted)"
            where = f"{state} in-memory (not persisted)"
        else:
            where = f"{state} {self.path}"
        if split is not None:
            amount = f"{n} reflection{'s' if n != 1 else ''} in split {split!r}"
        elif counts:
            per_split = ", ".join(f"{s}: {c}" for s, c in counts.items())
            amount = f"{n} reflection{'s' if n != 1 else ''} ({per_split})"
        else:
            amount = "empty"
        return f"reflection memory: {where}, {amount}"

    def __repr__(self) -> str:
        return f"ReflectionStore({None if self.path is None else str(self.path)!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                if os.getpid() == self._pid:  # a forked child never touches its parent's connection
                    self._conn.close()
                self._conn = None

    def __enter__(self) -> ReflectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        rows = None
        if self.path is None:
            rows = [(r.split, r.domain, r.task_id, r.task_text, r.text, r.created) for r in self.all()]
        return {"path": self.path, "mode": self.mode, "rows": rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], mode="rw" if state["rows"] else state["mode"])  # type: ignore[misc]
        if state["rows"]:
            self._conn.executemany(  # type: ignore[union-attr]
                "INSERT INTO reflections (split, domain, task_id, task_text, text, created) VALUES (?, ?, ?, ?, ?, ?)",
                state["rows"])
            if state["mode"] == "ro":
                self.mode = "ro"
                self._conn.execute("PRAGMA query_only = 1")  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- short-term memory
class ShortTermMemory:
    """The last ``k`` turns of the dialogue, as ``{"role", "content"}`` dicts (oldest first)."""

    def __init__(self, k: int = 6) -> None:
        if k < 0:
            raise ValueError(f"Expects k >= 0, actual {k}")
        self.k = k
        self._turns: deque[dict[str, str]] = deque(maxlen=k)

    def add(self, role: str, content: str) -> None:
        """Append a turn; the oldest one drops out once there are more than ``k``."""
        self._turns.append({"role": str(role), "content": str(content)})

    def turns(self) -> list[dict[str, str]]:
        """A copy of the kept turns, oldest first."""
        return [dict(t) for t in self._turns]

    def clear(self) -> None:
        """Forget every turn (start of an episode)."""
        self._turns.clear()

    def render(self) -> str:
        """The kept turns as a transcript (``--- ROLE ---`` headers), "" when empty."""
        return "\n".join(f"--- {t['role'].upper()} ---\n{t['content']}" for t in self._turns)

    def __len__(self) -> int:
        return len(self._turns)


# ---------------------------------------------------------------------------- reflection writing
_MAX_INSTRUCTION = 300
_MAX_ACTION = 160
_MAX_ERROR = 200
_MAX_ERRORS = 3

# (pattern over the error texts, lesson). Generic, domain-agnostic advice; never task-specific data.
_LESSONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # SQLite says "no such column: x"; the rule checker says "no column 'x' in T" / "no table 'x'"
    (re.compile(r"no (such )?(table|column)\b|unknown (table|column)", re.I),
     "Check table and column names (e.g. SELECT * FROM <table> LIMIT 3) before relying on them."),
    (re.compile(r"no such file|not found|does not exist|doesn't exist", re.I),
     "Check that the names you use exist (list or look them up first) before using them."),
    (re.compile(r"syntax|unexpected|near \"", re.I),
     "Write one simple, syntactically complete statement per action and build it up step by step."),
    (re.compile(r"no action found|unknown action|empty action|not valid json|must be followed by|tool call", re.I),
     "Follow the required action format exactly (one action per reply)."),
    (re.compile(r"ambiguous", re.I),
     "Qualify column names with their table when joining."),
    (re.compile(r"permission|denied|not allowed|read-only", re.I),
     "Do not try operations the environment forbids; find another way to get the information."),
    (re.compile(r"timeout|timed out|too long", re.I),
     "Prefer small, fast queries and commands; add limits and filters."),
)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def template_reflection(instruction: str, trajectory: list[dict], *, error_summary: str | None = None) -> str:
    """A gold-free reflection on a failed episode, from the instruction and the trajectory only.

    It states what was asked, which actions failed and with what error (observations that start
    with ``"Error"``), how the episode ended, and generic lessons. It never sees the Task payload
    and never quotes the submitted final answer, so it cannot leak a gold answer.

    Args:
        instruction: what the User asked.
        trajectory: ``{"role", "content"}`` turns as the env records them (assistant actions, each
            followed by the observation it produced as a ``"user"`` turn).
        error_summary: an optional gold-free note to add (e.g. the Checker's last feedback).
    """
    failures: list[tuple[str, str]] = []
    answered = incorrect = False
    previous_action: str | None = None
    for turn in trajectory:
        role, content = str(turn.get("role", "")), str(turn.get("content", ""))
        if role == "assistant":
            previous_action = content
            continue
        if previous_action is None:
            continue  # the first observation: instruction and context
        stripped = content.lstrip()
        if stripped.startswith("Error"):
            failure = (_one_line(previous_action, _MAX_ACTION), _one_line(stripped, _MAX_ERROR))
            if failure not in failures:
                failures.append(failure)
        elif stripped.startswith("Final answer received"):
            answered = True
            incorrect = "incorrect" in stripped.split(".")[0]
        previous_action = None

    lines = [f"Task: {_one_line(instruction, _MAX_INSTRUCTION)}"]
    if failures:
        lines.append("Failed actions:")
        for action, error in failures[:_MAX_ERRORS]:
            lines.append(f"  {action} -> {error}")
        if len(failures) > _MAX_ERRORS:
            lines.append(f"  ... and {len(failures) - _MAX_ERRORS} more failed action(s).")
    if answered:
        outcome = "The final answer was judged incorrect." if incorrect else "The final answer did not solve the task."
    else:
        outcome = "The episode ended without a final answer (ran out of rounds)."
    lines.append(f"Outcome: {outcome}")
    if error_summary:
        lines.append(f"Note: {_one_line(error_summary, _MAX_ERROR)}")

    error_text = "\n".join(e for _, e in failures) + "\n" + (error_summary or "")
    lessons = [lesson for pattern, lesson in _LESSONS if pattern.search(error_text)]
    if not answered:
        lessons.append("Keep an eye on the round budget: give the final answer before it runs out.")
    if answered or not lessons:
        lessons.append("Verify the result answers exactly what was asked (columns, units, count, order) "
                       "before giving the final answer.")
    lines.append("Lessons: " + " ".join(lessons))
    return "\n".join(lines)


REFLECTIONS_HEADING = "Lessons from earlier attempts on similar tasks:"
TRIAL_REFLECTIONS_HEADING = "Reflections on your earlier attempts at this task:"


def _bullets(heading: str, texts: Iterable[str]) -> str:
    items = [f"- {text.strip().replace(chr(10), chr(10) + '  ')}" for text in texts]
    return f"{heading}\n" + "\n".join(items) if items else ""


def format_reflections(reflections: list[Reflection]) -> str:
    """The block of other tasks' reflections placed in an episode's first observation; "" when none."""
    return _bullets(REFLECTIONS_HEADING, (ref.text for ref in reflections))


def format_trial_reflections(texts: list[str]) -> str:
    """The block of a multi-trial retry's first observation: the reflections written after the same
    task's earlier failed trials, oldest first; "" when none."""
    return _bullets(TRIAL_REFLECTIONS_HEADING, texts)
