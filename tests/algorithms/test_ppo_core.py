"""Tests for the multi-turn token-level PPO math in ``algorithms.common.ppo_core`` (CPU, fast)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from algorithms.common.ppo_core import (  # noqa: E402
    PPOStats,
    ValueHead,
    entropy_from_logits,
    explained_variance,
    kl_penalty,
    last_action_mask,
    masked_gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    selective_logprobs,
    token_rewards,
    turn_end_mask,
    value_loss,
)

# prompt(2) | turn 1 (3) | observation (2) | turn 2 (2) | padding (1)
MASK = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 1, 1, 0]])


def reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE on one contiguous episode that terminates after its last step."""
    advantages = [0.0] * len(rewards)
    last = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages


def compress_scatter_gae(rewards, values, mask, gamma, lam):
    """Expected result: compress each row's action tokens, run textbook GAE, scatter back."""
    adv = torch.zeros_like(rewards, dtype=torch.float64)
    ret = torch.zeros_like(rewards, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[b, t]]
        r = [float(rewards[b, t]) for t in idx]
        v = [float(values[b, t]) for t in idx]
        a = reference_gae(r, v, gamma, lam)
        for k, t in enumerate(idx):
            adv[b, t] = a[k]
            ret[b, t] = a[k] + v[k]
    return adv, ret


# ---------------------------------------------------------------- GAE


def test_gae_hand_computed_across_observation_span():
    mask = torch.tensor([[1, 1, 0, 0, 1, 0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    # values at masked positions are garbage on purpose: they must not be read
    values = torch.tensor([[0.5, 0.6, 9.0, float("nan"), 0.8, -7.0]])
    adv, ret = masked_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # compressed: r = [0, 0, 1], v = [.5, .6, .8]
    # A2 = 1 - .8 = .2 ; A1 = (.8 - .6) + .95 * .2 = .39 ; A0 = (.6 - .5) + .95 * .39 = .4705
    expected_adv = torch.tensor([[0.4705, 0.39, 0.0, 0.0, 0.2, 0.0]])
    expected_ret = torch.tensor([[0.9705, 0.99, 0.0, 0.0, 1.0, 0.0]])
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_ret)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.95), (0.99, 1.0), (0.8, 0.0)])
def test_gae_matches_compressed_textbook_gae(gamma, lam):
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0],
            [0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        ]
    )
    rewards = torch.randn(mask.shape, generator=g, dtype=torch.float64) * mask
    values = torch.randn(mask.shape, generator=g, dtype=torch.float64)
    adv, ret = masked_gae(rewards, values, mask, gamma=gamma, lam=lam)
    exp_adv, exp_ret = compress_scatter_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, exp_adv)
    torch.testing.assert_close(ret, exp_ret)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_gae_is_detached_and_accepts_bool_mask():
    values = torch.randn(MASK.shape, requires_grad=True)
    adv, ret = masked_gae(torch.zeros(MASK.shape), values, MASK.bool())
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_rejects_rewards_on_masked_tokens():
    rewards = torch.zeros(MASK.shape)
    rewards[0, 5] = 1.0  # an observation token
    with pytest.raises(ValueError, match="masked"):
        masked_gae(rewards, torch.zeros(MASK.shape), MASK)
    with pytest.raises(ValueError, match="0 and 1"):
        masked_gae(torch.zeros(MASK.shape), torch.zeros(MASK.shape), MASK * 2)


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_ignores_masked_entries_and_empty_is_zero():
    x = torch.tensor([[1.0, float("nan"), 3.0]])
    m = torch.tensor([[1, 0, 1]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([2.0]))


def test_masked_whiten():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, generator=g) * 5 + 3
    m = (torch.rand(4, 9, generator=g) > 0.4).long()
    w = masked_whiten(x, m)
    sel = w[m.bool()]
    assert sel.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert sel.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert (w[m == 0] == 0).all()
    w2 = masked_whiten(x, m, shift_mean=False)
    assert w2[m.bool()].mean().item() == pytest.approx(x[m.bool()].mean().item(), abs=1e-4)
    assert (w2[m == 0] == 0).all()


