"""The KG engines and the s-expression compiler: every form against a real pyoxigraph store, the
endpoint backend against a real HTTP server, limits, and SPARQL injection through names and values."""

from __future__ import annotations

import pytest
from kg_fixtures import SPARQLServer, fixture_store, sparql_server_fixture  # noqa: F401 (a fixture)

from cmat_gym.domains.kg import sexpr
from cmat_gym.domains.kg.backend import (
    OxigraphBackend,
    QueryError,
    SPARQLEndpoint,
    iri,
    literal,
    load_ntriples,
    ntriples,
    rows_column,
    string_literal,
)
from cmat_gym.domains.kg.tasks import execute

# A small graph: a wrote b1, b2; c wrote b2, b3; pages b1=100, b2=300, b3=200; born 1950/1980.
TRIPLES = [
    ("m.0a", "type.object.type", "people.person"), ("m.0c", "type.object.type", "people.person"),
    ("m.0b1", "type.object.type", "book.book"), ("m.0b2", "type.object.type", "book.book"),
    ("m.0b3", "type.object.type", "book.book"),
    ("m.0b1", "book.book.author", "m.0a"), ("m.0b2", "book.book.author", "m.0a"),
    ("m.0b2", "book.book.author", "m.0c"), ("m.0b3", "book.book.author", "m.0c"),
    ("m.0b1", "book.book.pages", 100), ("m.0b2", "book.book.pages", 300), ("m.0b3", "book.book.pages", 200),
    ("m.0a", "people.person.born", '"1950-01-02"^^<http://www.w3.org/2001/XMLSchema#date>'),
    ("m.0c", "people.person.born", '"1980-05-06"^^<http://www.w3.org/2001/XMLSchema#date>'),
    ("m.0a", "type.object.name", string_literal('Ann "the" Author\nx')),
]


@pytest.fixture
def backend() -> OxigraphBackend:
    b = OxigraphBackend()
    load_ntriples(ntriples(TRIPLES), b)
    return b


@pytest.mark.parametrize(("program", "expected"), [
    ("(JOIN book.book.author m.0a)", ["m.0b1", "m.0b2"]),
    ("(JOIN (R book.book.author) m.0b2)", ["m.0a", "m.0c"]),
    ("(JOIN book.book.author_inv m.0b2)", ["m.0a", "m.0c"]),
    ("(AND (JOIN book.book.author m.0a) (JOIN book.book.author m.0c))", ["m.0b2"]),
    ("(AND book.book (JOIN book.book.author m.0c))", ["m.0b2", "m.0b3"]),
    ("(OR (JOIN book.book.author m.0a) (JOIN book.book.author m.0c))", ["m.0b1", "m.0b2", "m.0b3"]),
    ("(ARGMAX (JOIN book.book.author m.0c) book.book.pages)", ["m.0b2"]),
    ("(ARGMIN book.book book.book.pages)", ["m.0b1"]),
    ("(ARGMAX people.person people.person.born)", ["m.0c"]),
    ("(COUNT (JOIN book.book.author m.0c))", ["2"]),
    ("(AND book.book (lt book.book.pages 200))", ["m.0b1"]),
    ("(AND book.book (le book.book.pages 200))", ["m.0b1", "m.0b3"]),
    ("(AND book.book (gt book.book.pages 150.5))", ["m.0b2", "m.0b3"]),
    ("(AND book.book (ge book.book.pages 300^^http://www.w3.org/2001/XMLSchema#integer))", ["m.0b2"]),
    ("(AND people.person (lt people.person.born 1960-01-01))", ["m.0a"]),
    ("(JOIN book.book.pages 300)", ["m.0b2"]),
])
def test_every_form_compiles_and_runs(backend: OxigraphBackend, program: str, expected: list[str]) -> None:
    assert sorted(execute(backend, sexpr.parse(program))) == expected


def test_parse_and_write_round_trip_and_reject_bad_text() -> None:
    text = "(AND book.book (JOIN (R book.book.author) m.0a))"
    assert sexpr.write(sexpr.parse(text)) == text
    for bad in ("(", ")", "(JOIN a", "(a) (b)", "", "(" * 100 + ")" * 100):
        with pytest.raises(sexpr.SExprError):
            sexpr.parse(bad)
    with pytest.raises(sexpr.SExprError):
        sexpr.members_query(sexpr.parse("(JOIN (COUNT m.0a) m.0b)"), 10)


