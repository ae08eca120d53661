"""Procedural OS-interaction tasks for ``cmat/OS-v0``: AgentBench-style shell tasks in a bubblewrap sandbox.

A task is named by ``os/{split}/d{difficulty}/{seed}`` and rebuilt from that name alone: every random
choice comes from :class:`~cmat_gym.core.rng.StableRandom` (no ``random``, no ``hash()``, no set
ordering) and no script reads the clock or ``$RANDOM``, so the same name gives the same task on every
machine.

What a task is made of
----------------------
* a **family** (:data:`FAMILIES`): ``files`` (find/count/size/permissions over a generated directory
  tree), ``text`` (grep/sed/awk/sort/uniq over generated logs and CSV files), ``processes`` (background
  processes with distinct names and arguments, some run by other users), ``users`` (users, groups,
  owners and modes of a shared tree) and ``scripting`` (files of integers to compute over, executable
  scripts to write and that a check runs on test inputs);
* a **kind**: ``"question"`` (the agent answers with a value) or ``"change"`` (the agent changes the
  state; a check script decides), both in every family at every difficulty;
* a **difficulty**: 1 = one step on a small flat directory or one small file (5-20 items); 2 = two
  conditions or a pipeline, a tree with subdirectories, a bigger file, decoys; 3 = several steps or
  requirements, larger data (two levels of subdirectories, several log files, decimals, other users).

Every value (names, words, extensions, levels, cities, users, groups, service names) comes from the pools
below, and every instruction names the paths and values it needs. Values are drawn so that the answer
is unambiguous and differs from plausible wrong answers; a candidate that fails is redrawn: rankings
never tie, counts are neither 0 nor the total, sizes and process arguments are distinct, thresholds lie
strictly between values, and decoys sit where a sloppy command would pick them up (``indexer-old`` next
to ``indexer``, ``.md`` files of bigger numbers next to the ``.txt`` ones, negative and 4-digit numbers
against a textual ``sort``, a top user by level that is not the top user overall).

The payload (JSON-serialisable, exactly these keys; never shown to the agent)
-------------------------------------------------------------------------------
* ``source`` = ``"procedural"``, ``family``, ``kind`` (``"question"`` | ``"change"``);
* ``init``: bash run as root with cwd ``/root`` (``run_script``) that builds the state. Files get exact
  sizes (a prefix of a text, written by bash's ``printf``), modes by ``chmod``, mtimes by
  ``touch -d 'YYYY-MM-DD 12:00:00'`` (noon, on days that never equal a threshold day: the answer does
  not depend on the time zone). Users and groups are appended to ``/etc/passwd``, ``shadow``, ``group``
  and ``gshadow`` with bash builtins exactly as ``useradd``/``groupadd`` write them (next free ids above
  999, user-private groups, locked passwords, homes); ``useradd`` costs 10-25 ms a call here;
* ``start``: ``processes`` tasks only, ``bash /root/.svc/launch.sh`` (written by ``init``), else None.
  The launcher starts every process (symlinks to ``sleep`` named like services, so ``ps``/``pgrep -x``
  show that name; ``setpriv`` for other users), waits until each has exec'd, writes the PID files,
  then creates :data:`START_READY_FILE`. :func:`prepare_sandbox` runs ``init`` and ``start`` and waits
  for that file: a question asked before it exists races with the processes' ``exec``;
* ``solution``: the oracle's commands, run one by one in the persistent shell; each exits 0;
* ``answer``: question tasks, the stripped output of the last solution command; else None;
* ``check``: change tasks, a bash script (``run_script``, after the episode, in the same sandbox) that
  exits 0 iff the state is right; else None. A check also fails when more was done than asked: files
  that must stay (same size and mode), processes that must keep running, group memberships that must
  be kept, other files' owners and modes. Process checks read ``/proc`` with builtins and count a
  zombie or a process with a fatal signal pending as gone, so they answer in milliseconds even right
  after a ``kill``;
* ``match``: how an answer compares with ``answer`` (:func:`answers_equal`): ``exact`` stripped string,
  ``integer`` value, ``float`` within 1e-2, or ``set`` of whitespace/comma-separated items.

How gold is computed
--------------------
Never by hand and never on the host: :func:`generate_task` runs ``init`` (+ ``start``) and the solution
in a module-level :class:`~cmat_gym.domains.os.backend.ShellSandbox` (created lazily, reset between
tasks, closed at interpreter exit, guarded by a lock). A question's answer is the sandbox's output; it
must also equal, under its ``match``, what the generator's own Python model of the state predicts
(else RuntimeError: a generator bug). A change task's check must fail on the initial state and pass
after the solution, or generation raises.

Splits
------
Train and test are disjoint **by construction** (:mod:`cmat_gym.core.procedural`): the split of an
instruction is a function of its text alone (``test`` iff ``blake2b(instruction) % 5 == 0``), and
``generate_task`` keeps the first candidate drawn from ``StableRandom("os", split, difficulty, seed,
attempt)`` whose instruction falls in the requested split. Instructions carry their paths, names and
numbers, so texts are varied and every variant occurs in both splits.

Measured
--------
:func:`benchmark` (60 tasks, 20 per difficulty, both splits) on this 2-core host while other test
suites ran on it (load average ~10): median generation time 56-65 ms per task, 90th percentile 0.17 s.
The slowest are ``processes`` tasks (a background launcher to wait for) and ``users`` tasks (a dozen
``chown``/``chmod`` calls); ``text`` and ``scripting`` questions take ~30 ms.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import math
import re
import shlex
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.procedural import check_task_args, first_in_split, make_task_id, parse_task_id
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import Task
from cmat_gym.domains.os.backend import ShellSandbox, require_bwrap

__all__ = ["CONTEXT", "FAMILIES", "KINDS", "MATCHES", "START_READY_FILE", "answers_equal", "benchmark",
           "generate_task", "prepare_sandbox", "task_from_id"]

CONTEXT = ("You are root in a Linux (Debian) bash shell; your home is /root. Run one command per turn; "
           "answer with answer(...) or finish when done.")
FAMILIES: tuple[str, ...] = ("files", "text", "processes", "users", "scripting")
KINDS: tuple[str, ...] = ("question", "change")
MATCHES: tuple[str, ...] = ("exact", "integer", "float", "set")
START_READY_FILE = "/run/.cmat-started"  # created by a task's launcher once all its processes run
FLOAT_TOLERANCE = 1e-2

# ====================================================================== pools
_DIRS = ("data", "projects", "archive", "docs", "reports", "media", "notes", "work", "inbox", "photos",
         "invoices", "research", "downloads", "music", "clients", "designs")
_DESTS = ("collected", "selected", "moved", "sorted", "keep", "export", "outbox", "vault")
_SUBDIRS = ("old", "new", "misc", "final", "shared", "assets", "images", "config", "lib", "tests", "2023",
            "2024", "q1", "q2", "drafts", "cache")
_STEMS = ("report", "notes", "budget", "summary", "invoice", "photo", "readme", "todo", "letter", "agenda",
          "plan", "index", "schedule", "result", "sample", "memo", "chart", "journal", "record", "ledger",
          "profile", "draft", "slides", "minutes", "contract", "receipt", "manual", "roster")
_EXTS = ("txt", "log", "csv", "md", "json", "py", "sh", "conf", "jpg", "png", "tmp", "bak", "xml", "yaml",
         "dat", "html")
_HIDDEN = (".env", ".history", ".secret", ".settings", ".token", ".lock", ".session", ".cookies")
_MODES = (0o600, 0o640, 0o700, 0o755, 0o750, 0o444, 0o400, 0o664)
_LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
_ACTIONS = ("login", "logout", "upload", "download", "delete", "update", "search", "export", "import",
            "share", "print", "sync")
_NEW_ACTIONS = ("signin", "signout", "fetch", "remove", "modify", "publish", "archive", "restore")
_LOG_DIRS = ("logs", "applogs", "audit", "monitoring")
_LOG_NAMES = ("app", "server", "auth", "api", "worker", "backup", "web", "queue")
_CSV_NAMES = ("sales", "orders", "payments", "purchases", "invoices", "refunds")
_CITIES = ("Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo", "Warsaw",
           "Athens", "Zurich", "Munich", "Lyon", "Porto", "Geneva")
_PRODUCTS = ("laptop", "phone", "tablet", "monitor", "keyboard", "mouse", "printer", "camera", "headset",
             "router", "speaker", "charger")
# At most 7 characters: `ps -o user` abbreviates longer names with a '+'.
_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
          "nina", "oscar", "peggy", "quentin", "rupert", "sybil", "trent", "ursula", "victor", "walter",
          "xena", "yusuf", "zoe")
_GROUPS = ("analysts", "designers", "editors", "auditors", "devops", "interns", "marketing", "research",
           "support", "finance", "testers", "writers", "sales", "legal", "qa", "ops")
_SHELLS = ("/bin/bash", "/bin/sh", "/usr/sbin/nologin", "/bin/dash")
_SERVICES = ("indexer", "mailer", "syncd", "crawler", "reporter", "watcher", "uploader", "scheduler",
             "notifier", "cleaner", "resizer", "exporter", "monitor", "collector", "archiver", "poller")
_TEAMS = ("shared", "team", "common", "public", "exchange", "collab", "depot", "studio")
_SURNAMES = ("Smith", "Jones", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore", "Taylor", "Martin",
             "Lee", "Walker", "Young", "King", "Wright", "Hill")
_SCRIPT_NAMES = ("greet", "sumargs", "report", "status", "addup", "maxof", "countargs", "flip", "tally",
                 "hello", "checkup", "calc", "banner", "total", "peak", "howmany")
_WORDS = ("hello", "world", "ready", "done", "build", "green", "deploy", "backup", "complete", "alpha",
          "beta", "status", "online", "setup", "finished", "welcome", "system", "check", "passed", "tests")
_NUM_NAMES = ("numbers", "values", "scores", "readings", "counts", "measures", "points", "totals")

_EPOCH = datetime.date(2022, 1, 1)
_SVC = "/root/.svc"
_START = f"bash {_SVC}/launch.sh"
# w PATH SIZE: a file of exactly SIZE bytes (<= 5760) of text lines. A prefix of one long string: bash's
# ${s//pattern/x} costs ~20 ms per 4 kB, a substring nothing.
_FILE_FN = ("X=$'The quick brown fox jumps over the lazy dog.\\n'; for _ in 1 2 3 4 5 6 7; do X=$X$X; done\n"
            "w() { printf '%s' \"${X:0:$2}\" > \"$1\"; }")
_SUM = "awk '{s += $1} END {print s}'"
_TOP = "sort | uniq -c | sort -rn | head -n 1 | awk '{print $2}'"


# ====================================================================== answers
def _as_int(text: str) -> int | None:
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    value = _as_float(text)
    return int(value) if value is not None and value.is_integer() else None


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _items(text: str) -> frozenset[str]:
    return frozenset(item for item in re.split(r"[\s,]+", text) if item)


def answers_equal(answer: str, gold: str, match: str) -> bool:
    """True when ``answer`` equals ``gold`` under the task's ``match`` rule (both are stripped first).

    ``exact``: the same string; ``integer``: the same integer value (``"12"``, ``"+12"``, ``"12.0"``);
    ``float``: numbers within 1e-2 of each other; ``set``: the same items, in any order, separated by
    whitespace and/or commas (duplicates ignored). An answer that does not parse never matches.
    """
    a, g = str(answer).strip(), str(gold).strip()
    if match == "exact":
        return a == g
    if match == "integer":
        x, y = _as_int(a), _as_int(g)
        return x is not None and x == y
    if match == "float":
        u, v = _as_float(a), _as_float(g)
        return u is not None and v is not None and abs(u - v) <= FLOAT_TOLERANCE + 1e-9
    if match == "set":
        return bool(_items(a)) and _items(a) == _items(g)
    raise ValueError(f"Expects match in {MATCHES}, actual {match!r}")


# ====================================================================== candidates
@dataclass
class _Candidate:
    """One task draft: what to say, how to build the state, the oracle and how to grade it."""

    family: str
    kind: str
    instruction: str
    init: str
    solution: list[str]
    match: str = "exact"
    expected: str | None = None  # questions: what the Python model of the state predicts
    check: str | None = None
    start: str | None = None
    variant: str = ""  # which template of the family (not in the payload; for tests and statistics)


def _question(family: str, instruction: str, init: str, solution: list[str], expected: object,
              match: str, start: str | None = None) -> _Candidate:
    return _Candidate(family, "question", instruction, init, solution, match, str(expected), None, start)


def _change(family: str, instruction: str, init: str, solution: list[str], conditions: Sequence[str],
            prelude: str = "", start: str | None = None) -> _Candidate:
    return _Candidate(family, "change", instruction, init, solution, "exact", None,
                      _check_script(conditions, prelude), start)


def _check_script(conditions: Sequence[str], prelude: str = "") -> str:
    """A check: every condition must hold (``cond || exit 1``), in order."""
    lines = [prelude.rstrip("\n")] if prelude else []
    lines += [f"{c} || exit 1" for c in conditions]
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def _md5(lines: Sequence[str]) -> str:
    return hashlib.md5(("\n".join(lines) + "\n").encode(), usedforsecurity=False).hexdigest()


def _content_is(path: str, lines: Sequence[str]) -> str:
    # `sed '$a\'` adds a final newline when it is missing: a file written with `printf` without one passes.
    return f"[ \"$(sed -e '$a\\' {path} 2>/dev/null | md5sum | cut -c1-32)\" = {_md5(lines)} ]"


def _write_cmd(path: str, lines: Sequence[str]) -> str:
    """A command that writes ``lines`` (one per line) to ``path``."""
    return "printf '%s\\n' " + " ".join(shlex.quote(line) for line in lines) + f" > {path}"


def _unique_top(counts: Mapping[str, int | float]) -> str | None:
    """The key with the largest value, or None when the largest value is shared (ambiguous)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _count(values: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _distinct_ints(rng: StableRandom, k: int, low: int, high: int) -> list[int]:
    """k distinct integers in [low, high], in draw order (membership set only, never iterated)."""
    seen: set[int] = set()
    out: list[int] = []
    while len(out) < k:
        x = rng.randint(low, high)
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _cut(rng: StableRandom, values: Sequence[int]) -> int | None:
    """A threshold strictly between two distinct values (None when all values are equal)."""
    distinct = sorted(dict.fromkeys(values))
    if len(distinct) < 2:
        return None
    i = rng.randint(1, len(distinct) - 1)
    lo, hi = distinct[i - 1], distinct[i]
    return None if hi - lo < 2 else rng.randint(lo + 1, hi - 1)


def _base_dir(rng: StableRandom) -> str:
    """A working directory: /root/<dir> or, half the time, /home/<user>/<dir> (more varied instructions)."""
    if rng.random() < 0.5:
        return f"/root/{rng.choice(_DIRS)}"
    return f"/home/{rng.choice(_USERS)}/{rng.choice(_DIRS)}"


def _day(offset: int) -> str:
    return (_EPOCH + datetime.timedelta(days=offset)).isoformat()


def _list(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


@dataclass
class _Account:
    name: str
    shell: str = "/bin/bash"
    groups: tuple[str, ...] = ()


# Accounts written the way useradd/groupadd write them (ids: the next free ones above 999 of this
# sandbox's /etc, user-private groups, locked passwords), with bash builtins only: useradd and groupadd
# cost 10-25 ms a call here (they fork nscd/sss_cache helpers), this well under a millisecond. /etc is
# a copy of the host's: should it already have one of our names, that entry is dropped first, so the
# task is the same on every host.
_ACCOUNT_FNS = r"""n=999
declare -A taken
for f in /etc/passwd /etc/group; do
  while IFS=: read -r name _ id _; do
    taken[$f:$name]=1
    if [[ $id =~ ^[0-9]+$ ]] && (( id >= 1000 && id < 60000 && id > n )); then n=$id; fi
  done < "$f"
done
new_group() {
  [[ -z ${taken[/etc/group:$1]} ]] || sed -i "/^$1:/d" /etc/group /etc/gshadow
  n=$((n + 1)); taken[/etc/group:$1]=1
  printf '%s:x:%d:%s\n' "$1" "$n" "$2" >> /etc/group
  printf '%s:!::%s\n' "$1" "$2" >> /etc/gshadow
}
new_user() {
  [[ -z ${taken[/etc/passwd:$1]} ]] || sed -i "/^$1:/d" /etc/passwd /etc/shadow
  new_group "$1" ""
  taken[/etc/passwd:$1]=1
  printf '%s:x:%d:%d::/home/%s:%s\n' "$1" "$n" "$n" "$1" "$2" >> /etc/passwd
  printf '%s:!:19000:0:99999:7:::\n' "$1" >> /etc/shadow
}"""


def _accounts_init(groups: Sequence[str], accounts: Sequence[_Account]) -> list[str]:
    """Init lines creating the users (each with a home it owns) and the groups with their members."""
    lines = [_ACCOUNT_FNS]
    lines += [f"new_user {a.name} {a.shell}" for a in accounts]
    for g in groups:
        lines.append(f"new_group {g} " + ",".join(a.name for a in accounts if g in a.groups))
    if accounts:
        lines.append("mkdir -p " + " ".join(f"/home/{a.name}" for a in accounts))
        lines += [f"chown {a.name}: /home/{a.name}" for a in accounts]
    return lines


# ====================================================================== variants
# The variants of each family, by (kind, difficulty): what _candidate draws from.
_VARIANTS: dict[str, dict[tuple[str, int], tuple[str, ...]]] = {
    "files": {
        ("question", 1): ("count_ext", "largest", "hidden", "empty", "bytes"),
        ("question", 2): ("count_ext", "bytes_ext", "newer", "big_ext", "exec"),
        ("question", 3): ("largest_ext", "busiest_dir", "newer_big", "old_bytes"),
        ("change", 1): ("delete_ext", "chmod", "rename"),
        ("change", 2): ("move_ext", "rename_ext", "delete_empty", "chmod_ext"),
        ("change", 3): ("copy_newer", "cleanup", "move_big"),
    },
    "text": {
        ("question", 1): ("level_count", "distinct_users", "city_count"),
        ("question", 2): ("top_user", "city_sum", "user_actions", "level_user"),
        ("question", 3): ("multi_top", "product_avg", "top_city", "multi_distinct"),
        ("change", 1): ("replace", "filter_level"),
        ("change", 2): ("users_sorted", "csv_filter_sort", "drop_level"),
        ("change", 3): ("per_user_counts", "merge_sorted", "city_totals"),
    },
    "processes": {
        ("question", 1): ("count_sleep", "name_by_arg"),
        ("question", 2): ("pidfile_name", "count_name", "max_sleep_arg"),
        ("question", 3): ("user_of", "count_user", "sum_user_args"),
        ("change", 1): ("kill_name",),
        ("change", 2): ("kill_all_name", "kill_pidfile", "kill_sleep_above"),
        ("change", 3): ("kill_user", "kill_below_list"),
    },
    "users": {
        ("question", 1): ("file_owner", "group_size", "login_shell", "file_mode"),
        ("question", 2): ("bash_users", "both_groups", "group_files"),
        ("question", 3): ("top_owner", "owned_group_writable", "members_owning"),
        ("change", 1): ("create_user", "add_to_group", "chown"),
        ("change", 2): ("own_mode", "new_group", "user_shell_group"),
        ("change", 3): ("transfer", "team_dir"),
    },
    "scripting": {
        ("question", 1): ("sum_file", "count_gt"),
        ("question", 2): ("max_dir", "sum_dir", "even_count"),
        ("question", 3): ("average", "best_file", "pair_products", "median"),
        ("change", 1): ("print_text",),
        ("change", 2): ("sum_args", "max_args", "count_args", "reverse_args"),
        ("change", 3): ("sum_file_script", "max_file_script", "count_ext_script"),
    },
}


# ====================================================================== family: files
@dataclass(frozen=True)
class _File:
    path: str
    size: int
    day: int  # days after 2022-01-01; the mtime is noon of that day
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @property
    def ext(self) -> str:
        return self.name.rsplit(".", 1)[1] if "." in self.name[1:] else ""


@dataclass
class _Tree:
    top: str
    dirs: list[str]
    files: list[_File]
    days: list[int]

    def exts(self) -> list[str]:
        return list(dict.fromkeys(f.ext for f in self.files if f.ext))

    def with_ext(self, ext: str) -> list[_File]:
        return [f for f in self.files if f.ext == ext]


def _unique_name(rng: StableRandom, used: set[str], ext: str) -> str:
    while True:
        stem = rng.choice(_STEMS)
        if rng.random() < 0.4:
            stem += f"_{rng.randint(1, 9)}"
        name = f"{stem}.{ext}"
        if name not in used:
            used.add(name)
            return name


def _make_tree(rng: StableRandom, d: int, *, top: str | None = None, hidden: int = 0, p_empty: float = 0.0,
               p_mode: float = 0.0) -> _Tree:
    """A directory tree: flat at d1 (5-9 files), 2-3 subdirectories at d2, two levels at d3.

    Basenames are unique across the tree and non-empty sizes are distinct, so "the largest" never ties
    and moving files into one folder never collides.
    """
    top = top or _base_dir(rng)
    if d == 1:
        dirs, n = [top], rng.randint(5, 9)
    elif d == 2:
        dirs, n = [top] + [f"{top}/{s}" for s in rng.sample(_SUBDIRS, rng.randint(2, 3))], rng.randint(10, 16)
    else:
        names = rng.sample(_SUBDIRS, 6)
        subs = [f"{top}/{s}" for s in names[:rng.randint(3, 4)]]
        dirs, n = [top, *subs, f"{subs[0]}/{names[4]}", f"{subs[1]}/{names[5]}"], rng.randint(18, 28)
    exts = rng.sample(_EXTS, 3 if d == 1 else 4)
    # Days at least 4 apart (a threshold day always fits between two), in 2022-2024.
    days = sorted(4 * x for x in _distinct_ints(rng, rng.randint(3, 5), 0, 273))
    used_names: set[str] = set()
    used_sizes: set[int] = set()

    def size() -> int:
        while True:
            s = rng.randint(1, 4000)
            if s not in used_sizes:
                used_sizes.add(s)
                return s

    files = []
    for _ in range(n):
        name = _unique_name(rng, used_names, rng.choice(exts))
        mode = rng.choice(_MODES) if rng.random() < p_mode else 0o644
        files.append(_File(f"{rng.choice(dirs)}/{name}", 0 if rng.random() < p_empty else size(),
                           rng.choice(days), mode))
    for name in rng.sample(_HIDDEN, hidden):
        files.append(_File(f"{top}/{name}", size(), rng.choice(days)))
    return _Tree(top, dirs, files, days)


def _tree_init(dirs: Sequence[str], files: Sequence[_File], extra: Sequence[str] = ()) -> str:
    """Bash that builds the files: exact sizes, modes, owners, and mtimes at noon of fixed days."""
    lines = ["set -e", "umask 022", _FILE_FN, "mkdir -p " + " ".join(dirs), *extra]
    lines += [f"w {f.path} {f.size}" for f in files]
    # One exec per owner, group, mode and day, not per file: a process costs ~3 ms here.
    by_owner: dict[str, list[str]] = {}
    by_group: dict[str, list[str]] = {}
    by_mode: dict[int, list[str]] = {}
    by_day: dict[int, list[str]] = {}
    for f in files:
        if f.owner != "root":
            by_owner.setdefault(f.owner, []).append(f.path)  # `chown u:` also sets u's own group
        if f.group not in ("root", f.owner):
            by_group.setdefault(f.group, []).append(f.path)
        by_mode.setdefault(f.mode, []).append(f.path)
        by_day.setdefault(f.day, []).append(f.path)
    lines += [f"chown {owner}: " + " ".join(paths) for owner, paths in by_owner.items()]
    lines += [f"chgrp {group} " + " ".join(paths) for group, paths in by_group.items()]
    lines += [f"chmod {mode:o} " + " ".join(paths) for mode, paths in by_mode.items()]
    # Noon, and thresholds never fall on a file's day: the same answer in every time zone.
    lines += [f"touch -d '{_day(day)} 12:00:00' " + " ".join(paths) for day, paths in by_day.items()]
    return "\n".join(lines) + "\n"


def _stat_is(fmt: str, rows: Sequence[tuple[str, str]]) -> list[str]:
    """One condition, one `stat` for all paths (a check runs in milliseconds): every path exists and
    shows the expected ``fmt`` fields. No condition when there are no rows."""
    if not rows:
        return []
    paths = " ".join(path for path, _ in rows)
    want = "\n".join(f"{path} {value}" for path, value in rows)
    return [f"[ \"$(stat -c '%n {fmt}' {paths} 2>&1)\" = '{want}' ]"]


def _intact(files: Sequence[_File]) -> list[str]:
    """The files are still there, with the same size and mode."""
    return _stat_is("%s %a", [(f.path, f"{f.size} {f.mode:o}") for f in files])


def _gone(files: Sequence[_File]) -> list[str]:
    return [f"[ ! -e {f.path} ]" for f in files]


def _files(rng: StableRandom, d: int, kind: str, v: str) -> _Candidate | None:
    tree = _make_tree(rng, d, hidden=rng.randint(1, 3) if v == "hidden" else 0,
                      p_empty=0.2 if v in ("empty", "delete_empty", "cleanup") else 0.0,
                      p_mode=0.5 if v == "exec" else 0.0)
    top, files, n = tree.top, tree.files, len(tree.files)
    init = _tree_init(tree.dirs, files)
    ext = rng.choice(tree.exts())
    ext_files = tree.with_ext(ext)
    k = len(ext_files)
    below = f"{top} (subdirectories included)"

    def ask(text: str, command: str, expected: object, match: str = "integer") -> _Candidate:
        return _question("files", text, init, [command], expected, match)

    def change(text: str, commands: list[str], conditions: Sequence[str]) -> _Candidate:
        return _change("files", text, init, commands, conditions)

    if v == "count_ext":
        top_level = sum(f.parent == top for f in ext_files)
        if not 0 < k < n or (d == 2 and top_level == k):
            return None
        if d == 1:
            return ask(f"How many files with the extension .{ext} are there in {top}?",
                       f"find {top} -maxdepth 1 -type f -name '*.{ext}' | wc -l", k)
        return ask(f"How many .{ext} files are there in {top}, subdirectories included?",
                   f"find {top} -type f -name '*.{ext}' | wc -l", k)
    if v == "largest":
        best = max(files, key=lambda f: f.size)
        return ask(f"What is the name of the largest file in {top}? Answer with the file name only.",
                   f"ls -S {top} | head -n 1", best.name, "exact")
    if v == "hidden":
        count = sum(f.name.startswith(".") for f in files)
        return ask(f"How many hidden files (names starting with a dot) are there in {top}?",
                   f"find {top} -maxdepth 1 -type f -name '.*' | wc -l", count)
    if v == "empty":
        count = sum(f.size == 0 for f in files)
        if not 0 < count < n:
            return None
        return ask(f"How many empty files (size 0 bytes) are there in {top}?",
                   f"find {top} -maxdepth 1 -type f -empty | wc -l", count)
    if v == "bytes":
        return ask(f"What is the total size in bytes of all the files in {top}?", f"cat {top}/* | wc -c",
                   sum(f.size for f in files))
    if v == "bytes_ext":
        if k < 2:
            return None
        return ask(f"What is the total size in bytes of all the .{ext} files in {top}, subdirectories "
                   "included?", f"find {top} -type f -name '*.{ext}' -printf '%s\\n' | {_SUM}",
                   sum(f.size for f in ext_files))
    if v in ("newer", "newer_big", "old_bytes", "copy_newer", "cleanup"):
        cut = _cut(rng, tree.days)
        if cut is None:
            return None
        newer = [f for f in files if f.day > cut]
        when = _day(cut)
        if v == "newer":
            if not 0 < len(newer) < n:
                return None
            return ask(f"How many files in {below} were last modified after {when}?",
                       f"find {top} -type f -newermt {when} | wc -l", len(newer))
        if v == "newer_big":
            size_cut = _cut(rng, [f.size for f in files])
            if size_cut is None:
                return None
            big = [f for f in files if f.size > size_cut]
            both = [f for f in newer if f.size > size_cut]
            if not 0 < len(both) < min(len(newer), len(big)):
                return None
            return ask(f"How many files in {below} were last modified after {when} and are larger than "
                       f"{size_cut} bytes?", f"find {top} -type f -newermt {when} -size +{size_cut}c | wc -l",
                       len(both))
        old = [f for f in files if f.day < cut]
        if v == "old_bytes":
            if not 1 < len(old) < n:
                return None
            return ask(f"What is the total size in bytes of the files in {below} that were last modified "
                       f"before {when}?", f"find {top} -type f ! -newermt {when} -printf '%s\\n' | {_SUM}",
                       sum(f.size for f in old))
        if v == "copy_newer":
            picked = [f for f in ext_files if f.day > cut]
            if not 0 < len(picked) < k:
                return None
            dest = "/root/" + rng.choice(_DESTS)
            conds = [f"[ \"$(find {dest} -type f | wc -l)\" = {len(picked)} ]",
                     *_stat_is("%s %a", [(f"{dest}/{f.name}", f"{f.size} 444") for f in picked]),
                     *_intact(files)]
            return change(f"Create the directory {dest} and copy into it every .{ext} file in {below} that "
                          f"was last modified after {when}, keeping the file names. Then make the copies "
                          "read-only for everyone (mode 444). Do not change the originals.",
                          [f"mkdir -p {dest}",
                           f"find {top} -type f -name '*.{ext}' -newermt {when} -exec cp -t {dest} {{}} +",
                           f"chmod 444 {dest}/*"], conds)
        # cleanup: delete the files older than the day, and the empty files
        doomed = [f for f in files if f.day < cut or f.size == 0]
        if not (any(f.size == 0 and f.day > cut for f in files) and any(f.day < cut and f.size for f in files)
                and len(doomed) < n):
            return None
        return change(f"In {below}, delete every file that was last modified before {when} and every empty "
                      "file. Keep all the other files.",
                      [f"find {top} -type f ! -newermt {when} -delete", f"find {top} -type f -empty -delete"],
                      [*_gone(doomed), *_intact([f for f in files if f not in doomed])])
    if v == "big_ext":
        cut = _cut(rng, [f.size for f in ext_files])
        big = [f for f in ext_files if cut is not None and f.size > cut]
        if cut is None or not 0 < len(big) < k:
            return None
        return ask(f"How many .{ext} files in {below} are larger than {cut} bytes?",
                   f"find {top} -type f -name '*.{ext}' -size +{cut}c | wc -l", len(big))
    if v == "exec":
        count = sum(bool(f.mode & 0o100) for f in files)
        if not 0 < count < n:
            return None
        return ask(f"How many files in {below} are executable by their owner?",
                   f"find {top} -type f -perm -u=x | wc -l", count)
    if v == "largest_ext":
        if k < 3:
            return None
        best = max(ext_files, key=lambda f: f.size)
        return ask(f"What is the name of the largest .{ext} file anywhere in {below}? Answer with the file "
                   "name only.",
                   f"find {top} -type f -name '*.{ext}' -printf '%s %f\\n' | sort -n | tail -n 1 | "
                   "cut -d' ' -f2",
                   best.name, "exact")
    if v == "busiest_dir":
        best_dir = _unique_top(_count([f.parent for f in ext_files]))
        if best_dir is None or k < 3:
            return None
        return ask(f"Which directory in {top} ({top} itself or any directory below it) directly contains the "
                   f"most .{ext} files? Answer with its absolute path, without a trailing slash.",
                   f"find {top} -type f -name '*.{ext}' -printf '%h\\n' | {_TOP}", best_dir, "exact")
    if v == "delete_ext":
        if not 0 < k < n:
            return None
        return change(f"Delete every .{ext} file in {top}, and leave the other files in place.",
                      [f"rm {top}/*.{ext}"],
                      [*_gone(ext_files), *_intact([f for f in files if f.ext != ext])])
    if v == "chmod":
        target = rng.choice(files)
        mode = rng.choice([m for m in _MODES if m != target.mode])
        return change(f"Set the permissions of the file {target.path} to {mode:o} (octal).",
                      [f"chmod {mode:o} {target.path}"],
                      _intact([f if f is not target else _File(f.path, f.size, f.day, mode) for f in files]))
    if v == "rename":
        target = rng.choice(files)
        new = _unique_name(rng, {f.name for f in files}, rng.choice(_EXTS))
        after = [f if f is not target else _File(f"{top}/{new}", f.size, f.day, f.mode) for f in files]
        return change(f"Rename the file {target.path} to {new}, in the same directory.",
                      [f"mv {target.path} {top}/{new}"], [*_gone([target]), *_intact(after)])
    if v == "move_ext":
        if not 1 < k < n or all(f.parent == top for f in ext_files):
            return None
        dest = "/root/" + rng.choice(_DESTS)
        conds = [*_stat_is("%s", [(f"{dest}/{f.name}", str(f.size)) for f in ext_files]), *_gone(ext_files),
                 *_intact([f for f in files if f.ext != ext])]
        return change(f"Move every .{ext} file found anywhere in {below} into the directory {dest} (create "
                      "it), keeping the file names.",
                      [f"mkdir -p {dest}", f"find {top} -type f -name '*.{ext}' -exec mv -t {dest} {{}} +"],
                      conds)
    if v == "rename_ext":
        new_ext = rng.choice([e for e in _EXTS if e not in tree.exts()])
        moved = [f for f in ext_files if f.parent == top]
        if not moved or len(moved) == k:
            return None
        example = moved[0].name.rsplit(".", 1)[0]
        renamed = [_File(f.path[:-len(ext)] + new_ext, f.size, f.day, f.mode) for f in moved]
        return change(f"In {top} itself (not in its subdirectories), change the extension of every .{ext} "
                      f"file to .{new_ext}, keeping the rest of the name (for example {example}.{ext} "
                      f"becomes {example}.{new_ext}).",
                      [f"for f in {top}/*.{ext}; do mv \"$f\" \"${{f%.{ext}}}.{new_ext}\"; done"],
                      [*_gone(moved), *_intact([f for f in files if f not in moved] + renamed)])
    if v == "delete_empty":
        empties = [f for f in files if f.size == 0]
        if not 0 < len(empties) < n or all(f.parent == top for f in empties):
            return None
        return change(f"Delete every empty file in {below}, and keep all the other files.",
                      [f"find {top} -type f -empty -delete"],
                      [*_gone(empties), *_intact([f for f in files if f.size])])
    if v == "chmod_ext":
        mode = rng.choice([m for m in _MODES if m & 0o400])
        if not 0 < k < n:
            return None
        return change(f"Give every .{ext} file in {below} the permissions {mode:o} (octal), and leave the "
                      "other files unchanged.",
                      [f"find {top} -type f -name '*.{ext}' -exec chmod {mode:o} {{}} +"],
                      _intact([_File(f.path, f.size, f.day, mode) if f.ext == ext else f for f in files]))
    # move_big: move the files larger than a size into a folder and make them private
    cut = _cut(rng, [f.size for f in files])
    big = [f for f in files if cut is not None and f.size > cut]
    if cut is None or not 1 < len(big) < n:
        return None
    dest = "/root/" + rng.choice(_DESTS)
    conds = [*_stat_is("%s %a", [(f"{dest}/{f.name}", f"{f.size} 600") for f in big]), *_gone(big),
             *_intact([f for f in files if f not in big])]
    return change(f"Move every file in {below} that is larger than {cut} bytes into the directory {dest} "
                  "(create it), keeping the file names, and set the permissions of each moved file to 600.",
                  [f"mkdir -p {dest}", f"find {top} -type f -size +{cut}c -exec mv -t {dest} {{}} +",
                   f"chmod 600 {dest}/*"], conds)


# ====================================================================== family: text
@dataclass(frozen=True)
class _Line:
    stamp: str  # "YYYY-MM-DD HH:MM:SS"
    level: str
    user: str
    action: str

    def __str__(self) -> str:
        return f"{self.stamp} {self.level} {self.user} {self.action}"


def _level(rng: StableRandom) -> str:
    x = rng.random()
    return "INFO" if x < 0.45 else "WARN" if x < 0.65 else "ERROR" if x < 0.85 else "DEBUG"


def _log(rng: StableRandom, n: int, users: Sequence[str], day: int) -> list[_Line]:
    """n lines with strictly increasing times on one day."""
    t = rng.randint(6 * 3600, 9 * 3600)
    lines = []
    for _ in range(n):
        t += rng.randint(1, 240)
        stamp = f"{_day(day)} {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"
        lines.append(_Line(stamp, _level(rng), rng.choice(users), rng.choice(_ACTIONS)))
    return lines


@dataclass(frozen=True)
class _Row:
    id: int
    customer: str
    city: str
    product: str
    amount: int  # units, or cents when the CSV has decimals

    def render(self, decimals: bool) -> str:
        amount = f"{self.amount // 100}.{self.amount % 100:02d}" if decimals else str(self.amount)
        return f"{self.id},{self.customer},{self.city},{self.product},{amount}"


_CSV_HEADER = "id,customer,city,product,amount"


def _csv(rng: StableRandom, n: int, decimals: bool) -> list[_Row]:
    cities = rng.sample(_CITIES, rng.randint(3, 5))
    products = rng.sample(_PRODUCTS, rng.randint(3, 5))
    customers = rng.sample(_USERS, 6)
    amounts = _distinct_ints(rng, n, 500, 60000) if decimals else _distinct_ints(rng, n, 5, 500)
    return [_Row(i + 1, rng.choice(customers), rng.choice(cities), rng.choice(products), amounts[i])
            for i in range(n)]


def _text_init(files: Mapping[str, Sequence[str]]) -> str:
    lines = ["set -e"]
    for path in files:
        lines.append(f"mkdir -p {path.rsplit('/', 1)[0]}")
        lines.append(_write_cmd(path, files[path]))
    return "\n".join(lines) + "\n"


def _text(rng: StableRandom, d: int, kind: str, v: str) -> _Candidate | None:
    folder = rng.choice((f"/root/{rng.choice(_LOG_DIRS)}", f"/var/log/{rng.choice(_SERVICES)}",
                         f"/home/{rng.choice(_USERS)}/{rng.choice(_LOG_DIRS)}"))
    users = rng.sample(_USERS, rng.randint(3, 6))
    level = rng.choice(_LEVELS)
    init = ""

    def ask(text: str, command: str, expected: object, match: str = "integer") -> _Candidate:
        return _question("text", text, init, [command], expected, match)

    def change(text: str, command: str, conditions: Sequence[str]) -> _Candidate:
        return _change("text", text, init, [command], conditions)

    if v in ("city_count", "city_sum", "csv_filter_sort", "product_avg", "top_city", "city_totals"):
        decimals = v in ("product_avg", "top_city", "city_totals")
        rows = _csv(rng, {1: rng.randint(8, 14), 2: rng.randint(15, 30), 3: rng.randint(25, 40)}[d], decimals)
        stem = rng.choice(_CSV_NAMES)
        path = f"{_base_dir(rng)}/{stem}.csv"
        init = _text_init({path: [_CSV_HEADER] + [r.render(decimals) for r in rows]})
        city = rng.choice(rows).city
        in_city = [r for r in rows if r.city == city]
        desc = f"The CSV file {path} has the header line '{_CSV_HEADER}'."
        if v == "city_count":
            if len(in_city) == len(rows):
                return None
            return ask(f"{desc} How many rows (not counting the header) have the city {city}?",
                       f"grep -c ',{city},' {path}", len(in_city))
        if v == "city_sum":
            if len(in_city) < 2 or len(in_city) == len(rows):
                return None
            return ask(f"{desc} What is the total of the amount column over the rows whose city is {city}?",
                       f"awk -F, '$3 == \"{city}\" {{s += $5}} END {{print s}}' {path}",
                       sum(r.amount for r in in_city))
        if v == "csv_filter_sort":
            if len(in_city) < 2 or len(in_city) == len(rows):
                return None
            out = f"/root/{city.lower()}-{rng.choice(_CSV_NAMES)}.csv"
            want = [r.render(False) for r in sorted(in_city, key=lambda r: -r.amount)]
            return change(f"{desc} Write the rows whose city is {city} to the new file {out}, sorted by "
                          "amount from largest to smallest, without the header line.",
                          f"awk -F, '$3 == \"{city}\"' {path} | sort -t, -k5,5nr > {out}",
                          [_content_is(out, want)])
        if v == "product_avg":
            product = rng.choice(rows).product
            picked = [r.amount for r in rows if r.product == product]
            if len(picked) < 2:
                return None
            avg = sum(picked) / len(picked) / 100
            return ask(f"{desc} What is the average amount of the rows whose product is {product}? Round it "
                       "to 2 decimals.",
                       f"awk -F, '$4 == \"{product}\" {{s += $5; n++}} END {{printf \"%.2f\\n\", s / n}}' "
                       f"{path}",
                       f"{avg:.2f}", "float")
        totals: dict[str, int] = {}
        for r in rows:
            totals[r.city] = totals.get(r.city, 0) + r.amount
        sums = "awk -F, 'NR > 1 {s[$3] += $5} END {for (c in s) "  # + what to print, per city
        if v == "top_city":
            best = _unique_top(totals)
            ranked = sorted(totals.values(), reverse=True)
            if best is None or ranked[0] - ranked[1] < 100:  # at least one unit apart
                return None
            return ask(f"{desc} Which city has the highest total amount? Answer with the city name only.",
                       f"{sums}print s[c], c}}' {path} | sort -rn | head -n 1 | awk '{{print $2}}'", best,
                       "exact")
        out = f"/root/{stem}-by-city.csv"
        want = [f"{c},{t // 100}.{t % 100:02d}" for c, t in sorted(totals.items())]
        return change(f"{desc} Create the file {out} with one line 'CITY,TOTAL' for each city, where TOTAL "
                      "is the sum of the amount column for that city written with two decimals (like 12.50). "
                      "Sort the lines by city name and do not write a header.",
                      f"{sums}printf \"%s,%.2f\\n\", c, s[c]}}' {path} | sort > {out}",
                      [_content_is(out, want)])
    desc = "Each line looks like 'DATE TIME LEVEL USER ACTION'."
    pick = f"awk '$3 == \"{level}\" {{print $4}}'"  # the users of the lines at the level
    if v in ("multi_top", "multi_distinct", "merge_sorted"):
        names = rng.sample(_LOG_NAMES, rng.randint(2, 4))
        day = rng.randint(0, 1000)
        # One increasing clock shared by all files: timestamps are distinct across files too.
        merged = _log(rng, rng.randint(20, 35) * len(names), users, day)
        per_file: dict[str, list[_Line]] = {f"{folder}/{name}.log": [] for name in names}
        paths = list(per_file)
        for line in merged:
            per_file[rng.choice(paths)].append(line)
        if any(not lines for lines in per_file.values()):
            return None
        init = _text_init({p: [str(x) for x in lines] for p, lines in per_file.items()})
        at_level = [x.user for x in merged if x.level == level]
        if v == "multi_top":
            best = _unique_top(_count(at_level))
            first = _unique_top(_count([x.user for x in per_file[paths[0]] if x.level == level]))
            if best is None or best == first:  # reading only one file must not give the answer
                return None
            return ask(f"Across all the .log files in {folder}, which user has the most {level} lines? "
                       f"{desc} Answer with the user name only.", f"cat {folder}/*.log | {pick} | {_TOP}",
                       best, "exact")
        if v == "multi_distinct":
            count = len(dict.fromkeys(at_level))
            if not 1 < count < len(dict.fromkeys(x.user for x in merged)):
                return None
            return ask(f"Across all the .log files in {folder}, how many different users have at least one "
                       f"{level} line? {desc}", f"cat {folder}/*.log | {pick} | sort -u | wc -l", count)
        out = f"/root/{folder.rsplit('/', 1)[1]}-merged.log"
        return change(f"Merge all the .log files in {folder} into the single new file {out}, with all their "
                      f"lines sorted by date and time, oldest first. {desc}",
                      f"cat {folder}/*.log | sort > {out}",
                      [_content_is(out, [str(x) for x in merged])])
    lines = _log(rng, {1: rng.randint(12, 20), 2: rng.randint(25, 45), 3: rng.randint(40, 60)}[d], users,
                 rng.randint(0, 1000))
    path = f"{folder}/{rng.choice(_LOG_NAMES)}.log"
    text = [str(x) for x in lines]
    init = _text_init({path: text})
    at_level = [x for x in lines if x.level == level]
    if not 0 < len(at_level) < len(lines):
        return None
    if v == "level_count":
        return ask(f"How many lines of {path} have the level {level}? {desc}", f"grep -c ' {level} ' {path}",
                   len(at_level))
    if v == "distinct_users":
        count = len(dict.fromkeys(x.user for x in lines))
        return ask(f"How many different users appear in {path}? {desc}",
                   f"awk '{{print $4}}' {path} | sort -u | wc -l", count)
    if v == "top_user":
        best = _unique_top(_count([x.user for x in at_level]))
        if best is None or best == _unique_top(_count([x.user for x in lines])):
            return None
        return ask(f"In {path}, which user has the most {level} lines? {desc} Answer with the user name "
                   "only.",
                   f"grep ' {level} ' {path} | awk '{{print $4}}' | {_TOP}", best, "exact")
    user = rng.choice(users)
    if v == "user_actions":
        actions = list(dict.fromkeys(x.action for x in lines if x.user == user))
        if not 1 < len(actions) < len(dict.fromkeys(x.action for x in lines)):
            return None
        return ask(f"Which different actions did the user {user} perform according to {path}? {desc} List "
                   "each action once, separated by spaces.",
                   f"awk '$4 == \"{user}\" {{print $5}}' {path} | sort -u",
                   " ".join(sorted(actions)), "set")
    if v == "level_user":
        count = sum(x.user == user for x in at_level)
        if not 0 < count < min(len(at_level), sum(x.user == user for x in lines)):
            return None
        return ask(f"How many {level} lines of {path} are about the user {user}? {desc}",
                   f"awk '$3 == \"{level}\" && $4 == \"{user}\"' {path} | wc -l", count)
    if v == "replace":
        old = rng.choice([x.action for x in lines])
        new = rng.choice(_NEW_ACTIONS)
        tokens = dict.fromkeys(tok for x in text for tok in x.split())
        if any(old in tok for tok in tokens if tok != old):  # plain substitution == whole-word substitution
            return None
        want = [str(_Line(x.stamp, x.level, x.user, new if x.action == old else x.action)) for x in lines]
        return change(f"In {path}, replace every occurrence of the word {old} with {new}, editing the file "
                      "in place.", f"sed -i 's/{old}/{new}/g' {path}", [_content_is(path, want)])
    if v == "filter_level":
        out = f"{folder}/{level.lower()}.txt"
        return change(f"Write every line of {path} that has the level {level} to the new file {out}, in "
                      f"their original order. {desc}", f"grep ' {level} ' {path} > {out}",
                      [_content_is(out, [str(x) for x in at_level]), _content_is(path, text)])
    if v == "users_sorted":
        out = f"/root/{rng.choice(_LOG_NAMES)}-users.txt"
        return change(f"Write the names of the different users that appear in {path} to the new file {out}, "
                      f"sorted alphabetically, one per line. {desc}",
                      f"awk '{{print $4}}' {path} | sort -u > {out}",
                      [_content_is(out, sorted(dict.fromkeys(x.user for x in lines)))])
    if v == "drop_level":
        return change(f"Delete every line with the level {level} from {path} (edit the file in place) and "
                      f"keep the other lines in their order. {desc}", f"sed -i '/ {level} /d' {path}",
                      [_content_is(path, [str(x) for x in lines if x.level != level])])
    # per_user_counts
    out = f"/root/{level.lower()}-per-user.csv"
    counts = _count([x.user for x in at_level])
    return change(f"Create the file {out} with one line 'USER,COUNT' for each user that has at least one "
                  f"{level} line in {path}, where COUNT is that user's number of {level} lines. Sort the "
                  f"lines by user name and do not write a header. {desc}",
                  f"{pick} {path} | sort | uniq -c | awk '{{print $2 \",\" $1}}' > {out}",
                  [_content_is(out, [f"{u},{counts[u]}" for u in sorted(counts)])])


# ====================================================================== family: processes
@dataclass(frozen=True)
class _Proc:
    comm: str  # the process name (what ps and pgrep -x show)
    arg: int  # its only argument: a sleep duration in seconds, distinct across processes
    user: str = "root"
    label: str | None = None  # its PID goes to /root/run/<label>.pid

    @property
    def exe(self) -> str:
        return "/usr/bin/sleep" if self.comm == "sleep" else f"{_SVC}/{self.comm}"


def _procs_init(procs: Sequence[_Proc], users: Sequence[str] = ()) -> str:
    """Bash that writes the launcher: every process a symlink to sleep named after it (so its comm is
    that name), started (as its user), then waited for until it has exec'd, then the ready file."""
    services = list(dict.fromkeys(p.comm for p in procs if p.comm != "sleep"))
    # r PID NAME: wait until PID has exec'd NAME (a forked child shows its parent's name first).
    launch = ['r() { while [ -e "/proc/$1" ] && read -r c < "/proc/$1/comm" && [ "$c" != "$2" ]; do :; '
              "done; }", "cd /root"]
    for i, p in enumerate(procs):
        prefix = "" if p.user == "root" else f"setpriv --reuid={p.user} --regid={p.user} --init-groups "
        line = f"{prefix}{p.exe} {p.arg} & p{i}=$!"
        if p.label:
            line += f"; echo $p{i} > /root/run/{p.label}.pid"
        launch.append(line)
    launch += [f"r $p{i} {p.comm}" for i, p in enumerate(procs)]
    launch += [f": > {START_READY_FILE}", "wait"]
    lines = ["set -e", f"mkdir -p {_SVC}" + (" /root/run" if any(p.label for p in procs) else "")]
    lines += _accounts_init([], [_Account(u) for u in users])
    lines += [f"ln -s /usr/bin/sleep {_SVC}/{s}" for s in services]
    lines.append(_write_cmd(f"{_SVC}/launch.sh", launch))
    return "\n".join(lines) + "\n"


# A process counts as running unless it is a zombie or has a fatal signal pending (HUP INT QUIT KILL
# TERM: `kill` returns once the signal is queued, the process dies a moment later). Pure builtins over
# /proc, so a check answers in milliseconds both before and right after the kill; `gone` still allows
# 60 ms of grace for a signal sent by a process that has not finished sending it.
_PROC_PRELUDE = r"""alive() {
  local p k v c st sig
  local -a a
  for p in /proc/[0-9]*; do
    { read -r c < "$p/comm"; } 2>/dev/null && [ "$c" = "$1" ] || continue
    { mapfile -d '' -t a < "$p/cmdline"; } 2>/dev/null || continue
    [ "${#a[@]}" -gt 0 ] && [ "${a[-1]}" = "$2" ] || continue
    st='' sig=0
    { while read -r k v; do
        case $k in State:) st=${v%% *} ;; SigPnd:|ShdPnd:) sig=$(( sig | 16#$v )) ;; esac
      done < "$p/status"; } 2>/dev/null
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] && (( (sig & 0x4107) == 0 )) && return 0
  done
  return 1
}
gone() { local i; for i in 1 2 3; do alive "$1" "$2" || return 0; sleep 0.02; done; return 1; }
"""


def _procs_conditions(killed: Sequence[_Proc], kept: Sequence[_Proc]) -> list[str]:
    # Survivors first: on a broken state the check fails without waiting.
    return [f"alive {p.comm} {p.arg}" for p in kept] + [f"gone {p.comm} {p.arg}" for p in killed]


def _processes(rng: StableRandom, d: int, kind: str, v: str) -> _Candidate | None:
    services = rng.sample(_SERVICES, 5)
    name = services[0]
    users: list[str] = []
    specs: list[tuple[str, str]] = []  # (comm, user)
    if v in ("count_sleep", "max_sleep_arg", "kill_sleep_above"):
        specs = [("sleep", "root")] * rng.randint(2, 6) + [(s, "root") for s in services[:rng.randint(1, 3)]]
    elif v in ("count_name", "kill_all_name", "kill_below_list"):
        # Several instances of one name, a decoy whose name starts with it, and other services.
        specs = [(name, "root")] * rng.randint(2, 4) + [(f"{name}-old", "root")]
        specs += [(s, "root") for s in services[1:rng.randint(2, 4)]]
    elif d == 3:
        users = rng.sample(_USERS, rng.randint(2, 3))
        specs = [(s, rng.choice([*users, "root"])) for s in services[:rng.randint(3, 5)]]
        specs += [("sleep", rng.choice(users)) for _ in range(rng.randint(1, 2))]
    else:
        specs = [(s, "root") for s in services[:rng.randint(3, 5)]] + [("sleep", "root")] * rng.randint(0, 2)
    rng.shuffle(specs)
    args = _distinct_ints(rng, len(specs), 1000, 9999)
    labels: list[str | None] = [None] * len(specs)
    if v in ("pidfile_name", "kill_pidfile"):
        labels = [f"job{k}" for k in _distinct_ints(rng, len(specs), 1, 99)]
    procs = [_Proc(c, a, u, lab) for (c, u), a, lab in zip(specs, args, labels, strict=True)]
    init = _procs_init(procs, users)
    sleeps = [p for p in procs if p.comm == "sleep"]
    target = rng.choice(procs)
    # Naming the other programs (never the decoys) varies the text without giving anything away.
    others = _list(list(dict.fromkeys(p.comm for p in procs if p.comm not in ("sleep", name)
                                      and not p.comm.endswith("-old"))) or ["sleep"])
    running = f"The users {_list(users)} run background processes." if users else ""

    def ask(text: str, command: str, expected: object, match: str = "integer") -> _Candidate:
        return _question("processes", text, init, [command], expected, match, _START)

    def change(text: str, commands: list[str], killed: Sequence[_Proc],
               extra: Sequence[str] = ()) -> _Candidate:
        conditions = [*_procs_conditions(killed, [p for p in procs if p not in killed]), *extra]
        return _change("processes", text, init, commands, conditions, _PROC_PRELUDE, _START)

    if v == "count_sleep":
        return ask(f"Some background programs are running ({others}), and some sleep processes. How many "
                   "processes named sleep are running right now?", "pgrep -c -x sleep", len(sleeps))
    if v == "name_by_arg":
        return ask(f"Which running process was started with the argument {target.arg}? Answer with the "
                   "process name only.", f"ps -eo comm=,args= | awk '$NF == \"{target.arg}\" {{print $1}}'",
                   target.comm, "exact")
    if v == "pidfile_name":
        return ask(f"The file /root/run/{target.label}.pid holds the PID of a running process. What is the "
                   "name of that process?", f"ps -o comm= -p \"$(cat /root/run/{target.label}.pid)\"",
                   target.comm, "exact")
    if v == "count_name":
        return ask(f"Several copies of {name} run in the background, next to other programs such as "
                   f"{others}. How many processes named exactly {name} are running?", f"pgrep -c -x {name}",
                   sum(p.comm == name for p in procs))
    if v == "max_sleep_arg":
        if max(p.arg for p in sleeps) > max(p.arg for p in procs if p.comm != "sleep"):
            return None  # the overall largest argument must be a wrong answer
        return ask(f"Several sleep processes are running, each with one argument (a number of seconds), next "
                   f"to other programs ({others}) that take a number too. What is the largest argument among "
                   "the sleep processes?", "pgrep -a -x sleep | awk '{print $3}' | sort -n | tail -n 1",
                   max(p.arg for p in sleeps))
    if v in ("user_of", "count_user", "sum_user_args"):
        user = rng.choice(users)
        mine = [p for p in procs if p.user == user]
        if v == "user_of":
            if target.comm == "sleep" or target.user == "root":
                return None
            return ask(f"{running} Which user runs the process named {target.comm}? Answer with the user "
                       "name only.", f"ps -o user= -C {target.comm}", target.user, "exact")
        if v == "count_user":
            if not mine:
                return None
            return ask(f"{running} How many processes is the user {user} running?", f"pgrep -c -u {user}",
                       len(mine))
        if len(mine) < 2:
            return None
        return ask(f"{running} Each was started with one number as its argument. What is the sum of the "
                   f"arguments of all the processes run by the user {user}?",
                   f"ps -o args= -u {user} | awk '{{s += $NF}} END {{print s}}'", sum(p.arg for p in mine))
    if v == "kill_name":
        if target.comm == "sleep":
            target = next(p for p in procs if p.comm != "sleep")
        return change(f"Kill the process named {target.comm} (it was started with the argument "
                      f"{target.arg}), and leave the other processes running.", [f"pkill -x {target.comm}"],
                      [target])
    if v == "kill_all_name":
        return change(f"Kill every process named exactly {name} (there are several), and leave all the other "
                      f"processes running (such as {others}).", [f"pkill -x {name}"],
                      [p for p in procs if p.comm == name])
    if v == "kill_pidfile":
        return change(f"Kill the process whose PID is stored in /root/run/{target.label}.pid, and leave the "
                      "other processes running.", [f"kill \"$(cat /root/run/{target.label}.pid)\""], [target])
    if v == "kill_sleep_above":
        cut = _cut(rng, [p.arg for p in sleeps])
        killed = [p for p in sleeps if cut is not None and p.arg > cut]
        if cut is None or not killed or len(killed) == len(sleeps):
            return None
        return change(f"Kill every sleep process that was started with an argument greater than {cut}, and "
                      f"leave the other processes running ({others} and the other sleep processes).",
                      [f"pgrep -a -x sleep | awk '$3 > {cut} {{print $1}}' | xargs kill"], killed)
    if v == "kill_user":
        user = rng.choice(users)
        killed = [p for p in procs if p.user == user]
        if not killed or len(killed) == len(procs):
            return None
        return change(f"{running} Stop every process run by the user {user}, then write the number of "
                      "processes you stopped into the file /root/stopped.txt.",
                      [f"pgrep -c -u {user} > /root/stopped.txt", f"pkill -u {user}"], killed,
                      [f"[ \"$(tr -d ' \\n' < /root/stopped.txt)\" = {len(killed)} ]"])
    # kill_below_list
    named = [p for p in procs if p.comm == name]
    cut = _cut(rng, [p.arg for p in named])
    killed = [p for p in named if cut is not None and p.arg < cut]
    if cut is None or not killed or len(killed) == len(named):
        return None
    out = f"/root/{name}-left.txt"
    left = sorted(p.arg for p in named if p not in killed)
    # The list is written before the kill: right after `kill`, pgrep may still see the dying processes.
    return change(f"Kill every process named exactly {name} whose argument is smaller than {cut}. Then write "
                  f"the arguments of the {name} processes that are still running into the file {out}, one "
                  "per line, sorted in ascending order.",
                  [f"pgrep -a -x {name} | awk '$3 >= {cut} {{print $3}}' | sort -n > {out}",
                   f"pgrep -a -x {name} | awk '$3 < {cut} {{print $1}}' | xargs kill"], killed,
                  [_content_is(out, [str(a) for a in left])])


# ====================================================================== family: users
def _member(user: str, group: str) -> str:
    return f"id -nG {user} 2>/dev/null | tr ' ' '\\n' | grep -qx {group}"


def _users(rng: StableRandom, d: int, kind: str, v: str) -> _Candidate | None:
    names = rng.sample(_USERS, 8)
    groups = rng.sample(_GROUPS, 4)
    n_users = {1: rng.randint(3, 5), 2: rng.randint(4, 6), 3: rng.randint(4, 6)}[d]
    pool, spare = names[:n_users], names[n_users:]
    live_groups = groups[:rng.randint(2, 3)]
    accounts = [_Account(u, rng.choice(_SHELLS) if rng.random() < 0.5 else "/bin/bash",
                         tuple(g for g in live_groups if rng.random() < 0.5)) for u in pool]
    members = {g: [a.name for a in accounts if g in a.groups] for g in live_groups}
    # A shared tree (two levels at d3) whose files belong to the users, in their own or a shared group.
    shared = f"{rng.choice(('/root', '/home'))}/{rng.choice(_TEAMS)}"
    tree = _make_tree(rng, d, top=shared)
    modes = rng.sample((0o644, 0o640, 0o660, 0o600, 0o664, 0o755), 3)
    files = []
    for f in tree.files:
        owner = rng.choice(pool)
        group = owner if rng.random() < 0.5 else rng.choice(live_groups)
        # One day for all: no users question is about times (and it saves a `touch` per day).
        files.append(_File(f.path, f.size, tree.days[0], rng.choice(modes), owner, group))
    init = _tree_init(tree.dirs, files, _accounts_init(live_groups, accounts))
    target = rng.choice(files)
    user = rng.choice(pool)
    group = rng.choice(live_groups)
    below = f"{shared} (subdirectories included)"
    names_of = "List their names separated by spaces."
    members_of = "getent group {} | cut -d: -f4 | tr ',' '\\n'"  # one member a line

    def ask(text: str, command: str, expected: object, match: str = "integer") -> _Candidate:
        return _question("users", text, init, [command], expected, match)

    def change(text: str, commands: list[str], conditions: Sequence[str]) -> _Candidate:
        return _change("users", text, init, commands, conditions)

    def owned(path: str, owner: str, grp: str, mode: int) -> str:
        return f"[ \"$(stat -c '%U %G %a' {path})\" = '{owner} {grp} {mode:o}' ]"

    if v == "file_owner":
        if len(dict.fromkeys(f.owner for f in files)) < 2:
            return None
        return ask(f"Who owns the file {target.path}? Answer with the user name only.",
                   f"stat -c %U {target.path}", target.owner, "exact")
    if v == "group_size":
        count = len(members[group])
        if not 0 < count < len(pool):
            return None
        return ask(f"The users {_list(pool)} exist. How many of them are members of the group {group}?",
                   f"{members_of.format(group)} | grep -c .", count)
    if v == "login_shell":
        shell = next(a.shell for a in accounts if a.name == user)
        return ask(f"The users {_list(pool)} exist. What is the login shell of the user {user}? Answer with "
                   "its full path.", f"getent passwd {user} | cut -d: -f7", shell, "exact")
    if v == "file_mode":
        return ask(f"What are the permissions of the file {target.path}, as an octal number like 755?",
                   f"stat -c %a {target.path}", f"{target.mode:o}")
    if v == "bash_users":
        picked = rng.sample(pool, rng.randint(3, len(pool)))
        chosen = [a for a in accounts if a.name in picked]
        bash = [a.name for a in chosen if a.shell == "/bin/bash"]
        if not 0 < len(bash) < len(chosen):
            return None
        listed = [a.name for a in chosen]
        return ask(f"Which of the users {_list(listed)} have /bin/bash as their login shell? {names_of}",
                   f"getent passwd {' '.join(listed)} | awk -F: '$7 == \"/bin/bash\" {{print $1}}'",
                   " ".join(bash), "set")
    if v == "both_groups":
        g1, g2 = live_groups[:2]
        both = [u for u in members[g1] if u in members[g2]]
        if not both or len(both) == len(members[g1]) or len(both) == len(members[g2]):
            return None
        return ask(f"Which users are members of both the group {g1} and the group {g2}? {names_of}",
                   f"comm -12 <({members_of.format(g1)} | sort) <({members_of.format(g2)} | sort)",
                   " ".join(both), "set")
    if v == "group_files":
        count = sum(f.group == group for f in files)
        if not 0 < count < len(files):
            return None
        return ask(f"How many files in {below} belong to the group {group}?",
                   f"find {shared} -type f -group {group} | wc -l", count)
    if v == "top_owner":
        best = _unique_top(_count([f.owner for f in files]))
        if best is None:
            return None
        owners = _list(sorted(dict.fromkeys(f.owner for f in files)))
        return ask(f"The files in {shared} belong to the users {owners}. Which user owns the most files in "
                   f"{below}? Answer with the user name only.",
                   f"find {shared} -type f -printf '%u\\n' | {_TOP}", best, "exact")
    if v == "owned_group_writable":
        theirs = [f for f in files if f.owner == user]
        count = sum(bool(f.mode & 0o020) for f in theirs)
        if not 0 < count < len(theirs):
            return None
        return ask(f"How many files in {below} are owned by the user {user} and writable by their group?",
                   f"find {shared} -type f -user {user} -perm -g=w | wc -l", count)
    if v == "members_owning":
        owners_set = dict.fromkeys(f.owner for f in files)
        found = [u for u in members[group] if u in owners_set]
        if not found or len(found) == len(members[group]) and len(found) == len(owners_set):
            return None
        return ask(f"Which members of the group {group} own at least one file in {below}? {names_of}",
                   f"find {shared} -type f -printf '%u\\n' | sort -u | "
                   f"grep -Fx -f <({members_of.format(group)})",
                   " ".join(found), "set")
    new_user = spare[0]
    if v == "create_user":
        full = f"{new_user.capitalize()} {rng.choice(_SURNAMES)}"
        return change(f"Create a user named {new_user} for {full}, with the home directory /home/{new_user} "
                      f"and '{full}' as the full name (comment) field.",
                      [f"useradd -m -c '{full}' {new_user}"],
                      [f"[ \"$(getent passwd {new_user} | cut -d: -f5,6)\" = '{full}:/home/{new_user}' ]",
                       f"[ \"$(stat -c %U /home/{new_user} 2>/dev/null)\" = {new_user} ]"])
    account = next(a for a in accounts if a.name == user)
    if v == "add_to_group":
        if group in account.groups:
            return None
        return change(f"Add the user {user} to the group {group}, keeping the groups {user} already belongs "
                      "to.", [f"usermod -aG {group} {user}"],
                      [_member(user, g) for g in (group, *account.groups)])
    if v == "chown":
        if target.owner == user:
            return None
        return change(f"Make the user {user} the owner of the file {target.path} (keep its group and "
                      "permissions).", [f"chown {user} {target.path}"],
                      [owned(target.path, user, target.group, target.mode)])
    if v == "own_mode":
        mode = rng.choice((0o640, 0o600, 0o660, 0o750, 0o644))
        if (target.owner, target.group, target.mode) == (user, group, mode):
            return None
        return change(f"Make the file {target.path} owned by the user {user} and the group {group}, with the "
                      f"permissions {mode:o}.",
                      [f"chown {user}:{group} {target.path}", f"chmod {mode:o} {target.path}"],
                      [owned(target.path, user, group, mode)])
    new_group = groups[3]
    if v == "new_group":
        u1, u2 = rng.sample(pool, 2)
        return change(f"Create the group {new_group} and add the users {u1} and {u2} to it.",
                      [f"groupadd {new_group}", f"usermod -aG {new_group} {u1}",
                       f"usermod -aG {new_group} {u2}"],
                      [_member(u1, new_group), _member(u2, new_group)])
    if v == "user_shell_group":
        shell = rng.choice(_SHELLS)
        return change(f"Create the user {new_user} with the home directory /home/{new_user} and the login "
                      f"shell {shell}, as a member of the existing group {group}.",
                      [f"useradd -m -s {shell} -G {group} {new_user}"],
                      [f"[ \"$(getent passwd {new_user} | cut -d: -f6,7)\" = /home/{new_user}:{shell} ]",
                       f"[ -d /home/{new_user} ]", _member(new_user, group)])
    if v == "transfer":
        u1, u2 = rng.sample(pool, 2)
        if not any(f.owner == u1 for f in files) or not any(f.owner == u2 and f.mode != 0o600 for f in files):
            return None
        after = [(f.path, f"{u2} {f.group} 600" if f.owner == u1 else f"{f.owner} {f.group} {f.mode:o}")
                 for f in files]
        # chmod first: once chown'd, the files of u1 can no longer be told from those of u2.
        return change(f"Every file in {below} that is owned by the user {u1} must become owned by the user "
                      f"{u2}, with the permissions 600. Leave the other files unchanged.",
                      [f"find {shared} -type f -user {u1} -exec chmod 600 {{}} +",
                       f"find {shared} -type f -user {u1} -exec chown {u2} {{}} +"],
                      _stat_is("%U %G %a", after))
    # team_dir
    team = members[group]
    folder = rng.choice(tree.dirs[1:])
    if not team or len(team) == len(pool):
        return None
    return change(f"Create the group {new_group} and add to it every user who is currently a member of the "
                  f"group {group}. Then give the group {new_group} ownership of the directory {folder} and "
                  f"of everything in it, and give the group write permission on {folder} itself.",
                  [f"groupadd {new_group}",
                   f"for u in $(getent group {group} | cut -d: -f4 | tr ',' ' '); do usermod -aG {new_group} "
                   "\"$u\"; done", f"chgrp -R {new_group} {folder}", f"chmod g+w {folder}"],
                  [*[_member(u, new_group) for u in team],
                   f"[ -z \"$(find {folder} ! -group {new_group})\" ]",
                   f"[ -n \"$(find {folder} -maxdepth 0 -perm -g=w)\" ]"])


# ====================================================================== family: scripting
def _numbers(rng: StableRandom, n: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(n)]


def _script_test(path: str, args: Sequence[str], out: str) -> str:
    quoted = " ".join(shlex.quote(a) for a in args)
    return f"[ \"$(timeout 5 {path} {quoted} </dev/null 2>/dev/null)\" = {shlex.quote(out)} ]"


def _script_solution(path: str, body: Sequence[str]) -> list[str]:
    return ["mkdir -p /root/bin", _write_cmd(path, ["#!/bin/bash", *body]), f"chmod +x {path}"]


def _scripting(rng: StableRandom, d: int, kind: str, v: str) -> _Candidate | None:
    folder = _base_dir(rng)
    if kind == "question":
        return _numbers_question(rng, d, v, folder)
    name = rng.choice(_SCRIPT_NAMES)
    script = f"/root/bin/{name}"
    exists = f"[ -x {script} ]"

    def change(say: str, body: list[str], conditions: Sequence[str], prelude: str = "") -> _Candidate:
        return _change("scripting", f"Create an executable script {script} that {say}", "",
                       _script_solution(script, body), [exists, *conditions], prelude)

    if v == "print_text":
        text = " ".join(rng.sample(_WORDS, rng.randint(2, 3)))
        return change(f"prints exactly the line: {text}", [f"echo {shlex.quote(text)}"],
                      [_script_test(script, [], text)])
    if d == 2:
        if v == "reverse_args":
            cases = [rng.sample(_WORDS, rng.randint(2, 5)) for _ in range(3)]
            tests = [(c, " ".join(reversed(c))) for c in cases]
            say = "prints its arguments in reverse order, separated by single spaces"
            body = ["out=''", 'for a in "$@"; do out="$a${out:+ $out}"; done', 'echo "$out"']
        else:
            cases = [[str(x) for x in _numbers(rng, rng.randint(2, 6), -50, 200)] for _ in range(3)]
            if v == "sum_args":
                tests = [(c, str(sum(map(int, c)))) for c in cases] + [([], "0")]
                say = "prints the sum of its integer arguments (0 when it gets none)"
                body = ["s=0", 'for a in "$@"; do s=$((s + a)); done', 'echo "$s"']
            elif v == "max_args":
                tests = [(c, str(max(map(int, c)))) for c in cases]
                say = "prints the largest of its integer arguments (it always gets at least one)"
                body = ['m=$1', 'for a in "$@"; do if [ "$a" -gt "$m" ]; then m=$a; fi; done', 'echo "$m"']
            else:
                tests = [(c, str(len(c))) for c in cases] + [([], "0")]
                say = "prints how many arguments it was given"
                body = ['echo "$#"']
        example, shown = tests[0]  # an example in the text; the check runs it and the other cases
        call = " ".join([name, *example])
        return change(f"{say} (for example, `{call}` prints {shown}).", body,
                      [_script_test(script, a, out) for a, out in tests])
    # d3: a script over a file or a directory, with a usage message.
    work = "/tmp/.cmat-check"
    prelude = [f"trap 'rm -rf {work}' EXIT", f"mkdir -p {work}"]
    tests = []
    if v == "count_ext_script":
        ext = rng.choice(_EXTS)
        arg_word = "DIR"
        say = (f"takes a directory as its only argument and prints how many .{ext} files that directory "
               "contains directly (not in its subdirectories)")
        for i in range(3):
            n_ext, n_other, n_deep = rng.randint(0, 4), rng.randint(1, 3), rng.randint(1, 2)
            case = f"{work}/d{i}"
            prelude.append(f"mkdir -p {case}/sub")
            stems = rng.sample(_STEMS, n_ext + n_other + n_deep)
            others = [e for e in _EXTS if e != ext]
            touch = [f"{case}/{s}.{ext}" for s in stems[:n_ext]]
            touch += [f"{case}/{s}.{rng.choice(others)}" for s in stems[n_ext:n_ext + n_other]]
            touch += [f"{case}/sub/{s}.{ext}" for s in stems[n_ext + n_other:]]
            prelude.append("touch " + " ".join(touch))
            tests.append(([case], str(n_ext)))
        body = [f"find \"$1\" -maxdepth 1 -type f -name '*.{ext}' | wc -l"]
    else:
        arg_word = "FILE"
        for i in range(3):
            xs = _numbers(rng, rng.randint(3, 8), -100, 1000)
            prelude.append(_write_cmd(f"{work}/n{i}.txt", [str(x) for x in xs]))
            tests.append(([f"{work}/n{i}.txt"], str(sum(xs) if v == "sum_file_script" else max(xs))))
        what, fn = ("the sum", sum) if v == "sum_file_script" else ("the largest", max)
        example = [str(x) for x in _numbers(rng, 3, -9, 30)]
        say = (f"takes a file as its only argument and prints {what} of the integers in it, one per line "
               f"(for example, {fn(map(int, example))} for a file holding the lines {_list(example)})")
        body = [f"{_SUM} \"$1\""] if v == "sum_file_script" else ["sort -n \"$1\" | tail -n 1"]
    usage = f"usage: {name} {arg_word}"
    body = [f"if [ $# -lt 1 ]; then echo {shlex.quote(usage)}; exit 1; fi", *body]
    no_args = (f"{{ out=$(timeout 5 {script} </dev/null 2>&1); [ $? = 1 ] && "
               f"[ \"$out\" = {shlex.quote(usage)} ]; }}")
    return change(f"{say}. When it is run without any argument it must print exactly '{usage}' and exit with "
                  "status 1.", body, [*[_script_test(script, a, out) for a, out in tests], no_args],
                  "\n".join(prelude))


def _numbers_question(rng: StableRandom, d: int, v: str, folder: str) -> _Candidate | None:
    """The scripting family's questions: computations over generated files of integers."""
    stems = rng.sample(_NUM_NAMES, 5)
    path = f"{folder}/{stems[0]}.txt"
    init = ""

    def ask(text: str, command: str, expected: object, match: str = "integer") -> _Candidate:
        return _question("scripting", text, init, [command], expected, match)

    if v in ("max_dir", "sum_dir", "best_file"):
        files = {f"{folder}/{s}.txt": _numbers(rng, rng.randint(4, 9), -500, 5000)
                 for s in stems[:rng.randint(2, 4)]}
        # A decoy that is not a .txt file: including it changes the answer.
        decoy = _numbers(rng, rng.randint(3, 5), 6000, 9000)
        init = _text_init({**{p: [str(x) for x in xs] for p, xs in files.items()},
                           f"{folder}/{stems[4]}.md": [str(x) for x in decoy]})
        everything = [x for xs in files.values() for x in xs]
        desc = f"Each .txt file in {folder} holds one integer per line."
        if v == "max_dir":
            if max(everything) < 1000:
                return None  # plain `sort` (by text) must give a wrong answer
            return ask(f"{desc} What is the largest number across all the .txt files in {folder}?",
                       f"cat {folder}/*.txt | sort -n | tail -n 1", max(everything))
        if v == "sum_dir":
            return ask(f"{desc} What is the sum of all the numbers in the .txt files in {folder}?",
                       f"cat {folder}/*.txt | {_SUM}", sum(everything))
        best = _unique_top({p.rsplit("/", 1)[1]: sum(xs) for p, xs in files.items()})
        if best is None:
            return None
        return ask(f"{desc} Which .txt file in {folder} has the largest sum of its numbers? Answer with the "
                   "file name only.",
                   f"for f in {folder}/*.txt; do echo \"$({_SUM} \"$f\") ${{f##*/}}\"; done | sort -n | "
                   "tail -n 1 | cut -d' ' -f2", best, "exact")
    if v == "pair_products":
        pairs = [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(rng.randint(8, 16))]
        init = _text_init({path: [f"{a} {b}" for a, b in pairs]})
        return ask(f"Each line of {path} holds two integers separated by a space. What is the sum, over all "
                   "lines, of the first number times the second?",
                   f"awk '{{s += $1 * $2}} END {{print s}}' {path}", sum(a * b for a, b in pairs))
    size = {1: rng.randint(8, 15), 2: rng.randint(15, 30), 3: rng.randint(20, 40)}[d]
    xs = _numbers(rng, size, -200 if d > 1 else 1, 999)
    if v == "median" and len(xs) % 2 == 0:
        xs = xs[:-1]  # an odd count: the median is one of the numbers
    init = _text_init({path: [str(x) for x in xs]})
    desc = f"The file {path} holds one integer per line."
    if v == "sum_file":
        return ask(f"{desc} What is the sum of its numbers?", f"{_SUM} {path}", sum(xs))
    if v == "count_gt":
        cut = _cut(rng, xs)
        count = sum(x > cut for x in xs) if cut is not None else 0
        if cut is None or not 0 < count < len(xs):
            return None
        return ask(f"{desc} How many of its numbers are greater than {cut}?",
                   f"awk '$1 > {cut}' {path} | wc -l", count)
    if v == "even_count":
        count = sum(x % 2 == 0 for x in xs)
        if not 0 < count < len(xs):
            return None
        return ask(f"{desc} How many of its numbers are even?", f"awk '$1 % 2 == 0' {path} | wc -l", count)
    if v == "average":
        return ask(f"{desc} What is the average of its numbers, rounded to 2 decimals?",
                   f"awk '{{s += $1}} END {{printf \"%.2f\\n\", s / NR}}' {path}", f"{sum(xs) / len(xs):.2f}",
                   "float")
    return ask(f"{desc} There is an odd number of them. What is their median?",
               f"sort -n {path} | awk '{{a[NR] = $1}} END {{print a[(NR + 1) / 2]}}'",
               sorted(xs)[len(xs) // 2])


# ====================================================================== drawing and solving
_BUILDERS = {"files": _files, "text": _text, "processes": _processes, "users": _users,
             "scripting": _scripting}


def _candidate(rng: StableRandom, d: int) -> _Candidate | None:
    family = rng.choice(FAMILIES)
    kind = rng.choice(KINDS)
    variant = rng.choice(_VARIANTS[family][kind, d])
    cand = _BUILDERS[family](rng, d, kind, variant)
    if cand is not None:
        cand.variant = variant
    return cand


_LOCK = threading.Lock()
_SANDBOX: ShellSandbox | None = None


def _sandbox() -> ShellSandbox:
    """The generator's sandbox, created on first use and closed at interpreter exit."""
    global _SANDBOX
    if _SANDBOX is None:
        require_bwrap()
        _SANDBOX = ShellSandbox(timeout_s=10.0, max_output_chars=20_000)
        atexit.register(_SANDBOX.close)
    return _SANDBOX


def prepare_sandbox(sandbox: ShellSandbox, payload: Mapping[str, Any], timeout_s: float = 5.0) -> None:
    """Build a task's initial state in ``sandbox`` (already reset): run ``init``, then start ``start`` in
    the background and wait until its launcher reports that every process runs.

    Raises RuntimeError when ``init`` fails or the processes do not come up within ``timeout_s``.
    """
    if payload["init"]:
        result = sandbox.run_script(payload["init"], timeout_s=timeout_s)
        if result.exit_code != 0:
            raise RuntimeError(f"Task init failed ({result.exit_code}): {result.output[-2000:]}")
    if payload["start"]:
        sandbox.start_background(payload["start"])
        deadline = time.monotonic() + timeout_s
        # A process forks before it execs its program: wait for the launcher's word, or `pgrep` races.
        while sandbox.run_script(f"test -e {START_READY_FILE}").exit_code != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Task processes did not start within {timeout_s:g} s: {payload['start']}")
            time.sleep(0.002)


def _solve(cand: _Candidate) -> str | None:
    """Run the candidate in the sandbox: the gold answer (questions) after checking the check (changes)."""
    payload = {"init": cand.init, "start": cand.start}
    with _LOCK:
        sb = _sandbox()
        sb.reset()
        prepare_sandbox(sb, payload)
        if cand.check is not None:
            before = sb.run_script(cand.check)
            if before.exit_code == 0:
                raise RuntimeError(f"The check passes on the initial state: {cand.instruction}")
        outputs = []
        for command in cand.solution:
            result = sb.run(command)
            if result.exit_code != 0 or result.truncated:
                raise RuntimeError(f"Solution command failed ({result.exit_code}): {command}\n"
                                   f"{result.output}")
            outputs.append(result.output)
        if cand.check is not None:
            after = sb.run_script(cand.check)
            if after.exit_code != 0:
                raise RuntimeError(f"The check fails after the solution: {cand.instruction}\n{after.output}")
            return None
    gold = outputs[-1].strip()
    assert cand.expected is not None
    if not gold or not answers_equal(gold, cand.expected, cand.match):
        raise RuntimeError(f"Gold {gold!r} differs from the model's {cand.expected!r}: {cand.instruction}")
    return gold


# ====================================================================== public API
def generate_task(seed: int, split: str, difficulty: int) -> Task:
    """The procedural OS task named by ``(seed, split, difficulty)``; the same on every machine.

    Args:
        seed: any integer >= 0.
        split: ``"train"`` or ``"test"``; the two never share an instruction (see the module docstring).
        difficulty: 1 (one step, small flat tree or file), 2 (two conditions or a pipeline, a tree with
            subdirectories) or 3 (several steps, larger data, scripting).

    Raises:
        ValueError: on a bad argument ("Expects ...").
        RuntimeError: when the sandbox cannot run here (bubblewrap missing) or, on a generator bug, when
            the gold disagrees with the model of the state.
    """
    check_task_args(seed, split, difficulty)
    cand = first_in_split("os", seed, split, difficulty, lambda rng: _candidate(rng, difficulty),
                          lambda c: c.instruction)
    answer = _solve(cand)
    payload = {
        "source": "procedural",
        "family": cand.family,
        "kind": cand.kind,
        "init": cand.init,
        "start": cand.start,
        "solution": list(cand.solution),
        "answer": answer,
        "check": cand.check,
        "match": cand.match,
    }
    return Task(domain="os", task_id=make_task_id("os", seed, split, difficulty),
                instruction=cand.instruction, context=CONTEXT, payload=payload, split=split,
                difficulty=difficulty)


def task_from_id(task_id: str) -> Task:
    """Rebuild a procedural task from its id ``os/{split}/d{difficulty}/{seed}``, e.g. ``os/train/d2/17``."""
    seed, split, difficulty = parse_task_id("os", task_id)
    return generate_task(seed, split, difficulty)


def benchmark(n: int = 60) -> dict[str, float]:
    """Median and 90th percentile seconds of ``generate_task`` over ``n`` tasks (the docstring's numbers)."""
    generate_task(0, "train", 1)  # warm: sandbox start, /etc snapshot
    times = []
    for i in range(n):
        t = time.perf_counter()
        generate_task(50_000 + i, ("train", "test")[i % 2], 1 + i % 3)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"median_s": statistics.median(times), "p90_s": times[int(0.9 * (len(times) - 1))]}