def test_turn_end_and_last_action_masks():
    assert turn_end_mask(MASK).long().tolist() == [[0, 0, 0, 0, 1, 0, 0, 0, 1, 0]]
    assert last_action_mask(MASK).long().tolist() == [[0, 0, 0, 0, 0, 0, 0, 0, 1, 0]]
    ends_at_edge = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert turn_end_mask(ends_at_edge).long().tolist() == [[0, 0, 1], [1, 0, 0]]


# ---------------------------------------------------------------- losses


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 0], [1, 1, 0, 0, 0, 1, 0]])
    logprobs = -torch.rand(mask.shape, generator=g) * 3
    old = logprobs + 0.3 * torch.randn(mask.shape, generator=g)
    adv = torch.randn(mask.shape, generator=g)
    return mask, logprobs, old, adv


def test_policy_loss_ignores_masked_positions():
    mask, logprobs, old, adv = _batch()
    lp1 = logprobs.clone().requires_grad_(True)
    loss1, stats1 = policy_loss(lp1, old, adv, mask)
    loss1.backward()

    garbage = torch.where(mask.bool(), 0.0, torch.tensor(float("nan")))
    lp2 = (logprobs + torch.where(mask.bool(), 0.0, 5.0)).requires_grad_(True)
    loss2, stats2 = policy_loss(lp2, old + garbage.nan_to_num(7.0), adv + garbage, mask)
    loss2.backward()

    torch.testing.assert_close(loss1, loss2)
    torch.testing.assert_close(lp1.grad, lp2.grad)
    assert (lp1.grad[mask == 0] == 0).all() and (lp1.grad[mask == 1] != 0).any()
    for key in stats1:
        torch.testing.assert_close(stats1[key], stats2[key])


def test_value_loss_ignores_masked_positions():
    mask, values, old, returns = _batch(1)
    v1 = values.clone().requires_grad_(True)
    loss1, _ = value_loss(v1, old, returns, mask)
    loss1.backward()
    noise = torch.where(mask.bool(), 0.0, 11.0)
    v2 = (values + noise).requires_grad_(True)
    loss2, _ = value_loss(v2, old - noise, returns + noise.where(mask.bool(), float("nan")), mask)
    loss2.backward()
    torch.testing.assert_close(loss1, loss2)
    torch.testing.assert_close(v1.grad, v2.grad)
    assert (v1.grad[mask == 0] == 0).all()


def test_changing_logits_at_masked_tokens_leaves_losses_unchanged():
    g = torch.Generator().manual_seed(2)
    b, t, vocab = 2, 8, 11
    ids = torch.randint(vocab, (b, t), generator=g)
    action_mask = torch.tensor([[0, 0, 1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0, 0]])
    mask = action_mask[:, 1:]  # logprob position t scores token t+1
    old = -torch.rand(b, t - 1, generator=g)
    adv = torch.randn(b, t - 1, generator=g)
    base = torch.randn(b, t, vocab, generator=g)
    # logits at position t predict token t+1; positions whose target is not an action may change freely
    free = torch.zeros(b, t, dtype=torch.bool)
    free[:, :-1] = ~mask.bool()
    free[:, -1] = True  # the last position predicts nothing
    perturbed = base + free[..., None] * 10 * torch.randn(b, t, vocab, generator=g)

    grads, losses = [], []
    for logits in (base, perturbed):
        logits = logits.clone().requires_grad_(True)
        lp = selective_logprobs(logits, ids)
        loss, _ = policy_loss(lp, old, adv, mask)
        loss.backward()
        losses.append(loss.detach())
        grads.append(logits.grad)
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert (grads[0][free] == 0).all()


