"""A short version of ``benchmarks/web_soak.py``: episodes against one shop served in its own process;
its memory and file descriptors stay flat, sessions are ended or capped, and the oracle still wins."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("web_soak_bench", REPO / "benchmarks" / "web_soak.py")
web_soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(web_soak)


def test_short_soak_against_one_served_shop() -> None:
    result = web_soak.main(["--episodes", "60", "--every", "20", "--abandon", "0.1"])
    assert result["oracle_success_rate"] == 1.0
    assert result["flat"], result
    # every client ended its session on close; only the abandoned ones are left on the server
    assert result["sessions_after_close"] == result["end"]["sessions"] - result["clients"]
