"""Tests of ``python -m algorithms.grpo_train`` (TRL GRPOTrainer through ``rollout_func``) and of
``benchmarks/train_throughput.py`` (CPU, tiny-random model, tiny settings).

The run test does one GRPO step and checks everything that needs a run in one place.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
trl = pytest.importorskip("trl")

from algorithms import grpo_train  # noqa: E402
from algorithms.common.rollout import Episode  # noqa: E402
from algorithms.grpo_train import (  # noqa: E402
    CMATRollout,
    episode_to_trl,
    parse_args,
    task_dataset,
    task_prompt,
    task_seed,
)
from algorithms.ppo_train import derive_seed  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--model",
    "tiny-random",
    "--device",
    "cpu",
    "--episodes-per-iteration",
    "4",
    "--num-generations",
    "2",
    "--micro-batch-size",
    "2",
    "--max-turns",
    "2",
    "--max-new-tokens",
    "6",
    "--max-seq-len",
    "1024",
    "--checker",
    "none",
    "--checker-weight",
    "0.5",
    "--learning-rate",
    "1e-2",
    "--no-progress",
    "--seed",
    "3",
]
REQUIRED = {
    "iteration",
    "step",
    "episodes",
    "success_rate",
    "mean_score",
    "checker_env_agreement",
    "rollout_s",
    "score_s",
    "update_s",
    "tokens_per_s",
    "loss",
    "reward",
}


@pytest.fixture(scope="module")
def tiny_available() -> None:
    from cmat_gym.agents.models import load_model

    try:
        load_model("tiny-random")
    except FileNotFoundError as exc:
        pytest.skip(f"tiny-random needs SmolLM2's tokenizer: {exc}")


# ----------------------------------------------------------------------------------------------- units


def test_flags_match_ppo_and_max_steps_is_iterations() -> None:
    args = parse_args(
        ["--max-steps", "3", "--checker", "none", "--checker-weight", "0.2", "--num-generations", "4"]
    )
    assert (args.iterations, args.checker, args.checker_weight, args.num_generations) == (3, "none", 0.2, 4)
    assert parse_args(["--iterations", "5"]).iterations == 5
    with pytest.raises(ValueError, match="num-generations"):
        grpo_train.validate(parse_args(["--episodes-per-iteration", "6", "--num-generations", "4"]))
    with pytest.raises(ValueError, match="micro-batch"):
        grpo_train.validate(parse_args(["--episodes-per-iteration", "8", "--micro-batch-size", "3"]))


def test_tasks_are_ppos_episode_seeds() -> None:
    """Dataset row k is PPO's episode k: the same task stream as ppo_train with the same --seed."""
    ds = task_dataset(7, 5)
    assert ds["task_seed"] == [derive_seed(7, 0, k) for k in range(5)]
    assert [task_seed(p) for p in ds["prompt"]] == ds["task_seed"]
    assert task_seed(task_prompt(123)) == 123
    with pytest.raises(ValueError):
        task_seed("something else")


def test_episode_to_trl_splits_prompt_and_masks_observations() -> None:
    episode = Episode()
    episode.append([1, 2, 3], action=False)  # system + first observation + assistant header
    episode.append([10, 11], action=True, logprobs=[-0.5, -0.25])
    episode.append([4, 5, 6], action=False)  # observation fragment
    episode.append([12], action=True, logprobs=[-1.0])
    row = episode_to_trl(episode, pad_id=0)
    assert row["prompt_ids"] == [1, 2, 3]
    assert row["completion_ids"] == [10, 11, 4, 5, 6, 12]
    assert row["env_mask"] == [1, 1, 0, 0, 0, 1]
    assert row["logprobs"] == [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0]

    empty = Episode()
    empty.append([1, 2, 3], action=False)  # the prompt filled the token budget: no action
    row = episode_to_trl(empty, pad_id=0)
    assert row["completion_ids"] == [0] and row["env_mask"] == [0]


# ----------------------------------------------------------------------------------------------- run


def varied_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """A test-only reward that differs within a group (the random model never solves a task, and the
    checker shaping is the same for every episode), so that GRPO's advantages and gradients are nonzero."""
    return [float(sum(ids) % 7) / 7 for ids in completion_ids]