def test_ratio_one_and_zero_kl_when_policy_unchanged():
    mask, logprobs, _, adv = _batch()
    loss, stats = policy_loss(logprobs, logprobs.clone(), adv, mask)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["approx_kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert stats["clipfrac"].item() == 0.0
    assert loss.item() == pytest.approx(-masked_mean(adv, mask).item(), abs=1e-6)


@pytest.mark.parametrize(
    ("ratio", "adv", "clipped"),
    [(1.5, 1.0, True), (1.5, -1.0, False), (0.5, 1.0, False), (0.5, -1.0, True), (1.1, 1.0, False)],
)
def test_policy_clipping_engages_with_the_right_sign(ratio, adv, clipped):
    eps = 0.2
    old = torch.tensor([[-1.0]])
    lp = (old + torch.log(torch.tensor(ratio))).requires_grad_(True)
    loss, stats = policy_loss(lp, old, torch.tensor([[adv]]), torch.tensor([[1]]), clip_eps=eps)
    loss.backward()
    if clipped:
        expected = -adv * min(max(ratio, 1 - eps), 1 + eps)
        assert stats["clipfrac"].item() == 1.0
        assert lp.grad.item() == 0.0  # clipped term is constant
    else:
        expected = -adv * ratio
        assert stats["clipfrac"].item() == 0.0
        assert lp.grad.item() == pytest.approx(-adv * ratio, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_value_loss_clipping():
    mask = torch.tensor([[1, 1]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.5, 2.0]])
    # token 0: unclipped (0.5-1)^2=.25, clipped (0.2-1)^2=.64 -> .64 ; token 1: (2-1)^2=1, (0.2-1)^2=.64 -> 1
    loss, stats = value_loss(values, old, returns, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)
    loss_nc, _ = value_loss(values, old, returns, mask, clip_eps=None)
    assert loss_nc.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)


# ---------------------------------------------------------------- value head


def test_value_head_is_zero_at_init_and_fp32():
    head = ValueHead(16)
    hidden = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    out = head(hidden)
    assert out.shape == (2, 5) and out.dtype == torch.float32
    assert (out == 0).all()
    assert head.summary.weight.dtype == torch.float32


@pytest.mark.parametrize("clip_eps", [None, 0.2])
def test_value_loss_falls_when_fitting_a_fixed_batch(clip_eps):
    torch.manual_seed(0)
    hidden = torch.randn(4, 10, 16)
    mask = (torch.rand(4, 10) > 0.3).long()
    returns = hidden @ torch.randn(16) * 0.3 + 0.5
    head = ValueHead(16)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    losses = []
    for step in range(60):
        if step % 5 == 0:  # a new "rollout": old values refreshed, as in a PPO loop
            with torch.no_grad():
                old_values = head(hidden)
        loss, _ = value_loss(head(hidden), old_values, returns, mask, clip_eps=clip_eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    ev = explained_variance(head(hidden), returns, mask)
    assert ev.item() > 0.5


# ---------------------------------------------------------------- log-probabilities


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_logprobs_matches_naive(temperature, dtype):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 6, 13, generator=g) * 4).to(dtype)
    ids = torch.randint(13, (3, 6), generator=g)
    out = selective_logprobs(logits, ids, temperature=temperature)
    naive = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    naive = naive.gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert out.shape == (3, 5)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.05}
    torch.testing.assert_close(out.float(), naive, **tol)


def test_selective_logprobs_rejects_bad_input():
    with pytest.raises(ValueError):
        selective_logprobs(torch.zeros(1, 4, 5), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        selective_logprobs(torch.zeros(1, 4, 5), torch.zeros(1, 4, dtype=torch.long), temperature=0.0)


def test_entropy_from_logits():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 300, 7, generator=g)
    for temperature in (1.0, 0.5):
        p = torch.softmax(logits / temperature, dim=-1)
        naive = -(p * p.log()).sum(-1)
        torch.testing.assert_close(entropy_from_logits(logits, temperature=temperature), naive)
    uniform = entropy_from_logits(torch.zeros(1, 1, 8))
    assert uniform.item() == pytest.approx(torch.log(torch.tensor(8.0)).item())


@pytest.mark.slow
def test_matches_trl_helpers():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 7, 17, generator=g)
    ids = torch.randint(17, (2, 7), generator=g)
    ours = selective_logprobs(logits, ids, temperature=0.8)
    theirs = trl_utils.selective_log_softmax(logits[:, :-1], ids[:, 1:], temperature=0.8)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(entropy_from_logits(logits), trl_utils.entropy_from_logits(logits))


# ---------------------------------------------------------------- rewards


def test_kl_penalty_estimators():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.5, -1.0])
    torch.testing.assert_close(kl_penalty(lp, ref, "k1"), lp - ref)
    torch.testing.assert_close(kl_penalty(lp, ref, "k2"), 0.5 * (lp - ref) ** 2)
    k3 = kl_penalty(lp, ref, "k3")
    torch.testing.assert_close(k3, torch.exp(ref - lp) - (ref - lp) - 1)
    assert (k3 >= 0).all() and k3[0] == 0
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, "k4")  # type: ignore[arg-type]


