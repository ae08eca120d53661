"""``python -m algorithms.checker_train`` (tiny-random, CPU): the labelled actions it collects, the AUROC and
precision/recall it reports, that training moves the score the right way, and the learned checker in one
PPO iteration (``ppo_train --checker learned --checker-adapter DIR --checker-weight w``).

One tiny run (module fixture) serves every test that needs a trained checker.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from algorithms import checker_train, ppo_train  # noqa: E402
from algorithms.checker_train import (  # noqa: E402
    auroc,
    checker_metrics,
    collect_examples,
    main,
    parse_args,
    train_reward_model,
)
from algorithms.common.script import ScriptError, derive_seed  # noqa: E402
from cmat_gym.cmat.checkers import CHECKER_CONFIG, LearnedRewardModel, load_learned_checker  # noqa: E402

TINY = ["--model", "tiny-random", "--device", "cpu", "--episodes", "8", "--epochs", "1", "--max-len", "256",
        "--batch-size", "8", "--micro-batch-size", "4", "--history-turns", "2", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("checker")
    return out, main([*TINY, "--output-dir", str(out)])


def test_run_writes_adapter_config_examples_and_metrics(run: tuple[Path, Any]) -> None:
    out, result = run
    assert (out / "adapter" / "adapter_config.json").is_file()
    config = json.loads((out / CHECKER_CONFIG).read_text())
    assert config["base_model"] == "tiny-random" and config["threshold"] == 0.5
    assert config["history_turns"] == 2 and config["max_len"] == 256
    examples = [json.loads(line) for line in (out / "examples.jsonl").open()]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == len(examples) == metrics["good"] + metrics["bad"]
    assert metrics["steps"] == len(metrics["loss_curve"]) >= 1
    assert not list(out.glob(".*"))  # no temp files left behind by the atomic writes
    rm, loaded = LearnedRewardModel.load(out)
    first = examples[0]
    assert rm.score(first["task_text"], first["history"], first["action"]) == pytest.approx(
        result.reward_model.score(first["task_text"], first["history"], first["action"]), abs=1e-5)
    assert loaded["val"] == metrics["val"][-1]


def test_examples_carry_hindsight_labels_of_every_source(run: tuple[Path, Any]) -> None:
    out, _ = run
    examples = [json.loads(line) for line in (out / "examples.jsonl").open()]
    labels = {e["source"]: set() for e in examples}
    for e in examples:
        labels[e["source"]].add(e["label"])
    assert labels["oracle"] == {True}  # the gold script runs and answers correctly
    assert any(s.startswith("flawed:") for s in labels)
    assert all(labels[s] == {False} for s in labels if s.startswith("flawed:"))  # misspelled / malformed
    # the rule checker's verdicts were taken live; on these actions it agrees with hindsight
    assert all(e["loop_checker"] == "rule" and isinstance(e["loop_approve"], bool) for e in examples)
    # what the checker saw: the public task text and the dialogue before the action (never the gold)
    assert all(e["history"] and e["history"][0]["role"] == "user" for e in examples)


def test_collection_is_deterministic_and_splits_are_disjoint() -> None:
    seeds = [derive_seed(7, i) for i in range(3)]
    a = collect_examples("cmat/DB-v0", split="train", seeds=seeds, mix_seed=3)
    b = collect_examples("cmat/DB-v0", split="train", seeds=seeds, mix_seed=3)
    test = collect_examples("cmat/DB-v0", split="test", seeds=seeds, mix_seed=3)
    assert a == b and a
    assert not {e["task_id"] for e in a} & {e["task_id"] for e in test}


def test_auroc_and_checker_metrics_by_hand() -> None:
    # good: 0.35, 0.8; bad: 0.1, 0.4 -> pairs (good > bad): 0.35>0.1, 0.8>0.1, 0.8>0.4 = 3 of 4
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([0.2, 0.9], [True, True]) is None
    m = checker_metrics([0.9, 0.2, 0.3, 0.7], [True, False, False, True], [True, False, True, False])
    # rejected: #1 (bad) and #2 (good) -> precision 1/2; bad: #1, #3 -> recall 1/2; agree: #0, #1
    assert (m["precision"], m["recall"], m["accuracy"], m["rejected"]) == (0.5, 0.5, 0.5, 2)
    assert checker_metrics([1.0], [True], [True])["precision"] is None


def test_training_separates_good_from_bad_actions() -> None:
    from peft import LoraConfig, get_peft_model

    from cmat_gym.agents.models import load_model

    examples = collect_examples("cmat/DB-v0", split="train", seeds=[derive_seed(11, i) for i in range(6)],
                                mix_seed=5)
    random.Random(0).shuffle(examples)
    examples = examples[:24]
    torch.manual_seed(0)
    model, tokenizer = load_model("tiny-random")
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear"))
    rm = LearnedRewardModel(model, tokenizer, history_turns=1, max_len=192, batch_size=8)
    before = checker_train.evaluate(rm, examples, 0.5)
    fit = train_reward_model(rm, examples, epochs=6, lr=3e-3, seed=0, micro_batch_size=8)
    after = checker_train.evaluate(rm, examples, 0.5)
    first = sum(r["loss"] for r in fit["loss_curve"][:3]) / 3
    last = sum(r["loss"] for r in fit["loss_curve"][-3:]) / 3
    assert last < first
    assert after["auroc"] > max(before["auroc"], 0.8)


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="--flawed-prob"):
        checker_train.check_args(["--flawed-prob", "0.8", "--random-prob", "0.5"])
    with pytest.raises(ScriptError, match="--collect-checker"):
        checker_train.check_args(["--collect-checker", "llm"])
    with pytest.raises(ScriptError, match="needs --checker-adapter"):
        ppo_train.check_args(["--checker", "learned"])
    with pytest.raises(ScriptError, match="not a learned checker"):
        ppo_train.check_args(["--checker", "learned", "--checker-adapter", str(tmp_path)])
    with pytest.raises(ScriptError, match="needs --checker learned"):
        ppo_train.check_args(["--checker", "rule", "--checker-adapter", str(tmp_path)])
    assert parse_args(["--micro-batch-size", "3"]).micro_batch_size == 3


def test_ppo_iteration_with_the_learned_checker(run: tuple[Path, Any], tmp_path: Path) -> None:
    checker_dir, _ = run
    weight = 0.5
    ppo_args = ["--model", "tiny-random", "--device", "cpu", "--iterations", "1", "--episodes-per-iteration", "2",
                "--max-turns", "2", "--max-new-tokens", "8", "--max-seq-len", "1024", "--minibatch-size", "2",
                "--micro-batch-size", "1", "--ppo-epochs", "1", "--checker", "learned", "--checker-adapter",
                str(checker_dir), "--checker-weight", str(weight), "--no-progress", "--output-dir", str(tmp_path)]
    ppo_train.check_args(ppo_args)
    result = ppo_train.main(ppo_args)
    row = result.metrics[-1]
    assert row["iteration"] == 1 and (tmp_path / "adapter").is_dir()
    # every turn's shaping is weight * the learned score, strictly inside (0, weight): a sigmoid
    assert 0.0 < row["shaping_reward"] < weight
    assert 0.0 <= row["checker_reject_rate"] <= 1.0
    # the same checker scores as the loaded one: the shaping comes from it, not from the rule checker
    checker = load_learned_checker(checker_dir, device="cpu")
    assert checker.threshold == json.loads((checker_dir / CHECKER_CONFIG).read_text())["threshold"]


def test_ppo_trains_the_checker_between_iterations(run: tuple[Path, Any], tmp_path: Path) -> None:
    checker_dir, _ = run
    ppo_args = ["--model", "tiny-random", "--device", "cpu", "--iterations", "1", "--episodes-per-iteration", "2",
                "--max-turns", "2", "--max-new-tokens", "8", "--max-seq-len", "1024", "--minibatch-size", "2",
                "--micro-batch-size", "1", "--ppo-epochs", "1", "--checker", "learned", "--checker-adapter",
                str(checker_dir), "--checker-weight", "0.5", "--train-checker", "--checker-lr", "1e-2",
                "--no-progress", "--output-dir", str(tmp_path)]
    ppo_train.check_args(ppo_args)
    with pytest.raises(ScriptError, match="--train-checker needs"):
        ppo_train.check_args(["--checker", "rule", "--train-checker"])
    row = ppo_train.main(ppo_args).metrics[-1]
    # every reviewed turn of the rollout was paired with what the checker saw, and labelled
    assert row["checker_unpaired"] == 0 and row["checker_labels"] >= 1
    assert row["checker_loss"] is not None and row["checker_update_s"] >= 0
    saved = tmp_path / "checker"
    assert (saved / CHECKER_CONFIG).is_file() and json.loads((saved / CHECKER_CONFIG).read_text())["online_updates"] == 1
    before, _ = LearnedRewardModel.load(checker_dir)
    after, _ = LearnedRewardModel.load(saved)
    example = json.loads((checker_dir / "examples.jsonl").open().readline())
    item = (example["task_text"], example["history"], example["action"])
    assert abs(before.score(*item) - after.score(*item)) > 1e-6  # the update changed the checker
