"""The demo (``make demo``), smoke-tested with the tiny random model."""

from __future__ import annotations

from cmat_gym import demo


def test_demo_runs_with_a_tiny_model(capsys) -> None:
    status = demo.main(["--model", "tiny-random", "--episodes", "2", "--max-new-tokens", "6", "--max-rounds", "2",
                        "--reference-episodes", "3", "--threads", "1", "--device", "cpu"])
    assert status == 0
    out = capsys.readouterr().out
    assert "oracle policy" in out and "random policy" in out and "success rate 1.000 (3/3)" in out
    assert "tiny-random as the Assistant, CMAT loop with the rule checker" in out
    assert "--- transcript of episode" in out and "--- CHECKER ---" in out and "REJECT" in out
    assert "success rate 0.000 (0/2)" in out and "rejected actions per episode" in out
    assert "episodes/s" in out
