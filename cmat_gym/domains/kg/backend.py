"""The KG engines: an embedded RDF store (pyoxigraph, SPARQL 1.1) or any SPARQL endpoint over HTTP.

Both run the same SPARQL text and return rows of plain strings: an IRI in the Freebase namespace
becomes its local name (``m.0abc``, ``people.person.employer``), a literal its lexical form. Every
query runs under a wall-clock limit and a row cap; problems come back as :class:`QueryError`
(the env turns them into observations).

**Injection.** No agent text is ever pasted into a query. Names that become IRIs must match
:data:`NAME` (letters, digits, underscores and dots: Freebase ids and ``domain.type.property``
relations; :func:`iri` raises otherwise), and values are written by :func:`literal` from parsed
numbers or dates only. Entity *names* ("Barack Obama") are looked up in Python, never queried.

**Time limits.** pyoxigraph has no query timeout: results are pulled lazily and the pull stops at
the deadline or the cap. A query that does all its work before the first row (an aggregate, an
ORDER BY) can overrun; the queries built here are the few shapes of :mod:`~cmat_gym.domains.kg.sexpr`
on validated names, so none is unbounded. An endpoint gets the limit as the HTTP timeout and as
Virtuoso's ``timeout`` parameter (milliseconds).
"""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import pyoxigraph as ox

NS = "http://rdf.freebase.com/ns/"
XSD = "http://www.w3.org/2001/XMLSchema#"
NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
MAX_NAME_CHARS = 200
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ROWS = 1000

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"-?\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?")
_XSD_TYPES = {"integer", "int", "decimal", "double", "float", "date", "dateTime", "gYear", "gYearMonth"}


class QueryError(Exception):
    """A query failed: bad syntax, a timeout, an unreachable endpoint (the message says which)."""


def is_name(text: object) -> bool:
    """Whether ``text`` may become an IRI: a Freebase-style dotted name (see :data:`NAME`)."""
    return isinstance(text, str) and len(text) <= MAX_NAME_CHARS and NAME.fullmatch(text) is not None


@functools.lru_cache(maxsize=8192)  # a world has a few hundred names; every step writes some of them
def iri(name: str) -> str:
    """``<http://rdf.freebase.com/ns/name>`` for a validated ``name``; ValueError for anything else."""
    if not is_name(name):
        raise ValueError(f"Expects a Freebase-style name (letters, digits, '_' and '.'), actual {name[:80]!r}")
    return f"<{NS}{name}>"


def literal(value: str) -> str:
    """A SPARQL literal for a number (``1990``, ``3.5``) or a date (``1990-05-01``), optionally written
    with an XSD type as s-expressions do (``1990^^http://www.w3.org/2001/XMLSchema#gYear``).
    ValueError for anything else: no other text ever reaches a query as a value."""
    text, _, datatype = value.strip().partition("^^")
    datatype = datatype.strip("<>")
    short = datatype[len(XSD):] if datatype.startswith(XSD) else datatype.removeprefix("xsd:")
    if datatype and short not in _XSD_TYPES:
        raise ValueError(f"Expects an XSD numeric or date type, actual {datatype[:80]!r}")
    text = text.strip('"')
    if _NUMBER.fullmatch(text) and short not in ("date", "dateTime", "gYear", "gYearMonth"):
        number = float(text)
        if short in ("integer", "int") or (not short and number.is_integer() and "." not in text and "e" not in text.lower()):
            return str(int(number))
        return repr(number) if short in ("", "double", "float") else f'"{number!r}"^^<{XSD}decimal>'
    if _DATE.fullmatch(text):
        kind = short or ("dateTime" if "T" in text else {4: "gYear", 7: "gYearMonth"}.get(len(text.lstrip("-")), "date"))
        return f'"{text}"^^<{XSD}{kind}>'
    raise ValueError(f"Expects a number or a date, actual {text[:80]!r}")


def local(term: str) -> str:
    """An IRI's local name when it is in the Freebase namespace, else the IRI itself."""
    return term[len(NS):] if term.startswith(NS) else term


