"""The Web rule checker (gold-free rules, each with feedback that names the fix) and its hindsight
from the reward delta, alone and in the CMAT loop."""

from __future__ import annotations

from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.core.checking import public_task
from cmat_gym.domains.web.checker import WebHooks, WebRuleChecker, price_bound
from cmat_gym.domains.web.env import GRAMMAR, WebEnv
from cmat_gym.domains.web.shop import Page
from cmat_gym.domains.web.tasks import generate_task


def review(env: WebEnv, action: str):
    return WebRuleChecker().review(public_task(env.task), [], action, env)


def on_gold_item(seed: int = 7, difficulty: int = 2) -> WebEnv:
    env = WebEnv()
    task = generate_task(seed, "train", difficulty)
    env.reset(options={"task": task})
    env.step(GRAMMAR.call("search", task.payload["title"]))
    env.step(GRAMMAR.call("click", task.payload["asin"]))
    return env


def test_rules_reject_with_feedback() -> None:
    env = WebEnv()
    env.reset(seed=1)
    assert not review(env, "click[B0NOTHERE1]").approve
    assert "not clickable" in review(env, "click[B0NOTHERE1]").feedback
    assert not review(env, "do something").approve
    assert review(env, "search[scented candle]").approve
    env.step("search[scented candle]")
    verdict = review(env, "search[scented candle]")
    assert not verdict.approve and "no search bar" in verdict.feedback
    env.step("click[Back to Search]")
    verdict = review(env, "search[Scented   CANDLE]")  # the same search, however it is spelled
    assert not verdict.approve and "already searched" in verdict.feedback
    env.close()


def test_buy_before_choosing_every_option_is_rejected_then_approved() -> None:
    env = on_gold_item()
    names = list(env.page.option_groups())
    verdict = review(env, "click[Buy Now]")
    assert not verdict.approve and all(n in verdict.feedback for n in names)
    for value in env.task.payload["goal_options"].values():
        assert review(env, f"click[{value}]").approve
        env.step(f"click[{value}]")
    assert review(env, "click[Buy Now]").approve
    env.close()


def test_over_budget_purchase_is_rejected() -> None:
    env = on_gold_item()
    for value in env.task.payload["goal_options"].values():
        env.step(f"click[{value}]")
    task = env.task
    cheap = task.instruction.replace(f"lower than {task.payload['price_upper']:.2f}", "lower than 1.00")
    assert price_bound(cheap) == 1.0
    verdict = WebRuleChecker().review(public_task(task).__class__(**{**public_task(task).to_dict(),
                                                                   "instruction": cheap}), [], "click[Buy Now]", env)
    assert not verdict.approve and "above the $1.00" in verdict.feedback
    env.close()


def test_hindsight_from_the_reward_delta() -> None:
    hooks = WebHooks()
    env = on_gold_item()
    name, gold_value = next(iter(env.task.payload["goal_options"].items()))
    wrong = next(v for v in env.page.option_groups()[name] if v.text != gold_value).text
    good, bad = GRAMMAR.parse(f"click[{gold_value}]"), GRAMMAR.parse(f"click[{wrong}]")
    assert hooks.dry_run_ok(env, good) is True and hooks.dry_run_ok(env, bad) is False
    snap = hooks.snapshot(env, bad)
    obs, *_ = env.step(f"click[{wrong}]")
    assert hooks.executed_ok(env, bad, obs, snap) is False  # a wrong value, even with nothing chosen before
    snap = hooks.snapshot(env, good)
    obs, *_ = env.step(f"click[{gold_value}]")
    assert hooks.executed_ok(env, good, obs, snap) is True
    snap = hooks.snapshot(env, bad)
    obs, *_ = env.step(f"click[{wrong}]")
    assert hooks.executed_ok(env, bad, obs, snap) is False  # gold to wrong: the reward fell
    assert hooks.executed_ok(env, bad, "Error: invalid action: x", snap) is False
    assert hooks.dry_run_ok(env, GRAMMAR.parse("click[Nowhere]")) is False
    assert isinstance(env.page, Page)
    env.close()


def test_oracle_is_approved_at_every_step_in_the_cmat_loop() -> None:
    env = make_cmat("cmat/Web-v0", checker="rule")
    for seed in range(4):
        env.reset(seed=seed)
        for action in WebEnv.oracle_actions(env.task):
            _, reward, terminated, _, info = env.step(action)
            assert info["checker_verdict"] == "APPROVE", (action, info)
        assert terminated and info["success"]
    env.close()


def test_cmat_loop_rejects_an_early_buy_and_labels_it_in_hindsight() -> None:
    env = make_cmat("cmat/Web-v0", checker="rule")
    env.reset(seed=3)
    task = env.task
    env.step(GRAMMAR.call("search", task.payload["title"]))
    env.step(GRAMMAR.call("click", task.payload["asin"]))
    obs, reward, terminated, _, info = env.step("click[Buy Now]")
    assert not terminated and info["checker_verdict"] == "REJECT" and info["hindsight"] is False
    env.close()