def test_token_rewards_placement():
    mask = torch.cat([MASK, torch.tensor([[1, 1, 0, 1, 0, 1, 0, 0, 0, 0]])])
    kl = torch.full(mask.shape, 0.5)
    kl[mask == 0] = float("nan")  # never read
    rewards = token_rewards(
        torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.1, turn_end_rewards=[[0.3, 0.4], [1, 2, 3]]
    )
    expected = torch.where(mask.bool(), -0.05, 0.0)
    expected[0, 4] += 0.3  # end of turn 1
    expected[0, 8] += 0.4 + 2.0  # end of turn 2 = last action token: turn reward + final score
    expected[1, 1] += 1.0
    expected[1, 3] += 2.0
    expected[1, 5] += 3.0 - 1.0
    torch.testing.assert_close(rewards, expected)
    assert (rewards[mask == 0] == 0).all()
    masked_gae(rewards, torch.zeros(mask.shape), mask)  # accepted by GAE

    as_tensor = token_rewards([2.0, -1.0], kl, mask, 0.1, torch.tensor([[0.3, 0.4, 0.0], [1.0, 2.0, 3.0]]))
    torch.testing.assert_close(as_tensor, expected)
    no_turns = token_rewards([2.0, -1.0], kl, mask, 0.0)
    assert no_turns.nonzero().tolist() == [[0, 8], [1, 5]]


