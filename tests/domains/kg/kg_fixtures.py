"""Fixtures of the KG tests: the Freebase-shaped fixture graph, and a real SPARQL endpoint serving it
(a loopback ``http.server`` speaking the SPARQL 1.1 protocol over a pyoxigraph store).

A plain module, not a ``conftest.py``: ``tests/conftest.py`` is imported as ``conftest`` by other
tests, and a second module of that name would shadow it. Test modules import the fixture by name."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyoxigraph as ox
import pytest

FIXTURE = Path(__file__).with_name("freebase_fixture.ttl")
# The dev tasks (indices in knowledgegraph/dev.json) the fixture graph was written for.
FIXTURE_TASKS = (0, 4, 10, 12)


class SPARQLServer:
    """A SPARQL protocol server on 127.0.0.1 (GET ``?query=`` or POST form), JSON results."""

    def __init__(self, store: ox.Store) -> None:
        self.store = store
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _answer(self, query: str | None) -> None:
                server.requests += 1
                if not query:
                    self.send_error(400, "missing query")
                    return
                try:
                    results = server.store.query(query)
                    body = results.serialize(format=ox.QueryResultsFormat.JSON)
                except SyntaxError as exc:
                    self.send_error(400, f"syntax error: {exc}"[:200])
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/sparql-results+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                self._answer(params.get("query", [None])[0])

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                params = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
                self._answer(params.get("query", [None])[0])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sparql"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def fixture_store() -> ox.Store:
    """A store holding the fixture graph."""
    store = ox.Store()
    store.bulk_load(path=str(FIXTURE), format=ox.RdfFormat.TURTLE)
    return store


@pytest.fixture(name="sparql_server")  # a test module imports sparql_server_fixture; tests ask for sparql_server
def sparql_server_fixture() -> Iterator[SPARQLServer]:
    """A live loopback SPARQL endpoint serving the fixture graph."""
    server = SPARQLServer(fixture_store())
    try:
        yield server
    finally:
        server.close()
