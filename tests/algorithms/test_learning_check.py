"""The CPU learning check (``benchmarks/learning_check.py``): its task family and statistics (fast), and a
short PPO run whose training reward must rise (``slow``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import learning_check as lc  # noqa: E402

from cmat_gym.evaluation import sign_test_p  # noqa: E402


def test_pick_scores_the_first_letter_and_splits_tasks() -> None:
    from cmat_gym.cmat.wrapper import make_cmat

    env = make_cmat(lc.ensure_registered(), checker="none", memory=None, split="test", max_cycles=1)
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            assert "vowel" in obs
            assert env.step(" Apple pie")[1] == 1.0
            env.reset(seed=seed)
            assert env.step("zebra")[1] == 0.0
            env.reset(seed=seed)
            assert env.step("42")[1] == 0.0
        train_ids = {lc.PickEnv.generate_task(s, "train", 1).instruction for s in range(50)}
        test_ids = {lc.PickEnv.generate_task(s, "test", 1).instruction for s in range(50)}
        assert not train_ids & test_ids  # held-out prompts are new prompts
    finally:
        env.close()


def test_mcnemar_and_sign_test() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(3, 6) == 1.0
    result = lc.mcnemar([0, 0, 0, 1, 1, 0], [1, 1, 1, 1, 0, 0])
    assert (result["gained"], result["lost"]) == (3, 1)
    assert result["p"] == pytest.approx(2 * (1 + 4) / 16)


@pytest.mark.slow
def test_ppo_raises_the_training_reward_on_pick(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    summary = lc.main(["--seeds", "1", "--iterations", "6", "--episodes-per-iteration", "16",
                       "--eval-episodes", "16", "--output-dir", str(tmp_path)])
    run = summary["runs"][0]
    assert run["train_reward_last"] > run["train_reward_first"] + 0.1, run
    assert run["after_rate"] > run["before_rate"], run  # greedy, on held-out (test-split) prompts
    # a second call reuses the finished seed instead of training again
    assert lc.main(["--seeds", "1", "--iterations", "6", "--episodes-per-iteration", "16",
                    "--eval-episodes", "16", "--output-dir", str(tmp_path)])["runs"][0] == run