# ---------------------------------------------------------------------------- backends
class SPARQLBackend(ABC):
    """Runs SELECT queries; every row is a tuple of strings (local names or literal values).

    Args:
        timeout_s: wall-clock limit of one query.
        max_rows: rows kept per query (the rest are dropped; ``truncated`` says so).
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.timeout_s = float(timeout_s)
        self.max_rows = int(max_rows)
        self.truncated = False  # whether the last query hit max_rows
        self.queries = 0
        self.log: list[str] | None = None  # set to a list to record every query run (benchmarks, audits)

    @abstractmethod
    def select(self, query: str, max_rows: int | None = None) -> list[tuple[str, ...]]:
        """The rows of a SELECT query (at most ``max_rows``, default ``self.max_rows``); QueryError."""

    def close(self) -> None:  # noqa: B027 (most backends hold nothing to release)
        """Release the backend (idempotent)."""


class OxigraphBackend(SPARQLBackend):
    """An embedded in-memory pyoxigraph store (the default backend).

    Args:
        store: an existing :class:`pyoxigraph.Store` (default: a new empty one).
        timeout_s, max_rows: see :class:`SPARQLBackend`.
    """

    def __init__(self, store: ox.Store | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_rows: int = DEFAULT_MAX_ROWS) -> None:
        super().__init__(timeout_s, max_rows)
        self.store = store if store is not None else ox.Store()

    @classmethod
    def from_file(cls, path: str, **kwargs: float | int) -> OxigraphBackend:
        """A store loaded from an RDF file (Turtle ``.ttl`` or N-Triples ``.nt``)."""
        backend = cls(**kwargs)  # type: ignore[arg-type]
        fmt = ox.RdfFormat.TURTLE if str(path).endswith(".ttl") else ox.RdfFormat.N_TRIPLES
        backend.store.bulk_load(path=str(path), format=fmt)
        return backend

    def select(self, query: str, max_rows: int | None = None) -> list[tuple[str, ...]]:
        cap = self.max_rows if max_rows is None else max_rows
        self.queries += 1
        if self.log is not None:
            self.log.append(query)
        deadline = time.perf_counter() + self.timeout_s
        try:
            solutions = self.store.query(query)
        except SyntaxError as exc:
            raise QueryError(f"SPARQL syntax error: {exc}") from None
        except OSError as exc:
            raise QueryError(f"store error: {exc}") from None
        if not isinstance(solutions, ox.QuerySolutions):
            raise QueryError("Expects a SELECT query")
        rows: list[tuple[str, ...]] = []
        self.truncated = False
        try:
            for i, solution in enumerate(solutions):
                if len(rows) >= cap:
                    self.truncated = True
                    break
                rows.append(tuple(map(_ox_text, solution)))
                if i & 255 == 255 and time.perf_counter() > deadline:
                    raise QueryError(f"query timed out after {self.timeout_s:g} s")
        except (OSError, RuntimeError) as exc:
            raise QueryError(f"query failed: {exc}") from None
        if time.perf_counter() > deadline:
            raise QueryError(f"query timed out after {self.timeout_s:g} s")
        return rows


def _ox_text(term: ox.NamedNode | ox.Literal | ox.BlankNode | None) -> str:
    if term is None:
        return ""
    value = term.value
    if type(term) is ox.NamedNode and value.startswith(NS):
        return value[_NS_LEN:]
    return value


_NS_LEN = len(NS)


class SPARQLEndpoint(SPARQLBackend):
    """A SPARQL 1.1 endpoint over HTTP (a Virtuoso with Freebase, as AgentBench uses; any server that
    answers the SPARQL protocol with ``application/sparql-results+json``).

    Args:
        url: the endpoint's URL (``http://localhost:3001/sparql``).
        timeout_s, max_rows: see :class:`SPARQLBackend`.
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        super().__init__(timeout_s, max_rows)
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"Expects an http(s) endpoint URL, actual {url!r}")
        self.url = url

    def select(self, query: str, max_rows: int | None = None) -> list[tuple[str, ...]]:
        cap = self.max_rows if max_rows is None else max_rows
        self.queries += 1
        if self.log is not None:
            self.log.append(query)
        body = urllib.parse.urlencode({"query": query, "timeout": int(self.timeout_s * 1000)}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Accept": "application/sparql-results+json",
            "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (http(s) only)
                # Read at most ~64 MB: a runaway answer must not exhaust memory.
                data = json.loads(response.read(64 << 20))
        except urllib.error.HTTPError as exc:
            raise QueryError(f"endpoint error {exc.code}: {exc.read(500).decode('utf-8', 'replace')}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise QueryError(f"endpoint unreachable or too slow ({self.url}): {exc}") from None
        except json.JSONDecodeError as exc:
            raise QueryError(f"endpoint answered something other than SPARQL JSON results: {exc}") from None
        try:
            names = data["head"]["vars"]
            bindings = data["results"]["bindings"]
        except (KeyError, TypeError):
            raise QueryError("endpoint answered JSON without head.vars / results.bindings") from None
        self.truncated = len(bindings) > cap
        return [tuple(_json_text(b.get(n)) for n in names) for b in bindings[:cap]]


def _json_text(term: dict[str, str] | None) -> str:
    if not term:
        return ""
    value = str(term.get("value", ""))
    return local(value) if term.get("type") == "uri" else value


# ---------------------------------------------------------------------------- writing RDF
def ntriples(triples: Iterable[tuple[str, str, str | int | float]]) -> str:
    """N-Triples text of ``(subject, predicate, object)`` names; an object that is an int, a float,
    or a string starting with ``"`` (an already-written literal) is a literal, else a name."""
    lines = []
    for s, p, o in triples:
        if isinstance(o, bool) or not isinstance(o, int | float | str):
            raise TypeError(f"Expects a name or a literal, actual {o!r}")
        if isinstance(o, int):
            obj = f'"{o}"^^<{XSD}integer>'
        elif isinstance(o, float):
            obj = f'"{o!r}"^^<{XSD}double>'
        elif o.startswith('"'):
            obj = o
        else:
            obj = iri(o)
        lines.append(f"{iri(s)} {iri(p)} {obj} .")
    return "\n".join(lines) + "\n"


def string_literal(text: str) -> str:
    """An N-Triples string literal (``type.object.name`` values)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"@en'


def load_ntriples(text: str, backend: OxigraphBackend) -> None:
    """Load N-Triples text into an in-memory store."""
    backend.store.bulk_load(text.encode("utf-8"), format=ox.RdfFormat.N_TRIPLES)


def rows_column(rows: Sequence[tuple[str, ...]], index: int = 0) -> list[str]:
    """One column of query rows."""
    return [row[index] for row in rows]
