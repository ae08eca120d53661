"""The demo (``make demo``), smoke-tested with the tiny random model and a tiny-random LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmat_gym import demo

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on tiny-random, its B matrices made non-zero so that it changes the model."""
    import torch

    from cmat_gym.agents.lm_policy import LMPolicy

    policy = LMPolicy.from_pretrained("tiny-random")
    policy.add_adapter("lora", r=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("adapter") / "tiny-lora"
    policy.save_adapter(path)
    return path


def test_demo_plays_zero_shot_and_tuned_side_by_side(capsys: pytest.CaptureFixture[str], tiny_adapter: Path) -> None:
    status = demo.main(["--model", "tiny-random", "--adapter", str(tiny_adapter), "--episodes", "2",
                        "--max-new-tokens", "6", "--max-rounds", "2", "--reference-episodes", "3", "--threads", "1",
                        "--device", "cpu"])
    assert status == 0
    out = capsys.readouterr().out
    assert "oracle policy" in out and "random policy" in out and "success rate 1.000 (3/3)" in out
    assert "zero-shot vs tuned" in out and "not picked by outcome" in out
    assert "| task | zero-shot: solved, steps, rejections | tuned: solved, steps, rejections |" in out
    rows = [line for line in out.splitlines() if line.startswith("| db-real/test/d1/")]
    assert len(rows) == 2 and len({row.split(" | ")[0] for row in rows}) == 2
    assert "--- zero-shot transcript, task" in out and "--- tuned transcript, task" in out
    assert "--- CHECKER ---" in out and "REJECT" in out
    assert "wall time: zero-shot" in out and "tuned" in out.split("wall time:")[-1]


def test_demo_without_the_bundled_adapter_plays_zero_shot_only(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from cmat_gym.agents import policies

    monkeypatch.setattr(policies, "BUNDLED_ADAPTER_DIR", tmp_path)  # an install without the adapter
    status = demo.main(["--model", "tiny-random", "--episodes", "1", "--max-new-tokens", "4", "--max-rounds", "1",
                        "--reference-episodes", "1", "--threads", "1", "--device", "cpu"])
    assert status == 0
    out = capsys.readouterr().out
    assert "(no tuned agent: the bundled adapter 'bundled' is missing" in out
    assert "| task | zero-shot: solved, steps, rejections |" in out and "tuned transcript" not in out
