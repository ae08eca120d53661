"""MySQL semantics on SQLite, for AgentBench tasks (whose gold answers and hashes come from MySQL 8).

AgentBench creates every column as ``TEXT`` in a MySQL 8 database with the server defaults
(``utf8mb4``, collation ``utf8mb4_0900_ai_ci``, strict ``sql_mode``) and runs the gold SQL there.
Three MySQL behaviours change which rows a statement touches or what it stores, and SQLite has none
of them; :class:`MySQLSandbox` emulates them when a task is loaded with ``mysql=True``:

1. **Backslash escapes in string literals** (:func:`rewrite_sql`): ``'It\\'s'`` is ``It's``,
   ``'a\\nb'`` holds a newline, ``'C:\\\\x'`` one backslash; ``\\0 \\b \\n \\r \\t \\Z \\\\ \\' \\"``
   are decoded, ``\\%`` and ``\\_`` keep their backslash (LIKE reads it), any other ``\\x`` is ``x``.
   A small tokenizer finds the literals (it respects quotes, ``--``/``#``/``/* */`` comments and
   quoted identifiers) and re-quotes each one the SQLite way; MySQL's ``#`` comments become ``--``.
   Double-quoted text keeps SQLite's meaning (an identifier, else a string) and is not unescaped.
2. **The default collation** ``utf8mb4_0900_ai_ci`` (:func:`collation_key`): case- and
   accent-insensitive, NO PAD (trailing spaces count, as in MySQL 8's default; the PAD SPACE
   collations of MySQL 5.7 ignore them). Registered as ``mysql_ci`` and declared on every TEXT
   column of the task's tables, so ``=``, ``<``, ``IN``, ``GROUP BY``, ``DISTINCT``, ``ORDER BY``,
   ``MIN``/``MAX`` use it; ``LIKE`` is replaced by :func:`like_match` (per character, the same
   folding, ``\\`` as the default escape character).
3. **Implicit conversion in comparisons** (:func:`rewrite_sql`, :func:`mysql_to_double`): MySQL
   compares a string with a number as two doubles (``'10' > 9`` is true, ``'abc' = 0`` is true,
   ``'7.400' = 7.4`` is true), where SQLite's TEXT affinity compares text. The tokenizer wraps the
   other operand of a comparison with a numeric literal (``=``, ``<>``, ``<``, ..., ``[NOT] IN``
   of numbers, ``[NOT] BETWEEN`` numbers) in ``mysql_num(...)``, which converts as MySQL does
   (longest numeric prefix, leading spaces skipped, no prefix: 0). Columns keep TEXT affinity:
   declaring "numeric-looking" columns NUMERIC would rewrite ``'7.400'`` as ``7.4`` and ``'05'``
   as ``5``, changing both string comparisons and the table hash. In a data-changing statement
   (INSERT, UPDATE, DELETE, REPLACE) MySQL's strict mode turns a lossy conversion (``'N/A'``,
   ``''``, ``'1,429'``) into error 1292 and the statement changes nothing; ``mysql_num_strict``
   does the same.

Numeric literals stored into a TEXT column (``VALUES (1.50)``, ``SET c = 1.50``) are rewritten as
the text MySQL stores (``'1.50'``; SQLite would store ``'1.5'``).

What is not emulated (see docs/envs/db.md): comparisons of a string with a numeric *expression*
that does not start with a numeric literal (``col > other + 1``), literal-to-literal string
comparisons (``'a' = 'A'`` stays false), arithmetic and function semantics (``/`` stays SQLite's
integer division on integers, no ``CONCAT``/``IF``/``DIV``), the exact UCA order of non-ASCII
punctuation and of most letters outside Latin, strict-mode errors from arithmetic, and functions
inside views and triggers (SQLite refuses application functions in schema objects while
``trusted_schema`` is off, so a view that uses LIKE, or a numeric comparison, fails when read).
"""

from __future__ import annotations

import functools
import math
import re
import sqlite3
import time
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from cmat_gym.domains.db.backend import QueryResult, SQLiteSandbox, Table, quote_ident

COLLATION = "mysql_ci"
NUM_FUNCTION = "mysql_num"
STRICT_NUM_FUNCTION = "mysql_num_strict"
PAD_SPACE = False  # utf8mb4_0900_ai_ci (MySQL 8's default) is NO PAD


