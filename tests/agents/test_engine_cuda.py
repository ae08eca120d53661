"""RolloutEngine on CUDA: graph-captured and compiled decode steps against HF (skipped without a GPU).

Models are built from configs with seeded random weights, so no tokenizer or download is needed.
fp32 must match HF greedy decoding token for token; bf16 only has to run and be fast.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cmat_gym.agents.engine import ContinuousBatcher, RolloutEngine  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB = 2048


def make_llama(dtype: Any, *, smollm2_shape: bool = False) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    if smollm2_shape:
        sizes = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
        sizes.update(num_attention_heads=9, num_key_value_heads=3, initializer_range=0.02)
    else:
        sizes = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        sizes.update(num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2)
    config = LlamaConfig(
        **sizes,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.to("cuda", dtype).eval()


def prompts_of(n: int, vocab: int, seed: int = 0, lengths: tuple[int, int] = (3, 40)) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(rng.randint(*lengths))] for _ in range(n)]


def hf_greedy(model: Any, prompts: list[list[int]], new: int, eos: list[int]) -> list[list[int]]:
    P = max(map(len, prompts))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts], device="cuda")
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], device="cuda")
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=eos or None,
            pad_token_id=0,
        )
    rows = []
    for row in out[:, P:].tolist():
        end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:end])
    return rows


@pytest.fixture(scope="module")
def tiny() -> Any:
    return make_llama(torch.float32)


def frequent(engine: RolloutEngine, prompts: list[list[int]]) -> list[int]:
    counts: dict[int, int] = {}
    for r in engine.generate(prompts, 12, eos_token_ids=()):
        for t in r.completion_ids[3:]:
            counts[t] = counts.get(t, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:3]


@pytest.mark.parametrize("compile", [False, True], ids=["graph", "compile"])
def test_greedy_equals_hf_generate_fp32(tiny: Any, compile: bool) -> None:
    engine = RolloutEngine(tiny, max_batch=64, max_seq_len=128, compile=compile)
    assert engine.use_cuda_graph
    prompts = prompts_of(64, VOCAB)
    eos = frequent(engine, prompts)
    results = engine.generate(prompts, 16, eos_token_ids=eos)
    assert [r.completion_ids for r in results] == hf_greedy(tiny, prompts, 16, eos)
    assert {r.finish_reason for r in results} == {"stop", "length"}
    assert engine._graphs  # the decode ran as graph replays
    few = engine.generate(prompts[:3], 16, eos_token_ids=eos)  # a smaller batch bucket
    assert [r.completion_ids for r in few] == [r.completion_ids for r in results[:3]]


@pytest.mark.parametrize("compile", [False, True], ids=["graph", "compile"])
def test_kv_reuse_across_turns_equals_full_prefill(tiny: Any, compile: bool) -> None:
    """Multi-turn sessions on the GPU path (own prefill over row groups, graph replays whose padding
    rows hold other sessions): greedy tokens equal a full prefill of every prompt and HF generate."""
    engine = RolloutEngine(tiny, max_batch=8, max_seq_len=256, compile=compile)
    reference = RolloutEngine(tiny, max_batch=8, max_seq_len=256)
    rng = random.Random(0)
    history = prompts_of(6, VOCAB, seed=7, lengths=(3, 30))
    for _ in range(4):
        active = sorted(rng.sample(range(6), rng.randint(2, 6)))  # 3, 5, 6 rows pad to 4 or 8: held rows idle
        prompts = [history[i] for i in active]
        got = engine.generate(prompts, 10, eos_token_ids=[2], sessions=[f"c{i}" for i in active])
        reference._forget_all("reference")
        expected = reference.generate(prompts, 10, eos_token_ids=[2])
        assert [r.completion_ids for r in got] == [r.completion_ids for r in expected]
        assert [r.completion_ids for r in got] == hf_greedy(tiny, prompts, 10, [2])
        for i, result in zip(active, got, strict=True):
            history[i] = history[i] + result.completion_ids + [rng.randrange(3, VOCAB) for _ in range(5)]
    assert engine.stats["reused_tokens"] > engine.stats["prompt_tokens"] // 3
    assert engine.stats["reencoded_sessions"] == 0


def test_continuous_batcher_with_graphs(tiny: Any) -> None:
    prompts = prompts_of(40, VOCAB, seed=4)
    one_shot = RolloutEngine(tiny, max_batch=64, max_seq_len=128)
    eos = frequent(one_shot, prompts)
    expected = one_shot.generate(prompts, 14, eos_token_ids=eos)
    batcher = ContinuousBatcher(
        RolloutEngine(tiny, max_batch=8, max_seq_len=128), max_new_tokens=14, eos_token_ids=eos
    )
    got = batcher.generate(prompts)
    assert [r.completion_ids for r in got] == [r.completion_ids for r in expected]


def test_sampled_logprobs_match_teacher_forcing(tiny: Any) -> None:
    engine = RolloutEngine(tiny, max_batch=16, max_seq_len=128)
    prompts = prompts_of(8, VOCAB, seed=9)
    for result, prompt in zip(
        engine.generate(prompts, 12, temperature=1.0, seed=0, eos_token_ids=()), prompts, strict=True
    ):
        ids = torch.tensor([prompt + result.completion_ids], device="cuda")
        with torch.no_grad():
            logits = tiny(ids).logits[0, len(prompt) - 1 : -1].float()
        expected = logits.log_softmax(-1).gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(result.logprobs, device="cuda"), expected, atol=1e-3, rtol=0)


def test_smollm2_shape_bf16_runs_fast() -> None:
    """SmolLM2-sized random model, batch 256 x 128 tokens: the engine must be much faster than HF."""
    model = make_llama(torch.bfloat16, smollm2_shape=True)
    prompts = prompts_of(256, 49152, seed=1, lengths=(64, 64))
    engine = RolloutEngine(model, max_batch=256, max_seq_len=192)
    engine.generate(prompts, 128, eos_token_ids=())  # capture
    torch.cuda.synchronize()
    start = time.perf_counter()
    results = engine.generate(prompts, 128, eos_token_ids=())
    torch.cuda.synchronize()
    engine_s = time.perf_counter() - start
    assert all(len(r.completion_ids) == 128 for r in results)
    assert all(torch.isfinite(torch.tensor(r.logprobs)).all() for r in results)
    hf_greedy(model, prompts[:8], 4, [])
    torch.cuda.synchronize()
    start = time.perf_counter()
    expected = hf_greedy(model, prompts, 128, [])
    torch.cuda.synchronize()
    hf_s = time.perf_counter() - start
    same = sum(r.completion_ids == e for r, e in zip(results, expected, strict=True)) / len(prompts)
    print(
        f"\nsmollm2-shape bf16 256x128: engine {engine_s:.3f} s, HF {hf_s:.3f} s, {hf_s / engine_s:.1f}x, same {same:.0%}"
    )
    assert hf_s / engine_s > 3
