"""The throughput benchmarks run end to end with tiny sizes and exit 0 (a benchmark reports, it does
not fail on a missed target); the figures themselves live in docs/results.md, never in tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import env_throughput  # noqa: E402

from cmat_gym.domains.os.backend import is_available  # noqa: E402


def test_env_throughput_prints_every_section_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status = env_throughput.main(["--episodes", "3", "--repeats", "1", "--difficulty", "1", "--cmat-episodes", "2",
                                  "--os-steps", "4", "--os-resets", "2", "--os-vector", "2"])
    out = capsys.readouterr().out
    assert status == 0
    assert "median SQL step" in out and "CMAT loop overhead" in out
    if is_available():
        assert "cmat/OS-v0" in out and "median reset, given task" in out and "2 envs stepping at once" in out


def test_cpu_matmul_rows_prints_both_ways_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    import cpu_matmul_rows

    assert cpu_matmul_rows.main(["--model", "tiny-random", "--threads", "1", "--rows", "1", "3", "--repeats", "1"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(row[0], row[1]) for row in lines] == [("1", "1"), ("1", "3")]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and row[4].endswith("x") for row in lines)