class StatementClock:
    """The deadline of the statement being run, shared with the Python functions it calls (SQLite's
    progress handler cannot interrupt a Python callback, so long LIKE matches and comparisons check
    it themselves), and the MySQL error a function raised."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = 0.0
        self.error: str | None = None
        self.tripped = False  # the deadline passed inside a callback (and the statement was interrupted)
        self.conn: sqlite3.Connection | None = None

    def start(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.perf_counter() + timeout_s
        self.error = None
        self.tripped = False

    def expired(self) -> bool:
        """Whether the statement ran past its deadline; the first time, interrupt it (SQLite then stops
        it at its next check and undoes it, even inside a sort that only calls the collation)."""
        if not self.deadline or time.perf_counter() <= self.deadline:
            return False
        if not self.tripped:
            self.tripped = True
            if self.conn is not None:
                self.conn.interrupt()
        return True

    def check(self) -> None:
        if self.expired():
            self.error = f"statement cancelled after the {self.timeout_s:g} s time limit"
            raise TimeoutError(self.error)


# ---------------------------------------------------------------------------- collation
# The DUCET (UCA) order of ASCII punctuation and symbols: all of them sort before digits, digits
# before letters; '$' (a currency sign) sorts after every other symbol.
_ASCII_SYMBOL_ORDER = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~"
_SPACE, _SYMBOL, _CURRENCY, _DIGIT, _LETTER = 1, 2, 3, 4, 5
# Letters that UCA sorts as a base letter (plus an accent-like difference) or as two letters.
_EXTRA_FOLDS = {"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ħ": "h", "ŧ": "t"}
_SPACE_CONTROLS = "\t\n\x0b\x0c\r\x85"


def _weight(ch: str) -> str:
    """The primary weight of one folded character, as two characters (group, rank) so that keys
    compare as plain strings ("": ignorable)."""
    category = unicodedata.category(ch)
    if ch in _SPACE_CONTROLS or category in ("Zs", "Zl", "Zp"):
        group, rank = _SPACE, ord(ch)
    elif category in ("Mn", "Me", "Cf", "Cc", "Cs", "Co", "Cn"):
        return ""  # combining marks, format and control characters are ignorable in UCA
    elif category == "Sc":
        group, rank = _CURRENCY, ord(ch)
    elif category[0] in "PS":
        index = _ASCII_SYMBOL_ORDER.find(ch)
        group, rank = _SYMBOL, (index if index >= 0 else min(0x100 + ord(ch), 0x10FFFF))
    elif category == "Nd":
        group, rank = _DIGIT, unicodedata.decimal(ch)
    else:
        group, rank = _LETTER, ord(ch)
    return chr(group) + chr(rank)


@functools.cache
def char_key(ch: str) -> str:
    """The weights one character compares by: accents and case removed (``'É'`` -> ``'e'``),
    compatibility forms decomposed (``'ﬁ'`` -> ``'fi'``), ``'ß'`` -> ``'ss'``, ignorables dropped."""
    parts = [part for part in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(part)]
    return "".join(_weight(base) for part in parts for folded in part.casefold()
                   for base in _EXTRA_FOLDS.get(folded, folded))


class _KeyTable(dict):
    """``str.translate`` table: code point -> its key (filled on first use, then C-speed lookups)."""

    def __missing__(self, code: int) -> str:
        key = self[code] = char_key(chr(code))
        return key


_KEYS = _KeyTable()


def collation_key(text: str) -> str:
    """The sort key of ``text`` under utf8mb4_0900_ai_ci (approximate UCA: exact for ASCII): equal
    keys mean equal strings, and keys order as the strings do."""
    if PAD_SPACE:
        text = text.rstrip(" ")
    return text.translate(_KEYS)


def _ascii_table() -> tuple[bytes, bytes]:
    """A ``bytes.translate`` table (and the bytes it deletes) giving ASCII text one byte per weight,
    in weight order: no Python call per character, and the keys order exactly as the general ones."""
    weights = {code: char_key(chr(code)) for code in range(128)}
    ranks = {w: 1 + i for i, w in enumerate(sorted(set(weights.values()) - {""}))}
    table = bytearray(range(256))
    for code, weight in weights.items():
        table[code] = ranks.get(weight, 0)
    return bytes(table), bytes(code for code, weight in weights.items() if not weight)


_ASCII_TABLE, _ASCII_IGNORED = _ascii_table()


def _compare(a: str, b: str) -> int:
    if PAD_SPACE:
        a, b = a.rstrip(" "), b.rstrip(" ")
    if a.isascii() and b.isascii():
        ka: str | bytes = a.encode().translate(_ASCII_TABLE, _ASCII_IGNORED)
        kb: str | bytes = b.encode().translate(_ASCII_TABLE, _ASCII_IGNORED)
    else:
        ka, kb = a.translate(_KEYS), b.translate(_KEYS)
    return (ka > kb) - (ka < kb)  # type: ignore[operator]


def mysql_collate(a: str, b: str) -> int:
    """-1, 0 or 1 as MySQL's default collation orders ``a`` and ``b``."""
    return 0 if a == b else _compare(a, b)