def test_token_rewards_validation():
    kl = torch.zeros(MASK.shape)
    with pytest.raises(ValueError, match="turn"):
        token_rewards([1.0], kl, MASK, 0.1, turn_end_rewards=[[1.0]])  # two turns, one reward
    with pytest.raises(ValueError, match="beyond"):
        token_rewards([1.0], kl, MASK, 0.1, turn_end_rewards=torch.tensor([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="action token"):
        token_rewards([1.0], kl, torch.zeros_like(MASK), 0.1)


# ---------------------------------------------------------------- stats


def test_ppo_stats():
    s = PPOStats()
    s.add({"clipfrac": torch.tensor(0.1)}, loss=1.0)
    s.add(loss=torch.tensor(3.0))
    assert s.mean() == pytest.approx({"clipfrac": 0.1, "loss": 2.0})
    s.reset()
    assert s.mean() == {}


# ----------------------------------------------------------------------------------------------- review fixes
# (issue 14, item 1): each test below failed before its fix


def two_turn_episode(turn_len: int = 30, obs_len: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """One episode: prompt(3) | turn 1 | observation | turn 2, final reward 1 on the last action token."""
    mask = torch.tensor([[0] * 3 + [1] * turn_len + [0] * obs_len + [1] * turn_len])
    rewards = torch.zeros(mask.shape)
    rewards[0, -1] = 1.0
    return rewards, mask


def test_first_turn_gets_full_credit_with_the_policy_lambda():
    """With per-token λ = 0.95 and an unfit (zero) critic, the reward ~60 tokens later reaches turn 1's
    first token scaled by 0.95**59 ~ 0.05; the policy's λ (default 1) gives it the whole reward, while the
    critic's value targets keep their own λ."""
    from algorithms.common.ppo_core import compute_advantages

    rewards, mask = two_turn_episode()
    values = torch.zeros(mask.shape)  # a zero-initialised critic
    first = int(mask[0].nonzero()[0])
    old_adv, _ = masked_gae(rewards, values, mask, 1.0, 0.95)
    assert float(old_adv[0, first]) == pytest.approx(0.95**59, rel=1e-5)  # the defect: ~0.048

    adv, ret = compute_advantages(rewards, values, mask, gamma=1.0, critic_lambda=0.95, policy_lambda=1.0)
    assert float(adv[0, first]) == pytest.approx(1.0)  # the first turn's SQL gets the final reward
    assert torch.allclose(adv[mask.bool()], torch.ones(int(mask.sum())))
    _, critic_ret = masked_gae(rewards, values, mask, 1.0, 0.95)
    assert torch.equal(ret, critic_ret)  # value targets unchanged: λ = 0.95 for the critic
    # the two λ's agree when set equal
    adv95, _ = compute_advantages(rewards, values, mask, gamma=1.0, critic_lambda=0.95, policy_lambda=0.95)
    assert torch.equal(adv95, old_adv)


def test_value_head_and_loss_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    head = ValueHead(16)
    torch.nn.init.normal_(head.summary.weight)
    hidden = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = head(hidden.to(torch.bfloat16))
    assert values.dtype == torch.float32
    expected = hidden.to(torch.bfloat16).float() @ head.summary.weight[0] + head.summary.bias
    assert torch.allclose(values, expected, atol=1e-5)
    # returns that bf16 cannot hold (8 bits of mantissa): the loss must not round them
    returns = torch.full((2, 5), 1.001)
    v = torch.ones(2, 5, requires_grad=True)
    mask = torch.ones(2, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = value_loss(v, v.detach(), returns, mask, clip_eps=None)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(0.5 * 0.001**2, rel=1e-3)


def test_batch_without_signal_gives_no_policy_update():
    """Every episode scored 0: whitening would turn the KL/critic noise into unit-size advantages."""
    from algorithms.common.ppo_core import normalize_advantages

    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 6, dtype=torch.bool)
    noise = 1e-3 * torch.randn(4, 6, generator=gen)  # KL penalty and critic error, no task signal
    assert float(masked_whiten(noise, mask).std()) > 0.9  # the defect: a full-size update of noise
    adv, has_signal = normalize_advantages(noise, mask, episode_returns=torch.zeros(4), whiten=True)
    assert not has_signal and float(adv.abs().max()) == 0.0
    adv, has_signal = normalize_advantages(noise, mask, episode_returns=torch.ones(4), whiten=True)
    assert not has_signal and float(adv.abs().max()) == 0.0  # all solved: no signal either
    adv, has_signal = normalize_advantages(noise, mask, episode_returns=torch.tensor([0, 1.0, 0, 0]))
    assert has_signal and torch.allclose(adv, masked_whiten(noise, mask))
    adv, has_signal = normalize_advantages(noise, mask, episode_returns=torch.tensor([0, 1.0, 0, 0]), whiten=False)
    assert has_signal and torch.equal(adv, noise)


def test_default_value_clip_lets_a_zero_critic_fit_a_fixed_batch():
    """0.2-absolute clipping around the (zero) old values caps a fresh critic at |V| <= 0.2 for the whole
    iteration; the trainer's default must let explained variance rise towards 1 on a fixed batch."""
    from algorithms.ppo_train import Args

    torch.manual_seed(0)
    B, T, H = 8, 12, 16
    features = torch.randn(B, T, H)
    returns = (features[..., 0] > 0).float() * 2.0  # returns of size ~1-2, as a task score gives
    mask = torch.ones(B, T)
    head = ValueHead(H)
    old_values = head(features).detach()  # zero: the critic at the start of the iteration
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    ev_start = float(explained_variance(old_values, returns, mask))
    for _ in range(300):
        loss, _ = value_loss(head(features), old_values, returns, mask, clip_eps=Args().vf_clip_coef)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev_end = float(explained_variance(head(features).detach(), returns, mask))
    assert ev_start <= 0.0 and ev_end > 0.6, (ev_start, ev_end)


def test_truncated_importance_weights():
    from algorithms.common.ppo_core import truncated_importance_weights

    mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    trainer = torch.log(torch.tensor([[0.5, 0.5, 0.9, 0.1, 0.3]]))
    sampler = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.2, 0.3]]))
    weights, stats = truncated_importance_weights(trainer, sampler, mask, cap=2.0)
    assert torch.allclose(weights[mask], torch.tensor([1.0, 2.0, 0.5]))  # 0.9/0.3 = 3 is capped at 2
    assert float(weights[~mask].abs().max()) == 0.0
    assert float(stats["tis_clipfrac"]) == pytest.approx(1 / 3)
    assert float(stats["tis_weight_mean"]) == pytest.approx(3.5 / 3)
    # the weights scale each token's policy-gradient term
    logp = trainer.clone().requires_grad_(True)
    adv = torch.ones_like(logp)
    loss, _ = policy_loss(logp, trainer, adv, mask, tis_weights=weights)
    loss.backward()
    assert torch.allclose(logp.grad[mask], -weights[mask] / 3)
