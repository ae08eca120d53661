"""The engine's CPU greedy sampler: the same tokens as ``argmax`` (first maximum) and log-softmax log-probs."""

from __future__ import annotations

import torch

from cmat_gym.agents.engine import RolloutEngine, _first_argmax


def test_first_argmax_equals_argmax_with_ties_across_and_within_blocks() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 49152, generator=gen)
    top = x.max() + 1
    x[0, [5000, 3000, 40000]] = top  # ties in three blocks: the first index wins
    x[1, [2049, 2050]] = top  # ties inside one block
    x[2, -1] = top  # the last column
    x[3, 0] = top  # the first column
    x[4] = 0.0  # all equal
    assert torch.equal(_first_argmax(x), x.argmax(-1))
    assert _first_argmax(x)[0] == 3000
    odd = torch.randn(3, 1000, generator=gen)  # not whole blocks: plain argmax
    assert torch.equal(_first_argmax(odd), odd.argmax(-1))


def test_greedy_sample_with_scratch_matches_the_plain_path() -> None:
    logits = torch.randn(16, 49152, generator=torch.Generator().manual_seed(1)) * 4
    scratch = torch.empty_like(logits)
    fast = RolloutEngine._sample(logits, 0.0, 1.0, 0, None, scratch=scratch)
    plain = RolloutEngine._sample(logits, 0.0, 1.0, 0, None)
    assert torch.equal(fast[0], plain[0]) and torch.equal(fast[0], logits.argmax(-1))
    expected = logits.log_softmax(-1).gather(-1, fast[0][:, None]).squeeze(-1)
    torch.testing.assert_close(fast[1], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast[1], plain[1], atol=1e-5, rtol=0)
