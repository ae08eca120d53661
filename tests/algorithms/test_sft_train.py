"""Tests of ``python -m algorithms.sft_train`` (CPU, tiny-random model).

One short end-to-end run (module fixture) writes dataset, adapter and metrics; the data-collection and mask
tests collect on their own (no training: milliseconds per episode) so that they can use fractions of 1.
On CPU TRL scores every position through the LM head (its compact path needs Triton), so the run is kept
to a few short episodes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("trl")
pytest.importorskip("datasets")

from algorithms import sft_train  # noqa: E402
from algorithms.common.rollout import ChatFragments  # noqa: E402
from algorithms.sft_train import Args, collect, derive_seed, main, to_dataset, training_tokenizer  # noqa: E402

SMOKE = [
    "--model",
    "tiny-random",
    "--device",
    "cpu",
    "--episodes",
    "2",
    "--epochs",
    "1",
    "--max-seq-len",
    "640",
    "--batch-size",
    "2",
    "--lr",
    "1e-2",
    "--recovery-fraction",
    "1",
    "--reflection-fraction",
    "0",
    "--no-progress",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("sft")
    result = main([*SMOKE, "--output-dir", str(out)])
    return out, result


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from cmat_gym.agents.models import load_model

    return load_model("tiny-random")[1]


def _collect(**kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    defaults = {"model": "tiny-random", "progress": False, "episodes": 12, "reflection_sources": 12}
    return collect(Args(**{**defaults, **kwargs}))


def test_smoke_run_writes_dataset_adapter_and_metrics(smoke_run: tuple[Path, Any]) -> None:
    from datasets import load_from_disk

    out, result = smoke_run
    dataset = load_from_disk(str(out / "dataset"))
    assert len(dataset) == 2
    assert "messages" in dataset.column_names
    for messages in dataset["messages"]:
        assert all(set(m) == {"role", "content"} for m in messages)
        assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
        assert messages[-1]["role"] == "assistant"  # ends on the final answer, as a PPO episode does
    assert all(dataset["recovery"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "dataset", "sft_metrics.json"]
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["examples"] == 2 and metrics["train_examples"] == 2
    assert metrics["loss_curve"] and all(row["loss"] > 0 for row in metrics["loss_curve"])
    assert metrics["final_loss"] == metrics["loss_curve"][-1]["loss"]
    assert 0 < metrics["trained_tokens"] < metrics["tokens"]
    assert metrics["args"]["lora_r"] == 16


def test_adapter_loads_in_lm_policy_and_changes_outputs(smoke_run: tuple[Path, Any]) -> None:
    from cmat_gym.agents.lm_policy import LLAMA_LINEARS, LMPolicy

    out, _ = smoke_run
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_dropout"] == 0.0
    # all linear layers of every block (peft writes "all-linear" out as module paths)
    assert {name.rsplit(".", 1)[-1] for name in config["target_modules"]} == set(LLAMA_LINEARS)
    base = LMPolicy.from_pretrained("tiny-random")
    tuned = LMPolicy.from_pretrained("tiny-random", adapter=out / "adapter")
    lora_b = [p for n, p in tuned.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: it was trained
    ids = torch.tensor([base.prompt_ids([{"role": "user", "content": "Count the players."}])])
    with torch.no_grad():
        diff = (tuned.model(input_ids=ids).logits - base.model(input_ids=ids).logits).abs().max()
    assert float(diff) > 1e-4


def test_gradient_checkpointing_is_on_and_changes_nothing_but_memory(
    smoke_run: tuple[Path, Any], tmp_path: Path
) -> None:
    # Default on (a 1,024-token CPU batch without it was OOM-killed at 14.7 GB); recomputing the activations
    # must give the same losses and the same trained adapter as keeping them.
    from safetensors.torch import load_file

    out, result = smoke_run
    assert result.metrics["args"]["gradient_checkpointing"] is True
    plain = main([*SMOKE, "--no-gradient-checkpointing", "--output-dir", str(tmp_path)])
    assert plain.metrics["args"]["gradient_checkpointing"] is False
    losses = [row["loss"] for row in result.metrics["loss_curve"]]
    assert losses == pytest.approx([row["loss"] for row in plain.metrics["loss_curve"]], rel=1e-4)
    ours, theirs = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (out, tmp_path))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)


def test_recovery_turns_and_reflection_blocks() -> None:
    from cmat_gym.domains.db.env import DBEnv

    records, stats = _collect(recovery_fraction=1.0, reflection_fraction=1.0)
    assert stats["examples"] == stats["episodes"] == 12 and stats["dropped_unsuccessful"] == 0
    assert stats["flaws_not_rejected"] == 0 and stats["recovery_episodes"] == 12
    assert stats["reflections_in_store"] > 0
    kinds = set()
    for r in records:
        messages, (flawed,) = r["messages"], r["flawed_turns"]
        kinds.add(r["flaw"])
        assert messages[flawed]["role"] == "assistant"
        feedback = messages[flawed + 1]
        assert feedback["role"] == "user" and feedback["content"].startswith("Error")
        assert "rejected by the checker" in feedback["content"]
        recovery = messages[flawed + 2]
        assert recovery["role"] == "assistant" and recovery["content"] != messages[flawed]["content"]
        task = DBEnv.task_from_id(r["task_id"])
        assert recovery["content"] in DBEnv.oracle_actions(task)  # the oracle's correct action follows
        lessons = "Lessons from earlier attempts on similar tasks:" in messages[1]["content"]
        assert lessons == (r["reflections"] > 0)
        assert sum("Lessons from earlier attempts" in m["content"] for m in messages) == int(lessons)
    assert kinds == {"column", "table", "malformed"}
    assert stats["reflection_episodes"] >= 9  # BM25 finds a related reflection for almost every task


def test_fractions_zero_give_plain_oracle_episodes() -> None:
    records, stats = _collect(episodes=4, recovery_fraction=0.0, reflection_fraction=0.0)
    assert stats["recovery_episodes"] == stats["reflection_episodes"] == stats["reflections_in_store"] == 0
    for r in records:
        assert r["flawed_turns"] == [] and r["reflections"] == 0
        assert not any(m["content"].startswith("Error") for m in r["messages"] if m["role"] == "user")


def test_train_split_only() -> None:
    import cmat_gym  # noqa: F401
    from cmat_gym.cmat.wrapper import make_cmat

    records, _ = _collect(recovery_fraction=0.5, reflection_fraction=0.5)
    assert {r["split"] for r in records} == {"train"}
    assert all("/test/" not in r["task_id"] for r in records)
    env = make_cmat("cmat/DB-v0", checker="rule", split="test")  # the test tasks of the same seeds
    test_ids = {env.reset(seed=derive_seed(1, 0, i))[1]["task_id"] for i in range(12)}
    assert not test_ids & {r["task_id"] for r in records}
    with pytest.raises(ValueError, match="split"):
        _collect(split="test")


def _expected(fragments: ChatFragments, messages: list[dict[str, str]], flawed: list[int], im_end: int):
    """Ids and loss mask of an episode built the way the PPO rollout builds its token sequence."""
    tok = fragments.tokenizer
    ids = fragments.prompt(messages[1]["content"])
    mask = [0] * len(ids)
    previous: list[int] = []
    for index, m in enumerate(messages[2:], start=2):
        if m["role"] == "assistant":
            previous = list(tok(m["content"], add_special_tokens=False)["input_ids"]) + [im_end]
            ids += previous
            mask += [int(index not in flawed)] * len(previous)
        else:
            obs = fragments.observation(m["content"], previous)
            ids += obs
            mask += [0] * len(obs)
    return ids, mask


@pytest.mark.parametrize("loss_on_flawed", [False, True])
def test_assistant_mask_is_exactly_assistant_tokens(
    tokenizer: Any, tmp_path: Path, loss_on_flawed: bool
) -> None:
    from cmat_gym.agents.models import load_model

    records, _ = _collect(episodes=6, recovery_fraction=1.0, reflection_fraction=0.5)
    dataset = to_dataset(records)
    args = Args(
        model="tiny-random",
        device="cpu",
        output_dir=str(tmp_path),
        max_seq_len=4096,
        progress=False,
        loss_on_flawed=loss_on_flawed,
    )
    model, tok = load_model("tiny-random")
    trainer = sft_train.build_trainer(args, dataset, model=model, tokenizer=tok)
    assert len(trainer.train_dataset) == len(records)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for row, record in zip(trainer.train_dataset, records, strict=True):  # shuffle_dataset is off
        messages = record["messages"]
        fragments = ChatFragments(tokenizer, messages[0]["content"])
        flawed = [] if loss_on_flawed else record["flawed_turns"]
        ids, mask = _expected(fragments, messages, flawed, im_end)
        # the same ids as the PPO rollout sees, plus the template's "\n" after the last <|im_end|>
        assert row["input_ids"] == ids + newline
        trained = [int(label != -100) for label in row["labels"]]
        assert trained == mask + [0] * len(newline)
        assert all(label in (-100, i) for label, i in zip(row["labels"], row["input_ids"], strict=True))
        # decoded, the trained tokens are the (non-flawed) assistant turns, each with its <|im_end|>
        kept = [m["content"] for i, m in enumerate(messages) if m["role"] == "assistant" and i not in flawed]
        spans, span = [], []
        for token, bit in zip(row["input_ids"], trained, strict=True):
            if bit:
                span.append(token)
            elif span:
                spans.append(span)
                span = []
        assert [tokenizer.decode(s) for s in spans] == [k + "<|im_end|>" for k in kept]
        assert all(s[-1] == im_end for s in spans)


def test_training_template_renders_like_the_model_template(tokenizer: Any) -> None:
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    train_tok = training_tokenizer(tokenizer)
    assert train_tok.chat_template != tokenizer.chat_template  # a copy: the model's tokenizer is unchanged
    assert is_chat_template_stop_token_trained(train_tok)  # TRL's own check: <|im_end|> is in the mask
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    out = train_tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    kept = [t for t, bit in zip(out["input_ids"], out["assistant_masks"], strict=True) if bit]
    assert tokenizer.decode(kept) == "A<|im_end|>"
    bad = copy.deepcopy(tokenizer)  # a template that is not ChatML is refused
    bad.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="ChatML"):
        training_tokenizer(bad)


def test_cli_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        sft_train.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--env",
        "--model",
        "--episodes",
        "--output-dir",
        "--split",
        "--difficulty",
        "--epochs",
        "--lr",
        "--lora-r",
        "--max-seq-len",
        "--batch-size",
        "--grad-accum",
        "--seed",
        "--device",
        "--recovery-fraction",
        "--reflection-fraction",
    ):
        assert flag in text
    args = sft_train.parse_args(["--difficulty", "2", "--no-progress", "--recovery-fraction", "0.5"])
    assert args.difficulty == 2 and args.progress is False and args.recovery_fraction == 0.5


def _recorded(tmp_path: Path) -> Path:
    """One oracle and four random-policy CMAT episodes on DB-v0 train tasks, recorded and saved."""
    from cmat_gym.agents.policies import make_policy
    from cmat_gym.evaluation import env_factory, run_episodes
    from cmat_gym.trajectories import save_trajectories

    build = env_factory("cmat/DB-v0", cmat=True)
    oracle = run_episodes(build, make_policy("oracle"), 1, 0, progress=False, record=True)
    random_ = run_episodes(build, make_policy("random", seed=3, domain="db"), 4, 100, progress=False, record=True)
    return save_trajectories(oracle + random_, tmp_path / "trajectories", env_id="cmat/DB-v0", policy="mixed")


def test_trains_from_a_recorded_dataset(tmp_path: Path) -> None:
    from datasets import load_from_disk

    path = _recorded(tmp_path)
    recorded = load_from_disk(str(path))
    successes = sum(recorded["success"])
    assert 1 <= successes < len(recorded)  # the oracle's episode succeeds; most random ones fail
    out = tmp_path / "sft"
    result = main(["--dataset", str(path), "--successful-only", "--model", "tiny-random", "--device", "cpu",
                   "--epochs", "1", "--max-seq-len", "512", "--batch-size", "4", "--lr", "1e-2", "--no-progress",
                   "--output-dir", str(out)])
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["episodes"] == len(recorded) and metrics["examples"] == successes
    assert metrics["dropped_unsuccessful"] == len(recorded) - successes
    assert metrics["optimizer_steps"] >= 1 and metrics["loss_curve"] and metrics["trained_tokens"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    trained = load_from_disk(str(out / "dataset"))
    assert all(trained["success"]) and trained["messages"] == [
        row["messages"] for row in recorded if row["success"]]
    assert result.metrics["args"]["dataset"] == str(path)


def test_recorded_rejections_are_flawed_turns(tmp_path: Path) -> None:
    dataset, stats = sft_train.from_trajectories(Args(dataset=str(_recorded(tmp_path))))
    assert stats["examples"] == stats["episodes"] == 5  # without --successful-only every episode stays
    flawed = [(row["messages"], i) for row in dataset for i in row["flawed_turns"]]
    assert flawed  # the random policy's rejected or unparsable actions
    for messages, i in flawed:
        assert messages[i]["role"] == "assistant"  # kept in the context, out of the loss
        assert i + 1 == len(messages) or messages[i + 1]["content"].startswith("Error")


def test_recorded_test_split_episodes_are_refused(tmp_path: Path) -> None:
    from cmat_gym.agents.policies import make_policy
    from cmat_gym.evaluation import env_factory, run_episodes
    from cmat_gym.trajectories import save_trajectories

    results = run_episodes(env_factory("cmat/DB-v0", split="test"), make_policy("oracle"), 1, 0, progress=False,
                           record=True)
    path = save_trajectories(results, tmp_path / "test-split")
    with pytest.raises(sft_train.ScriptError, match="evaluation tasks"):
        sft_train.from_trajectories(Args(dataset=str(path)))
