"""``cmat-gym serve --model tiny-random`` in its own process on a free loopback port, for the tests that
drive the OpenAI-compatible server over real HTTP (tests/test_serve.py, tests/scale)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving_tiny_random(start_timeout_s: float = 120.0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start the server, wait until ``/v1/models`` answers, yield ``(base_url, process)``; kill it after.

    stderr is piped (the server's log, shown when it fails to start); stdout is discarded so that an
    unread pipe can never block the server."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cmat_gym.cli", "serve", "--model", "tiny-random", "--port", str(port),
         "--device", "cpu", "--threads", "1", "--max-tokens", "24", "--max-batch", "4"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"serve did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