def _collation(clock: StatementClock):  # noqa: ANN202 - a closure handed to SQLite
    """:func:`mysql_collate` under the statement's deadline. A collation callback cannot raise and
    SQLite does not look for interrupts inside a sort: past the deadline every comparison answers 0
    at once (and the clock has interrupted the statement), so the sort ends quickly, then SQLite
    stops the statement and undoes it."""
    now = time.perf_counter

    def collate(a: str, b: str) -> int:
        if a == b or clock.tripped or (clock.deadline and now() > clock.deadline and clock.expired()):
            return 0
        return _compare(a, b)

    return collate


# ---------------------------------------------------------------------------- LIKE
_ANY, _ONE = object(), object()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _compile_like(pattern: str, escape: str) -> list[Any]:
    elements: list[Any] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == escape and i + 1 < n:
            elements.append(char_key(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            if not elements or elements[-1] is not _ANY:
                elements.append(_ANY)
        elif ch == "_":
            elements.append(_ONE)
        else:
            elements.append(char_key(ch))
        i += 1
    return elements


_compile_like_cached = functools.lru_cache(maxsize=1024)(_compile_like)
# ASCII text folded for LIKE: one byte per character (ignorable controls keep distinct bytes, as LIKE
# compares character by character).
_LIKE_TABLE = bytes(_ASCII_TABLE[c] or 0x80 | c for c in range(128)) + bytes(range(128, 256))


@functools.lru_cache(maxsize=1024)
def _like_segments(pattern: str, escape: str) -> tuple[bool, bool, list[bytes]] | None:
    """An ASCII pattern without ``_`` as (starts with %, ends with %, the literal runs between the
    %s, folded), for a C-speed match with ``bytes.find``; None for any other pattern."""
    if not pattern.isascii() or not escape.isascii():
        return None
    segments, current, i = [], [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            current.append(pattern[i + 1])
            i += 2
            continue
        if ch == "_":
            return None
        if ch == "%":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    segments.append("".join(current))
    folded = [segment.encode().translate(_LIKE_TABLE) for segment in segments]
    return len(segments) > 1 and not segments[0], len(segments) > 1 and not segments[-1], \
        [f for f in folded if f] or [b""]


def _match_segments(starts_any: bool, ends_any: bool, segments: list[bytes], value: bytes) -> bool:
    if not starts_any and not ends_any and len(segments) == 1:
        return value == segments[0]
    start, end, first, last = 0, len(value), 0, len(segments)
    if not starts_any:
        if not value.startswith(segments[0]):
            return False
        start, first = len(segments[0]), 1
    if not ends_any:
        end = len(value) - len(segments[-1])
        if end < start or not value.endswith(segments[-1]):
            return False
        last -= 1
    for segment in segments[first:last]:
        found = value.find(segment, start, end)
        if found < 0:
            return False
        start = found + len(segment)
    return True


def like_match(pattern: str, value: str, escape: str = "\\", clock: StatementClock | None = None) -> bool:
    """MySQL's ``value LIKE pattern``: per character under the default collation (case- and
    accent-insensitive, no padding), ``%``, ``_`` and an escape character (``\\`` by default).
    Linear in practice, O(len(value) * len(pattern)) at worst (a greedy matcher that only backtracks
    to the last ``%``), and it checks ``clock`` as it goes; ASCII patterns without ``_`` take a
    C-speed path."""
    if value.isascii():
        segments = _like_segments(pattern, escape)
        if segments is not None:
            return _match_segments(*segments, value.encode().translate(_LIKE_TABLE))
    compile_like = _compile_like_cached if len(pattern) <= 256 else _compile_like
    elements = compile_like(pattern, escape)
    keys = [char_key(ch) for ch in value]
    p = v = steps = 0
    star, star_v = -1, 0
    m, n = len(elements), len(keys)
    while v < n:
        steps += 1
        if clock is not None and not steps & 0x3FFF:
            clock.check()
        element = elements[p] if p < m else None
        if element is _ANY:
            star, star_v = p, v
            p += 1
        elif element is not None and (element is _ONE or element == keys[v]):
            p += 1
            v += 1
        elif star >= 0:
            p, star_v = star + 1, star_v + 1
            v = star_v
        else:
            return False
    while p < m and elements[p] is _ANY:
        p += 1
    return p == m


def _like_function(clock: StatementClock, max_pattern: int):  # noqa: ANN202 - a closure handed to SQLite
    def like(pattern: Any, value: Any, escape: Any = "\\") -> int | None:
        if pattern is None or value is None or escape is None:
            return None
        pattern_text, escape_text = _text(pattern), _text(escape)
        if len(pattern_text.encode()) > max_pattern:  # SQLite's own LIKE has this limit (the sandbox sets it)
            clock.error = "LIKE or GLOB pattern too complex"
            raise ValueError(clock.error)
        if len(escape_text) != 1:
            clock.error = "ESCAPE expression must be a single character"
            raise ValueError(clock.error)
        return int(like_match(pattern_text, _text(value), escape_text, clock))

    return like


# ---------------------------------------------------------------------------- string -> number
_NUMBER_PREFIX = re.compile(r"[ \t\n\r\f\v]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", re.ASCII)
_SPACES = " \t\n\r\f\v"


def mysql_to_double(text: str) -> tuple[float, bool]:
    """How MySQL converts a string to a double: (value, exact). The longest numeric prefix after
    leading spaces counts (``'12abc'`` -> 12, ``'1,429'`` -> 1, ``'abc'`` and ``''`` -> 0);
    ``exact`` is False when anything but trailing spaces was cut (MySQL's "Truncated incorrect
    DOUBLE value", an error in a data-changing statement under strict mode)."""
    match = _NUMBER_PREFIX.match(text)
    if match is None:
        return 0.0, False
    try:
        value = float(match.group(1))
    except (ValueError, OverflowError):
        return 0.0, False
    rest = text[match.end():]
    return value, not rest or not rest.strip(_SPACES)


def _num_functions(clock: StatementClock):  # noqa: ANN202 - closures handed to SQLite
    def mysql_num(value: Any) -> Any:
        if value is None or isinstance(value, int | float):
            return value
        return mysql_to_double(_text(value))[0]

    def mysql_num_strict(value: Any) -> Any:
        if value is None or isinstance(value, int | float):
            return value
        text = _text(value)
        number, exact = mysql_to_double(text)
        if not exact:
            shown = text if len(text) <= 64 else text[:61] + "..."
            clock.error = f"Truncated incorrect DOUBLE value: '{shown}'"
            raise ValueError(clock.error)
        return number

    return mysql_num, mysql_num_strict


def install(conn: sqlite3.Connection, clock: StatementClock) -> None:
    """Register the collation, LIKE and the conversion functions on a connection (before tables
    that name the collation are created)."""
    clock.conn = conn
    conn.create_collation(COLLATION, _collation(clock))
    like = _like_function(clock, conn.getlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH))
    conn.create_function("like", 2, like, deterministic=True)
    conn.create_function("like", 3, like, deterministic=True)
    mysql_num, mysql_num_strict = _num_functions(clock)
    conn.create_function(NUM_FUNCTION, 1, mysql_num, deterministic=True)
    conn.create_function(STRICT_NUM_FUNCTION, 1, mysql_num_strict, deterministic=True)


def collated(table: Table) -> Table:
    """``table`` with its TEXT columns declared ``TEXT COLLATE mysql_ci``."""
    columns = [(name, f"TEXT COLLATE {COLLATION}" if kind.strip().upper() == "TEXT" else kind)
               for name, kind in table.columns]
    return Table(table.name, columns, table.rows, table.primary_key, table.foreign_keys)


# ---------------------------------------------------------------------------- the tokenizer
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<sq>'(?:[^'\\]|\\.|'')*(?:'|\\?\Z))
    |(?P<dq>"(?:[^"]|"")*(?:"|\Z))
    |(?P<bt>`(?:[^`]|``)*(?:`|\Z))
    |(?P<br>\[[^\]]*(?:\]|\Z))
    |(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w$]))
    |(?P<word>[\w$]+)
    |(?P<op><=>|<=|>=|<>|!=|==|\|\||<<|>>|->>|->|:=|&&|.)""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"0": "\0", "'": "'", '"': '"', "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a",
            "\\": "\\", "%": "\\%", "_": "\\_"}
_ESCAPE_OR_QUOTE = re.compile(r"\\(.)|''", re.DOTALL)
_DIGIT_CHAR = re.compile(r"[0-9]")
_TERMINATED_STRING = re.compile(r"'(?:[^'\\]|\\.|'')*'", re.DOTALL)

_COMPARISONS = frozenset({"=", "==", "<>", "!=", "<", "<=", ">", ">="})
_SIGNS = frozenset({"+", "-"})
# Tokens after which an operand starts (so a column right after one is the whole operand).
_START_WORDS = frozenset({"WHERE", "AND", "OR", "NOT", "ON", "HAVING", "WHEN", "THEN", "ELSE", "SELECT",
                          "XOR"})
_START_OPS = frozenset({"(", ",", "&&"})
# Tokens before which an operand ends.
_END_WORDS = frozenset({"AND", "OR", "THEN", "WHEN", "ELSE", "END", "ORDER", "GROUP", "LIMIT", "HAVING",
                        "UNION", "EXCEPT", "INTERSECT", "XOR", "WINDOW", "RETURNING", "FROM", "WHERE", "AS",
                        "ASC", "DESC"})
_END_OPS = frozenset({")", ",", ";", "&&"})
_NOT_NAMES = _START_WORDS | _END_WORDS | frozenset(
    {"NULL", "TRUE", "FALSE", "CASE", "IS", "IN", "LIKE", "GLOB", "BETWEEN", "EXISTS", "DISTINCT", "ALL",
     "ANY", "SOME", "BY", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "SET", "VALUES", "INTO",
     "USING"})
_NOT_FUNCTIONS = (_NOT_NAMES - {"EXISTS"}) | frozenset({"OVER", "FILTER", "JOIN", "TABLE", "VIEW", "WITHIN"})
_DML_WORDS = frozenset({"INSERT", "REPLACE", "UPDATE", "DELETE"})
_SET_END_WORDS = frozenset({"WHERE", "FROM", "RETURNING", "ORDER", "LIMIT"})
_NAME_KINDS = frozenset({"word", "bt", "br", "dq"})


class _Statement:
    """One statement's tokens, the significant ones, their nesting, and the edits to make."""

    def __init__(self, sql: str) -> None:
        self.kinds: list[str] = []
        self.texts: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(sql):
            if match.start() != pos:  # never happens: the last alternative takes any character
                raise ValueError("tokenizer gap")
            self.kinds.append(match.lastgroup or "op")
            self.texts.append(match.group())
            pos = match.end()
        self.out = list(self.texts)
        self.sig = [i for i, kind in enumerate(self.kinds) if kind not in ("ws", "comment")]
        self.partner: dict[int, int] = {}  # sig position of "(" <-> its ")"
        self.depth: list[int] = []
        stack: list[int] = []
        for s, i in enumerate(self.sig):
            text = self.texts[i]
            if self.kinds[i] == "op" and text == ")" and stack:
                opened = stack.pop()
                self.partner[opened], self.partner[s] = s, opened
            self.depth.append(len(stack))
            if self.kinds[i] == "op" and text == "(":
                stack.append(s)
        self.upper = [self.texts[i].upper() if self.kinds[i] == "word" else "" for i in self.sig]

    # ------------------------------------------------------------------ token tests (sig positions)
    def op(self, s: int) -> str | None:
        if 0 <= s < len(self.sig) and self.kinds[self.sig[s]] == "op":
            return self.texts[self.sig[s]]
        return None

    def kind(self, s: int) -> str | None:
        return self.kinds[self.sig[s]] if 0 <= s < len(self.sig) else None

    def word(self, s: int) -> str:
        return self.upper[s] if 0 <= s < len(self.sig) else ""

    def is_name(self, s: int) -> bool:
        kind = self.kind(s)
        return kind in _NAME_KINDS and not (kind == "word" and self.upper[s] in _NOT_NAMES)

    def starts_operand(self, s: int) -> bool:
        """Whether an operand begins right after sig position ``s`` (-1: the statement start)."""
        return s < 0 or self.op(s) in _START_OPS or self.word(s) in _START_WORDS

    def ends_operand(self, s: int) -> bool:
        return s >= len(self.sig) or self.op(s) in _END_OPS or self.word(s) in _END_WORDS

    def number_at(self, s: int) -> int | None:
        """The end of a (signed) numeric literal starting at ``s``, else None."""
        if self.op(s) in _SIGNS:
            s += 1
        return s if self.kind(s) == "num" else None

    # ------------------------------------------------------------------ operands
    def operand_before(self, e: int) -> int | None:
        """The start of the simple operand that ends at ``e`` (a column, a string, a call, a group)."""
        kind = self.kind(e)
        if kind == "sq":
            start = e
        elif self.op(e) == ")" and e in self.partner:
            start = self.partner[e]
            if self.kind(start - 1) == "word" and self.upper[start - 1] not in _NOT_FUNCTIONS:
                start -= 1
        elif self.is_name(e):
            start = e
            while self.op(start - 1) == "." and self.is_name(start - 2):
                start -= 2
        else:
            return None
        return start if self.starts_operand(start - 1) else None

    def operand_after(self, s: int) -> int | None:
        """The end of the simple operand that starts at ``s``."""
        kind = self.kind(s)
        if kind == "sq":
            end = s
        elif self.op(s) == "(" and s in self.partner:
            end = self.partner[s]
        elif self.is_name(s):
            end = s
            while self.op(end + 1) == "." and self.is_name(end + 2):
                end += 2
            if self.op(end + 1) == "(" and end == s and self.kind(s) == "word" \
                    and self.upper[s] not in _NOT_FUNCTIONS and end + 1 in self.partner:
                end = self.partner[end + 1]
        else:
            return None
        return end if self.ends_operand(end + 1) else None

    def wrap(self, start: int, end: int, function: str) -> None:
        first, last = self.sig[start], self.sig[end]
        self.out[first] = f"{function}(" + self.out[first]
        self.out[last] = self.out[last] + ")"

    # ------------------------------------------------------------------ statement shape
    def statement_kind(self) -> str:
        """``"dml"`` (a data-changing statement), ``"schema"`` (CREATE/ALTER/DROP) or ``"query"``."""
        first = self.word(0)
        if first in _DML_WORDS:
            return "dml"
        if first in ("CREATE", "ALTER", "DROP"):
            return "schema"
        if first == "WITH":
            for s in range(1, len(self.sig)):
                if self.depth[s] == 0 and self.upper[s] in _DML_WORDS | {"SELECT", "VALUES"}:
                    return "dml" if self.upper[s] in _DML_WORDS else "query"
        return "query"


def _unescape(body: str) -> str:
    def one(match: re.Match[str]) -> str:
        escaped = match.group(1)
        return "'" if escaped is None else _ESCAPES.get(escaped, escaped)

    return _ESCAPE_OR_QUOTE.sub(one, body)


def sqlite_string(value: str) -> str:
    """``value`` as an SQLite string literal (a NUL, which SQLite's parser cannot read, as char(0))."""
    if "\0" in value:
        return "(" + " || char(0) || ".join(sqlite_string(part) for part in value.split("\0")) + ")"
    return "'" + value.replace("'", "''") + "'"


def mysql_number_text(literal: str, negative: bool = False) -> str:
    """The text MySQL stores in a TEXT column for a numeric literal: ``1.50`` -> ``'1.50'`` (a
    DECIMAL keeps its scale), ``007`` -> ``'7'``, ``1.5e2`` -> ``'150'`` (a DOUBLE, shortest form)."""
    if "e" in literal or "E" in literal:
        value = -float(literal) if negative else float(literal)
        if not math.isfinite(value):
            return ("-" if negative else "") + literal  # out of range (an error in MySQL): left as written
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa.removesuffix('.0')}e{int(exponent)}"
        return text
    if "." in literal:
        whole, _, fraction = literal.partition(".")
        whole = whole.lstrip("0") or "0"
        text = f"{whole}.{fraction}" if fraction else whole
    else:
        text = literal.lstrip("0") or "0"
    try:
        zero = Decimal(text) == 0
    except InvalidOperation:
        zero = False
    return f"-{text}" if negative and not zero else text


def _literal_value(stmt: _Statement, start: int, end: int) -> bool:
    """Replace the value ``[sign] number`` at sig positions start..end by MySQL's stored text."""
    number = stmt.number_at(start)
    if number is None or number != end:
        return False
    negative = stmt.op(start) == "-"
    for s in range(start, end):
        stmt.out[stmt.sig[s]] = ""
    stmt.out[stmt.sig[end]] = sqlite_string(mysql_number_text(stmt.texts[stmt.sig[end]], negative))
    return True


def _values_literals(stmt: _Statement) -> None:
    """INSERT/REPLACE ... VALUES (...), (...): number literals become the text MySQL stores."""
    if stmt.word(0) not in ("INSERT", "REPLACE"):
        return
    for s, word in enumerate(stmt.upper):
        if word in ("VALUES", "VALUE") and stmt.depth[s] == 0:
            break
    else:
        return
    s += 1
    while stmt.op(s) == "(" and s in stmt.partner:
        close = stmt.partner[s]
        start = s + 1
        for t in range(s + 1, close + 1):
            if t == close or (stmt.op(t) == "," and stmt.depth[t] == 1):
                if t > start:
                    _literal_value(stmt, start, t - 1)
                start = t + 1
        s = close + 1
        if stmt.op(s) != ",":
            break
        s += 1


def _set_clauses(stmt: _Statement) -> set[int]:
    """The sig positions of assignment ``=`` in SET clauses; number values there become text."""
    assignments: set[int] = set()
    for s, word in enumerate(stmt.upper):
        if word != "SET":
            continue
        depth, expect_target, value_start = stmt.depth[s], True, None
        t = s + 1
        while t <= len(stmt.sig):
            at_level = t < len(stmt.sig) and stmt.depth[t] == depth
            closes = at_level and (stmt.op(t) in (",", ";") or stmt.upper[t] in _SET_END_WORDS
                                   or stmt.upper[t] == "SET")
            ends = t == len(stmt.sig) or closes or (t < len(stmt.sig) and stmt.depth[t] < depth)
            if ends:
                if value_start is not None and t > value_start:
                    _literal_value(stmt, value_start, t - 1)
                value_start = None
                if t == len(stmt.sig) or stmt.op(t) != "," or stmt.depth[t] != depth:
                    break
                expect_target = True
            elif at_level and expect_target and stmt.op(t) == "=":
                assignments.add(t)
                expect_target, value_start = False, t + 1
            t += 1
    return assignments


def _wrap_comparisons(stmt: _Statement, skip: set[int], function: str) -> None:
    """Wrap the non-numeric side of every comparison with a numeric literal in ``function``."""
    n = len(stmt.sig)
    for s in range(n):
        if s in skip:
            continue
        op, word = stmt.op(s), stmt.upper[s]
        if op in _COMPARISONS:
            if stmt.number_at(s + 1) is not None:
                start = stmt.operand_before(s - 1)
                if start is not None and stmt.number_at(start) is None:
                    stmt.wrap(start, s - 1, function)
            elif stmt.kind(s - 1) == "num":
                left = s - 2 if stmt.op(s - 2) in _SIGNS else s - 1
                if stmt.starts_operand(left - 1):
                    end = stmt.operand_after(s + 1)
                    if end is not None:
                        stmt.wrap(s + 1, end, function)
        elif word == "BETWEEN":
            low = stmt.number_at(s + 1)
            if low is not None and stmt.word(low + 1) == "AND" and stmt.number_at(low + 2) is not None:
                last = s - 2 if stmt.word(s - 1) == "NOT" else s - 1
                start = stmt.operand_before(last)
                if start is not None:
                    stmt.wrap(start, last, function)
        elif word == "IN" and stmt.op(s + 1) == "(" and s + 1 in stmt.partner:
            close, t, numbers = stmt.partner[s + 1], s + 2, True
            while numbers and t < close:
                end = stmt.number_at(t)
                numbers = end is not None and (stmt.op(end + 1) == "," or end + 1 == close)
                t = (end or t) + 2
            if numbers and close > s + 2:
                last = s - 2 if stmt.word(s - 1) == "NOT" else s - 1
                start = stmt.operand_before(last)
                if start is not None:
                    stmt.wrap(start, last, function)


def rewrite_sql(sql: str) -> str:
    """One statement of MySQL SQL as SQLite SQL with MySQL's meaning (see the module docstring).

    Returns ``sql`` itself when nothing needs rewriting. Never evaluates anything.
    """
    if "\\" not in sql and "#" not in sql and _DIGIT_CHAR.search(sql) is None:
        return sql  # no escape, no MySQL comment, no number: nothing to rewrite (the common quick case)
    stmt = _Statement(sql)
    for i, kind in enumerate(stmt.kinds):
        if kind == "sq" and "\\" in stmt.texts[i]:
            text = stmt.texts[i]
            previous = stmt.texts[i - 1].upper() if i and stmt.kinds[i - 1] == "word" else ""
            if _TERMINATED_STRING.fullmatch(text) and previous not in ("X", "B"):
                stmt.out[i] = sqlite_string(_unescape(text[1:-1]))
        elif kind == "comment" and stmt.texts[i].startswith("#"):
            stmt.out[i] = "--" + stmt.texts[i][1:]
    statement = stmt.statement_kind()
    if statement != "schema":
        _values_literals(stmt)
        assignments = _set_clauses(stmt)
        _wrap_comparisons(stmt, assignments, STRICT_NUM_FUNCTION if statement == "dml" else NUM_FUNCTION)
    out = "".join(stmt.out)
    return sql if out == sql else out


_WRAPPERS = (f"{STRICT_NUM_FUNCTION}(", f"{NUM_FUNCTION}(")


def unwrap_name(name: str) -> str:
    """A result column name without the ``mysql_num(...)`` wrappers :func:`rewrite_sql` added (one pass)."""
    if NUM_FUNCTION not in name:
        return name
    out: list[str] = []
    closes: list[int] = []  # depths at which a ")" closes a wrapper (and is dropped)
    depth, quote, i = 0, "", 0
    while i < len(name):
        ch = name[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "m" and name.startswith(_WRAPPERS, i):
            wrapper = next(w for w in _WRAPPERS if name.startswith(w, i))
            closes.append(depth)
            depth += 1
            i += len(wrapper)
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if closes and closes[-1] == depth:
                closes.pop()
                i += 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------- the sandbox
class MySQLSandbox(SQLiteSandbox):
    """:class:`SQLiteSandbox` that, for a database loaded with ``mysql=True``, runs statements with
    MySQL's semantics (see the module docstring); with ``mysql=False`` it is plain SQLite."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mysql = False
        self.clock = StatementClock(self.timeout_s)

    def load(self, tables: Sequence[Table], *, mysql: bool = False) -> None:  # type: ignore[override]
        """Replace the database with a fresh one holding ``tables`` (MySQL semantics if ``mysql``)."""
        self.mysql = mysql
        if not mysql:
            super().load(tables)
            return
        super().load([])  # a fresh, hardened, empty connection; the collation must exist before the tables
        conn = self.conn
        install(conn, self.clock)
        conn.execute("BEGIN")
        for table in map(collated, tables):
            conn.execute(table.create_sql())
            if table.rows:
                marks = ", ".join("?" * len(table.columns))
                conn.executemany(f"INSERT INTO {quote_ident(table.name)} VALUES ({marks})", table.rows)
        conn.execute("COMMIT")

    def execute(self, sql: str) -> QueryResult:
        if not self.mysql or not isinstance(sql, str):
            return super().execute(sql)
        try:
            rewritten = rewrite_sql(sql)
        except (ValueError, OverflowError, RecursionError):  # a rewrite bug must not break the step
            rewritten = sql  # run it as written
        self.clock.start(self.timeout_s)
        try:
            result = super().execute(rewritten)
        finally:
            self.clock.deadline = 0.0
        if self.clock.tripped:  # whatever SQLite said (interrupted, a function's exception, rows): too late
            result = QueryResult(error=f"statement cancelled after the {self.timeout_s:g} s time limit",
                                 elapsed_s=result.elapsed_s)
        elif result.error and self.clock.error and "user-defined function raised exception" in result.error:
            result.error = self.clock.error
        elif result.error and result.error.startswith("unsafe use of"):
            result.error += (" (this database emulates MySQL with functions that SQLite cannot run inside"
                             " a view or trigger)")
        if rewritten is not sql and result.columns:
            result.columns = [unwrap_name(c) for c in result.columns]
        return result
