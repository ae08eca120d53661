"""The Wilson interval and the episode loop."""

from __future__ import annotations

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401
from cmat_gym.agents import OraclePolicy, RandomPolicy
from cmat_gym.evaluation import (
    EpisodeResult,
    env_factory,
    is_format_error,
    run_episodes,
    summarize,
    summarize_cmat,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.27754)),  # upper end = z^2 / (n + z^2) when there is no success
        (10, 10, (0.72246, 1.0)),
        (5, 10, (0.23659, 0.76341)),
        (1, 10, (0.01787, 0.40415)),
        (60, 60, (0.93983, 1.0)),
    ],
)
def test_wilson_interval_known_values(successes: int, n: int, expected: tuple[float, float]) -> None:
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-5)
    assert high == pytest.approx(expected[1], abs=1e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(1, 2, z=2.576)
    assert 0 < low < 0.5 < high < 1
    assert wilson_interval(50, 100, z=2.576)[0] < wilson_interval(50, 100)[0]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_summarize() -> None:
    results = [EpisodeResult("a", True, 1.0, 2), EpisodeResult("b", False, 0.0, 4)]
    summary = summarize(results)
    assert summary["episodes"] == 2 and summary["successes"] == 1
    assert summary["success_rate"] == 0.5 and summary["mean_steps"] == 3.0
    assert summary["ci95"] == list(wilson_interval(1, 2))


def test_run_episodes_is_reproducible_from_its_seed() -> None:
    env = gym.make("cmat/DB-v0", split="train", difficulty=1)
    first = run_episodes(env, RandomPolicy(0, domain="db"), 4, seed=11, progress=False)
    second = run_episodes(env, RandomPolicy(0, domain="db"), 4, seed=11, progress=False)
    oracle = run_episodes(env, OraclePolicy(), 4, seed=11, progress=False)
    env.close()
    assert first == second
    assert [r.task_id for r in oracle] == [r.task_id for r in first]
    assert all(r.success and r.score == 1.0 and not r.truncated for r in oracle)


def test_run_episodes_checks_task_indices() -> None:
    env = gym.make("cmat/DB-v0")
    with pytest.raises(ValueError, match="one task index per episode"):
        run_episodes(env, OraclePolicy(), 2, seed=0, task_indices=[0])
    env.close()


# ------------------------------------------------------------------------------ batched runner
def db_factory(built: list | None = None, **kwargs):
    def make():
        env = gym.make("cmat/DB-v0", **kwargs)
        if built is not None:
            built.append(env)
        return env
    return make


@pytest.mark.parametrize("kwargs", [{"split": "test"}, {"tasks": "agentbench"}])
def test_batched_runner_equals_sequential_for_the_oracle(kwargs, request) -> None:
    task_indices = None
    if "tasks" in kwargs:
        path = request.getfixturevalue("agentbench_db_path")
        kwargs = {"tasks": str(path)}
        task_indices = [i * 3 % 60 for i in range(13)]  # mixed kinds, mutations included
    env = gym.make("cmat/DB-v0", **kwargs)
    sequential = run_episodes(env, OraclePolicy(), 13, seed=5, task_indices=task_indices, progress=False)
    env.close()
    for batch_size in (1, 4):
        batched = run_episodes(db_factory(**kwargs), OraclePolicy(), 13, seed=5, task_indices=task_indices,
                               progress=False, batch_size=batch_size)
        assert batched == sequential
    assert all(r.success for r in sequential)
    assert len({r.task_id for r in sequential}) == 13


class RecordingPolicy:
    """Answers (wrongly) after one action, or after three in slot 1; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int] | None]] = []
        self.resets: list[list[int] | None] = []
        self.counts: dict[int, int] = {}

    def act(self, observations, slots=None):
        self.calls.append((len(observations), None if slots is None else list(slots)))
        actions = []
        for slot in (slots if slots is not None else range(len(observations))):
            self.counts[slot] = self.counts.get(slot, 0) + 1
            done = self.counts[slot] >= (3 if slot == 1 else 1)
            actions.append('Action: Answer\nFinal Answer: ["x"]' if done else "SELECT 1")
        return actions

    def reset(self, slots=None):
        self.resets.append(None if slots is None else list(slots))
        for slot in slots or list(self.counts):
            self.counts.pop(slot, None)


def test_batched_runner_refills_slots_and_calls_the_policy_once_per_tick() -> None:
    built: list = []
    policy = RecordingPolicy()
    results = run_episodes(db_factory(built, split="test"), policy, 4, seed=0, progress=False, batch_size=3)
    assert len(built) == 3  # one env per slot, reused for the following episodes
    assert all(env.unwrapped._closed for env in built)  # the runner built them, so it closes them
    # tick 1: slots 0, 1, 2 (episodes 0-2); slot 0 ends and takes episode 3, slot 2 ends and idles;
    # tick 2: slots 0 and 1; tick 3: slot 1 alone, named in the call since slot 0 idles.
    assert policy.calls == [(3, None), (2, None), (1, [1])]
    assert policy.resets == [[0], [1], [2], [0]]
    assert [r.steps for r in results] == [1, 3, 1, 1]  # in episode order, whatever the slot
    ids = [r.task_id for r in run_episodes(gym.make("cmat/DB-v0", split="test"), OraclePolicy(), 4, 0, progress=False)]
    assert [r.task_id for r in results] == ids  # episode i is task i whatever the batch


def test_batched_runner_needs_a_factory_and_calls_back() -> None:
    env = gym.make("cmat/DB-v0")
    with pytest.raises(ValueError, match="factory"):
        run_episodes(env, OraclePolicy(), 2, seed=0, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        run_episodes(env, OraclePolicy(), 2, seed=0, batch_size=0)
    seen = []
    run_episodes(env, OraclePolicy(), 2, seed=0, progress=False, on_episode_end=lambda r, e: seen.append((r, e)))
    assert [e for _, e in seen] == [env, env] and all(r.success for r, _ in seen)
    assert not env.unwrapped._closed  # an env passed in is the caller's
    env.close()


def test_format_errors_are_counted() -> None:
    assert is_format_error({"error": "parse_error"})
    assert is_format_error({"error": "rejected", "parsed_action": None})
    assert not is_format_error({"error": "rejected", "parsed_action": {"kind": "operation"}})
    assert not is_format_error({"error": None})

    class Junk:
        def act(self, observations, slots=None):
            return ["Action: Dance"] * len(observations)

        def reset(self, slots=None):
            pass

    results = run_episodes(gym.make("cmat/DB-v0", max_rounds=3), Junk(), 2, seed=0, progress=False)
    assert [r.format_errors for r in results] == [3, 3]
    summary = summarize(results)
    assert summary["format_error_rate"] == 1.0 and summary["episodes_with_format_error"] == 1.0
    cmat = run_episodes(env_factory("cmat/DB-v0", cmat=True, checker="rule", max_rounds=3), Junk(), 1, seed=0,
                        progress=False)
    assert cmat[0].format_errors == 3 and cmat[0].cmat["rejected_actions"] == 3


def test_summarize_cmat_aggregates_over_episodes() -> None:
    def metrics(rejected: int, bad: int, caught: int, reflections: int) -> dict:
        return {"reviewed_actions": 5, "rejected_actions": rejected, "bad_actions": bad,
                "checker_precision": caught / rejected if rejected else None,
                "checker_recall": caught / bad if bad else None, "reflections_used": reflections,
                "reflection_written": not caught, "questions": 0}

    results = [EpisodeResult("a", False, 0.0, 5, cmat=metrics(2, 3, 1, 0)),
               EpisodeResult("b", True, 1.0, 5, cmat=metrics(1, 1, 1, 2)),
               EpisodeResult("c", True, 1.0, 5, cmat=metrics(0, 2, 0, 1))]
    summary = summarize_cmat(results)
    assert summary["rejected_actions"] == 3 and summary["mean_rejected_actions"] == 1.0
    assert summary["checker_precision"] == pytest.approx(2 / 3)  # pooled, not the mean of per-episode values
    assert summary["checker_recall"] == pytest.approx(2 / 6)
    assert summary["reflections_used"] == 3 and summary["episodes_with_reflections"] == 2
    assert summary["reflections_written"] == 1
    with pytest.raises(ValueError, match="CMAT"):
        summarize_cmat([EpisodeResult("d", True, 1.0, 1)])


def test_cmat_episodes_carry_the_loop_metrics() -> None:
    results = run_episodes(env_factory("cmat/DB-v0", cmat=True, checker="rule", split="test"), OraclePolicy(), 4,
                           seed=0, progress=False, batch_size=2)
    assert all(r.success and r.cmat is not None and r.cmat["rejected_actions"] == 0 for r in results)
    assert summarize_cmat(results)["checker_precision"] is None  # nothing rejected: undefined


# ------------------------------------------------------------------------------ multi-trial evaluation
OWN_HEADER = "Reflections on your earlier attempts at this task:"
WRONG = 'Action: Answer\nFinal Answer: ["certainly not the answer"]'


class LearnsFromItsReflections:
    """Answers wrongly unless its first observation holds a reflection on an earlier attempt at the same
    task; then it plays the gold script. Records each episode's first observation."""

    privileged = True

    def __init__(self) -> None:
        self.oracle = OraclePolicy()
        self.informed: dict[int, bool] = {}
        self.firsts: list[tuple[str, str]] = []

    def act(self, observations, slots=None, *, tasks):
        slots = list(slots) if slots is not None else list(range(len(observations)))
        actions = []
        for slot, observation, task in zip(slots, observations, tasks, strict=True):
            if slot not in self.informed:
                self.informed[slot] = OWN_HEADER in observation
                self.firsts.append((task.task_id, observation))
            informed = self.informed[slot]
            actions.append(self.oracle.act([observation], [slot], tasks=[task])[0] if informed else WRONG)
        return actions

    def reset(self, slots=None):
        self.oracle.reset(slots)
        for slot in slots if slots is not None else list(self.informed):
            self.informed.pop(slot, None)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_run_trials_retries_failed_tasks_with_their_own_reflections(batch_size: int) -> None:
    from cmat_gym.cmat.memory import ReflectionStore
    from cmat_gym.evaluation import run_trials, summarize_trials

    store = ReflectionStore(None)  # the long-term memory: other tasks' reflections, as in single-trial runs
    policy = LearnsFromItsReflections()
    per_task = run_trials(env_factory("cmat/DB-v0", cmat=True, memory=store, split="test"), policy, 3, seed=4,
                          trials=3, progress=False, batch_size=batch_size)
    assert [[r.success for r in trials] for trials in per_task] == [[False, True]] * 3  # stops at the first success
    assert [[r.trial for r in trials] for trials in per_task] == [[1, 2]] * 3
    singles = run_episodes(env_factory("cmat/DB-v0", cmat=True, split="test"), OraclePolicy(), 3, seed=4,
                           progress=False)
    assert [trials[0].task_id for trials in per_task] == [r.task_id for r in singles]  # task j keeps seed + j
    assert all(trials[0].task_id == trials[1].task_id for trials in per_task)  # a retry replays its task
    # Trial 1 never sees a reflection of its own task; trial 2 sees its trial-1 reflection.
    for _, first in policy.firsts:
        if OWN_HEADER in first:
            assert "certainly not the answer" not in first.split(OWN_HEADER, 1)[1]  # the template quotes no answer
    assert sum(OWN_HEADER in first for _, first in policy.firsts) == 3
    assert all(trials[1].cmat["own_task_reflections_used"] == 1 for trials in per_task)
    assert all(trials[0].cmat["own_task_reflections_used"] == 0 for trials in per_task)
    summary = summarize_trials(per_task, 3)
    assert [row["successes"] for row in summary["success@k"]] == [0, 3, 3]
    assert summary["tasks"] == 3 and summary["max_trials"] == 3 and summary["mean_trials"] == 2.0
    assert summary["protocol"].startswith("multi-trial")


def test_run_trials_without_long_term_memory_and_its_checks() -> None:
    from cmat_gym.evaluation import run_trials

    per_task = run_trials(env_factory("cmat/DB-v0", cmat=True, split="test"), LearnsFromItsReflections(), 2, seed=0,
                          trials=2, progress=False)
    assert [[r.success for r in trials] for trials in per_task] == [[False, True]] * 2
    with pytest.raises(ValueError, match="trials"):
        run_trials(env_factory("cmat/DB-v0", cmat=True), OraclePolicy(), 1, seed=0, trials=0)
    with pytest.raises(ValueError, match="CMAT"):
        run_trials(env_factory("cmat/DB-v0"), OraclePolicy(), 1, seed=0, trials=2, progress=False)


def test_run_episodes_takes_seeds_and_reset_options() -> None:
    env = gym.make("cmat/DB-v0", split="test")
    plain = run_episodes(env, OraclePolicy(), 3, seed=7, progress=False)
    picked = run_episodes(env, OraclePolicy(), 2, seed=0, seeds=[9, 7], progress=False)
    assert [r.task_id for r in picked] == [plain[2].task_id, plain[0].task_id]
    with pytest.raises(ValueError, match="one seed per episode"):
        run_episodes(env, OraclePolicy(), 2, seed=0, seeds=[1])
    cmat = env_factory("cmat/DB-v0", cmat=True, split="test")()
    [result] = run_episodes(cmat, OraclePolicy(), 1, seed=7, progress=False,
                            reset_options=[{"trial_reflections": ["Try the other table."]}])
    assert result.cmat["own_task_reflections_used"] == 1
    env.close()
    cmat.close()


def test_mcnemar_exact_and_sign_test_match_hand_computations() -> None:
    from cmat_gym.evaluation import mcnemar_exact, sign_test_p

    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(3, 6) == 1.0
    a, b = [1, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1, 1, 0]  # 5 discordant for a, 1 for b
    assert mcnemar_exact(a, b) == {"only_a": 5, "only_b": 1, "p": pytest.approx(2 * 7 / 64)}
    assert mcnemar_exact(b, a)["p"] == mcnemar_exact(a, b)["p"]
    with pytest.raises(ValueError):
        mcnemar_exact([1], [1, 0])
