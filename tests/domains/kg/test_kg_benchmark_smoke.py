"""benchmarks/kg_throughput.py runs end to end with tiny sizes and exits 0 (it reports; the figures
live in docs/results/kg.md, never in tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

import kg_throughput  # noqa: E402


def test_kg_throughput_prints_every_section_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "kg.json"
    assert kg_throughput.main(["--tasks", "2", "--repeats", "1", "--worlds", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "tool-call step" in out and "world generation + load" in out and "reset" in out
    assert out.count("target <=") == 4  # three difficulties and the world
    report = json.loads(out_json.read_text())
    assert [r["difficulty"] for r in report["steps"]] == [1, 2, 3] and report["worlds"]["triples_median"] > 100