HOSTILE = ['x> } ; DROP ALL ; SELECT * WHERE { ?s ?p ?o', 'm.0a> . ?s ?p ?o . <x', 'a"b', "a'b", "a\nb", "a<b",
           "a{b}", "m.0a }", "book.book.author> ?x } #", "a b", "", "#0", "a.b\u0000", "ns:x", "<http://x>"]


@pytest.mark.parametrize("name", HOSTILE)
def test_names_that_are_not_freebase_names_never_become_iris(name: str) -> None:
    with pytest.raises(ValueError):
        iri(name)
    # in a program, in every position a name can take
    for program in (("JOIN", name, "m.0a"), ("JOIN", ("R", "book.book.author"), name), ("ARGMAX", "book.book", name),
                    ("AND", "book.book", ("lt", name, "3")), ("AND", "book.book", ("lt", "book.book.pages", name))):
        with pytest.raises((ValueError, sexpr.SExprError)):
            sexpr.members_query(program, 10)


@pytest.mark.parametrize("value", ["1) } DROP", '"x"', "1.0^^<evil>", "1^^http://x/y", "1e5; x", "2020-01-01T"])
def test_values_are_only_numbers_and_dates(value: str) -> None:
    with pytest.raises(ValueError):
        literal(value)


def test_literals_are_written_from_parsed_values() -> None:
    assert literal("1990") == "1990"
    assert literal("3.5") == "3.5"
    assert literal("1990-05-01") == '"1990-05-01"^^<http://www.w3.org/2001/XMLSchema#date>'
    assert literal("1990^^http://www.w3.org/2001/XMLSchema#gYear") == \
        '"1990"^^<http://www.w3.org/2001/XMLSchema#gYear>'


def test_string_literals_escape_quotes_and_newlines(backend: OxigraphBackend) -> None:
    rows = backend.select(sexpr.names_query(["m.0a"]))
    assert rows == [("m.0a", 'Ann "the" Author\nx')]


def test_row_cap_and_timeout(backend: OxigraphBackend) -> None:
    assert len(backend.select("SELECT ?s WHERE { ?s ?p ?o }", max_rows=3)) == 3 and backend.truncated
    big = OxigraphBackend(timeout_s=0.05)
    load_ntriples(ntriples([(f"m.0n{i}", "x.y.z", f"m.0n{i + 1}") for i in range(300)]), big)
    # a cross product of 300^3 rows is pulled lazily: the deadline stops it
    with pytest.raises(QueryError, match="timed out"):
        big.select("SELECT * WHERE { ?a ?p ?b . ?c ?q ?d . ?e ?r ?f }", max_rows=10**9)
    with pytest.raises(QueryError, match="syntax"):
        backend.select("SELECT WHERE {")


def test_the_endpoint_backend_runs_the_same_queries_over_http(sparql_server: SPARQLServer) -> None:
    endpoint = SPARQLEndpoint(sparql_server.url, timeout_s=5)
    local = OxigraphBackend(fixture_store())
    for program in ("(JOIN (R media_common.quotation.author) m.09rl290)",
                    "(COUNT (AND (JOIN (R cvg.cvg_publisher.game_versions_published) m.01n073) "
                    "(JOIN (R cvg.computer_game_region.versions_released_in_this_region) m.09c7w0)))",
                    "(ARGMAX (JOIN (R music.release.track) (JOIN (R music.album.releases) m.03xxf2z)) "
                    "music.recording.length)"):
        query = sexpr.members_query(sexpr.parse(program), 100)
        assert sorted(endpoint.select(query)) == sorted(local.select(query)) != []
    relations = sorted(rows_column(endpoint.select(sexpr.relations_query("m.0zd6", 10))))
    assert relations == ["computer.computer.includes_models", "type.object.type"]  # the env hides type.*
    with pytest.raises(QueryError, match="endpoint error 400"):
        endpoint.select("SELECT WHERE {")
    with pytest.raises(ValueError, match="http"):
        SPARQLEndpoint("file:///etc/passwd")


def test_the_endpoint_backend_caps_rows_and_times_out(sparql_server: SPARQLServer) -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    capped = SPARQLEndpoint(sparql_server.url, max_rows=2)
    assert len(capped.select("SELECT ?s WHERE { ?s ?p ?o }")) == 2 and capped.truncated

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            time.sleep(2)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow = SPARQLEndpoint(f"http://127.0.0.1:{server.server_address[1]}/sparql", timeout_s=0.3)
        start = time.perf_counter()
        with pytest.raises(QueryError, match="too slow"):
            slow.select("SELECT ?s WHERE { ?s ?p ?o }")
        assert time.perf_counter() - start < 1.5
    finally:
        server.shutdown()
        server.server_close()