def test_grpo_smoke_run(tiny_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from cmat_gym.agents.models import load_model

    seen: list[dict[str, Any]] = []
    original = trl.GRPOTrainer._compute_loss

    def recording_compute_loss(self: Any, model: Any, inputs: dict[str, Any]) -> Any:
        seen.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return original(self, model, inputs)

    monkeypatch.setattr(trl.GRPOTrainer, "_compute_loss", recording_compute_loss)
    out = tmp_path / "grpo"
    result = grpo_train.train(
        parse_args([*TINY, "--iterations", "1", "--output-dir", str(out)]), extra_reward_funcs=[varied_reward]
    )

    # ---- metrics: one row per optimizer step, PPO's rollout metrics plus TRL's
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 1 and rows[0]["episodes"] == 4
    assert REQUIRED <= set(rows[0])
    for key in REQUIRED - {"checker_env_agreement"}:
        assert isinstance(rows[0][key], int | float) and math.isfinite(rows[0][key]), key
    assert rows[0]["rewards/checker_shaping/mean"] == pytest.approx(1.0)  # 2 turns x 0.5, checker none
    assert list((out / "tb").glob("events.out.tfevents.*"))

    # ---- the adapter trained (LoRA B starts at zero); the base weights did not
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(bool(v.abs().max() > 0) for v in lora_b)
    fresh, _ = load_model("tiny-random")
    trained = result.model.get_base_model().state_dict()
    for key, before in fresh.state_dict().items():
        key = key if key in trained else key.replace(".weight", ".base_layer.weight")
        assert torch.equal(trained[key], before), key

    # ---- env tokens are masked from the loss: TRL's loss mask (completion_mask * tool_mask) is 0 exactly on
    # the observation fragments inside the completion, and the rows TRL trained on are our episodes
    rollout = result.trainer.rollout_func
    assert isinstance(rollout, CMATRollout)
    episodes = rollout.last_episodes
    assert len(episodes) == 4 and all(len(e.turns) == 2 for e in episodes)
    expected = sorted(
        (tuple(r["completion_ids"]), tuple(r["env_mask"])) for r in (episode_to_trl(e, 0) for e in episodes)
    )
    trained_rows = []
    for inputs in seen:
        assert "tool_mask" in inputs
        for ids, cmask, tmask in zip(
            inputs["completion_ids"], inputs["completion_mask"], inputs["tool_mask"], strict=True
        ):
            n = int(cmask.sum())
            trained_rows.append((tuple(ids[:n].tolist()), tuple(tmask[:n].tolist())))
    assert sorted(trained_rows) == expected
    tokenizer = result.trainer.processing_class
    for episode in episodes:
        row = episode_to_trl(episode, 0)
        ids, mask = row["completion_ids"], row["env_mask"]
        assert sum(mask) == episode.n_action_tokens == sum(t.n_tokens for t in episode.turns)
        observation = [t for t, m in zip(ids, mask, strict=True) if m == 0]
        assert "<|im_start|>user" in tokenizer.decode(observation)  # the env's turn, as a chat fragment
        assert row["prompt_ids"] + ids == episode.token_ids


# ----------------------------------------------------------------------------------------------- benchmark


def test_train_throughput_prints_both_rows(tiny_available: None, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "train_throughput", REPO / "benchmarks" / "train_throughput.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(
        [
            "--model",
            "tiny-random",
            "--device",
            "cpu",
            "--episodes",
            "2",
            "--num-generations",
            "2",
            "--micro-batch-size",
            "2",
            "--max-turns",
            "1",
            "--max-new-tokens",
            "4",
            "--max-seq-len",
            "1024",
            "--warmup",
            "0",
            "--rows",
            "ppo,grpo-trl",
            "--no-isolate",
        ]
    )
    assert [r["row"] for r in results] == ["ppo", "grpo-trl"]
    for r in results:
        assert r["episodes_per_s"] > 0 and r["peak_mem_gb"] > 0
        assert r["iteration_s"] == pytest.approx(r["rollout_s"] + r["score_s"] + r["update_s"])
    table = capsys.readouterr().out
    assert "episodes/s" in table and "peak GiB" in table
    lines = table.splitlines()
    assert any(line.startswith("ppo ") for line in lines)
    assert any(line.startswith("grpo-trl ") for line in lines)
    assert "ppo / grpo-trl episodes/s" in table
