"""Running a policy for a number of episodes, and summarising the outcome with a confidence interval.

Used by ``cmat-gym eval``, the demo and the benchmarks, so that every success rate the project
reports comes from the same loop: episode ``i`` starts with ``env.reset(seed=seed + i)`` (and task
``task_indices[i]`` when given), so a run is reproducible from its seed.

:func:`run_episodes` plays episodes one after the other (``batch_size=1``) or with continuous
batching: up to ``batch_size`` envs each play their own episode, every tick the policy acts for
all of them in one batched call (a language model then generates every pending action at once),
and a slot whose episode ends starts the next episode at once.

Two protocols for the CMAT loop's reflection memory:

* **single-trial** (:func:`run_episodes`; ``cmat-gym eval --memory on``): every task is played once.
  Reflections on other tasks may be lessons, but a task is never served a reflection written on
  that same task (the loop filters by task id), since a reflection may quote what the Assistant
  computed.
* **multi-trial** (:func:`run_trials`; ``cmat-gym eval --memory on --trials K``): Reflexion-style
  retries. Each task is played up to ``K`` times, stopping at its first success; each retry is shown
  the reflections of that task's earlier failed trials. :func:`summarize_trials` reports the
  success rate after ``k`` trials (``success@k``) for ``k = 1..K``; ``success@1`` is the
  single-trial success rate.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from tqdm import tqdm

from cmat_gym.agents.policies import Policy, is_privileged
from cmat_gym.scale.specs import PolicySpec

if TYPE_CHECKING:
    from cmat_gym.trajectories import Trajectory

EnvFactory = Callable[[], gym.Env]


@dataclass(frozen=True)
class EpisodeResult:
    """The outcome of one episode.

    Attributes:
        task_id: the task played.
        success: whether the task was solved.
        score: the final reward (the task score).
        steps: actions taken (``env.step`` calls).
        dense_score: the domain's graded score (shaping information, not the reward).
        truncated: whether the episode hit the step limit instead of ending on a final answer.
        format_errors: steps whose action did not parse in the domain's grammar (see
            :func:`is_format_error`).
        cmat: the CMAT loop's ``episode_metrics`` (rejections, checker precision/recall,
            reflections, ...) when the env is the CMAT wrapper, else None.
        trial: which trial of its task this episode was (1 outside :func:`run_trials`).
        reflection: the reflection the CMAT loop wrote after this (failed) episode, else None.
        trajectory: every step of the episode when played with ``record=True`` (see
            :mod:`cmat_gym.trajectories`), else None; left out of equality and ``repr``.
        reruns: times the episode was started again because the Ray worker playing it died
            (``backend="ray"``; always 0 locally); left out of equality: the result is the same.
    """

    task_id: str
    success: bool
    score: float
    steps: int
    dense_score: float = 0.0
    truncated: bool = False
    format_errors: int = 0
    cmat: dict[str, Any] | None = None
    trial: int = 1
    reflection: str | None = None
    trajectory: Trajectory | None = field(default=None, compare=False, repr=False)
    reruns: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (the trajectory as nested dicts, when recorded)."""
        return asdict(self)


def is_format_error(info: dict[str, Any]) -> bool:
    """Whether a step's action failed to parse: the env says ``error="parse_error"``, or (CMAT loop)
    the checker rejected an action that has no parse (``error="rejected"``, ``parsed_action`` None)."""
    error = info.get("error")
    return error == "parse_error" or (error == "rejected" and info.get("parsed_action") is None)


@dataclass
class _Episode:
    """An episode in progress in one slot."""

    index: int
    observation: str
    task: Any
    steps: int = 0
    format_errors: int = 0
    trajectory: Trajectory | None = None


def run_episodes(
    env: gym.Env | EnvFactory,
    policy: Policy | PolicySpec,
    episodes: int,
    seed: int,
    task_indices: Sequence[int] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    on_episode_end: Callable[[EpisodeResult, gym.Env], None] | None = None,
    seeds: Sequence[int] | None = None,
    reset_options: Sequence[dict[str, Any] | None] | None = None,
    record: bool = False,
    backend: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> list[EpisodeResult]:
    """Play ``episodes`` episodes of ``env`` with ``policy``; the results in episode order.

    Episode ``i`` starts with ``env.reset(seed=seed + i)`` (``seeds[i]`` when given; plus
    ``options={"task_index": task_indices[i]}`` when indices are given, and ``reset_options[i]``)
    in some slot ``s``, and ``policy.reset(slots=[s])``.
    A privileged policy (the oracle: ``privileged = True``) also gets each slot's gold task
    (``env.unwrapped.task``) as ``tasks=``; no other policy ever sees it.

    With ``batch_size > 1`` up to that many envs (built by the factory ``env``) play at once: each
    tick, ``policy.act(observations)`` is called ONCE for every active slot, then each env
    steps; a finished slot starts the next episode right away (continuous batching). When fewer
    slots than ``batch_size`` are active (the last episodes), the call passes ``slots=[...]``, the
    slot of each observation, so policies keep per-slot state straight. Which episode lands in
    which slot, and so each episode's result, does not depend on timing: the run is reproducible.
    Results equal the sequential ones for policies whose actions depend only on their slot's
    episode (the oracle; a greedy language model up to float rounding of padded batches); envs that
    share state across episodes (a read-write reflection memory) see episodes finish in another order.

    Args:
        env: a cmat-gym environment (wrapped or not; used as is, not closed), or a factory building
            one (its envs are closed at the end). ``batch_size > 1`` needs a factory.
        policy: any :class:`~cmat_gym.agents.policies.Policy`, or a :class:`~cmat_gym.scale.PolicySpec`
            (built here).
        episodes: how many episodes to play.
        seed: the seed of episode 0.
        task_indices: the task of each episode, for envs that loaded a task file; its length must
            equal ``episodes``.
        progress: show a tqdm progress bar on stderr.
        batch_size: envs playing at once.
        on_episode_end: called with each result and its env right after the episode ends (before
            the slot's env starts another one), e.g. to ``render()`` a transcript.
        seeds: the reset seed of each episode (default ``seed + i``); its length must equal ``episodes``.
        reset_options: more reset options of each episode (e.g. the CMAT loop's ``trial_reflections``).
        record: keep every step of every episode in :attr:`EpisodeResult.trajectory` (chat messages, tool
            schemas, actions, observations, rewards, checker verdicts and hindsight), for
            :func:`cmat_gym.trajectories.save_trajectories` and :mod:`cmat_gym.report`.
        backend: ``"local"`` (this process) or ``"ray"``: the episodes spread over ``workers`` Ray actors
            (the ``[scale]`` extra; :mod:`cmat_gym.scale.ray_backend`), with the same results, in the same
            order, as the local sequential run. Ray needs ``env`` as a picklable factory and ``policy``
            as a :class:`~cmat_gym.scale.PolicySpec` (a policy by name; each worker builds its replica);
            it takes no ``on_episode_end``. ``batch_size`` is then per worker, with the guarantee of
            local batching (equal results for policies that act on their slot's episode alone).
        workers: Ray actors (``backend="ray"``).
        ray_address: a running Ray cluster to join (default: a local instance, started and shut down here).
    """
    if episodes < 0:
        raise ValueError(f"Expects episodes >= 0, actual {episodes}")
    if batch_size < 1:
        raise ValueError(f"Expects batch_size >= 1, actual {batch_size}")
    if task_indices is not None and len(task_indices) != episodes:
        raise ValueError(f"Expects one task index per episode ({episodes}), actual {len(task_indices)}")
    if seeds is not None and len(seeds) != episodes:
        raise ValueError(f"Expects one seed per episode ({episodes}), actual {len(seeds)}")
    if reset_options is not None and len(reset_options) != episodes:
        raise ValueError(f"Expects one reset options dict per episode ({episodes}), actual {len(reset_options)}")
    if backend == "ray":
        if on_episode_end is not None:
            raise ValueError("Expects no on_episode_end for backend='ray' (the envs live in the workers)")
        from cmat_gym.scale.ray_backend import run_episodes_ray

        return run_episodes_ray(env, policy, episodes, seed, workers=workers, address=ray_address,  # type: ignore[arg-type]
                                task_indices=task_indices, seeds=seeds, reset_options=reset_options,
                                record=record, progress=progress, batch_size=batch_size)
    if backend != "local":
        raise ValueError(f"Expects backend 'local' or 'ray', actual {backend!r}")
    if isinstance(policy, PolicySpec):
        policy = policy.build()
    factory = None if isinstance(env, gym.Env) else env
    if factory is None and batch_size > 1:
        raise ValueError("Expects an env factory (a callable returning an env) for batch_size > 1, actual an env")
    n_slots = max(1, min(batch_size, episodes))
    privileged = is_privileged(policy)
    envs: list[gym.Env] = [env] if factory is None else []  # type: ignore[list-item]
    results: list[EpisodeResult | None] = [None] * episodes
    running: list[_Episode | None] = [None] * n_slots
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            running[slot] = None
            return
        i, next_episode = next_episode, next_episode + 1
        slot_env = envs[slot]
        options = {"task_index": int(task_indices[i])} if task_indices is not None else {}
        if reset_options is not None and reset_options[i]:
            options.update(reset_options[i])  # type: ignore[arg-type]
        episode_seed = int(seeds[i]) if seeds is not None else seed + i
        observation, _ = slot_env.reset(seed=episode_seed, options=options or None)
        policy.reset(slots=[slot])
        running[slot] = _Episode(i, observation, slot_env.unwrapped.task)
        if record:
            from cmat_gym.trajectories import Trajectory

            running[slot].trajectory = Trajectory.start(slot_env, policy, observation, episode_seed)

    bar = tqdm(total=episodes, desc="episodes", unit="ep", file=sys.stderr, disable=not progress)
    try:
        while len(envs) < n_slots:
            envs.append(factory())  # type: ignore[misc]
        for slot in range(n_slots):
            start(slot)
        while True:
            active = [slot for slot in range(n_slots) if running[slot] is not None]
            if not active:
                break
            observations = [running[s].observation for s in active]  # type: ignore[union-attr]
            slots = None if active == list(range(len(active))) else active
            if privileged:
                tasks = [running[s].task for s in active]  # type: ignore[union-attr]
                actions = policy.act(observations, slots, tasks=tasks)  # type: ignore[call-arg]
            else:
                actions = policy.act(observations, slots)
            for slot, action in zip(active, actions, strict=True):
                episode = running[slot]
                assert episode is not None
                episode.observation, reward, terminated, truncated, info = envs[slot].step(action)
                episode.steps += 1
                if episode.trajectory is not None:
                    episode.trajectory.add(action, episode.observation, reward, info)
                episode.format_errors += is_format_error(info)
                if terminated or truncated:
                    result = _result(episode, info, bool(truncated and not terminated))
                    results[episode.index] = result
                    if on_episode_end is not None:
                        on_episode_end(result, envs[slot])
                    bar.update(1)
                    start(slot)
    finally:
        bar.close()
        if factory is not None:
            for slot_env in envs:
                slot_env.close()
    return results  # type: ignore[return-value]


def _result(episode: _Episode, info: dict[str, Any], truncated: bool) -> EpisodeResult:
    metrics = info.get("episode_metrics")
    return EpisodeResult(
        task_id=episode.task.task_id, success=bool(info.get("success", False)), score=float(info.get("score", 0.0)),
        steps=episode.steps, dense_score=float(info.get("dense_score", 0.0)), truncated=truncated,
        format_errors=episode.format_errors, cmat=dict(metrics) if metrics is not None else None,
        reflection=info.get("reflection"), trajectory=episode.trajectory,
    )


def run_trials(
    env: EnvFactory,
    policy: Policy,
    episodes: int,
    seed: int,
    trials: int,
    task_indices: Sequence[int] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    record: bool = False,
) -> list[list[EpisodeResult]]:
    """Multi-trial (Reflexion-style) evaluation through the CMAT loop: play each of ``episodes`` tasks up
    to ``trials`` times, stopping at its first success; a retry sees its task's earlier reflections.

    Task ``j`` is the one :func:`run_episodes` would play as episode ``j`` (reset seed ``seed + j``,
    ``task_indices[j]``), and every trial of it replays that same reset. Trials go in rounds: round
    ``t`` plays trial ``t`` of every task not yet solved, through :func:`run_episodes` (batched as
    asked). Each episode gets the reset option ``trial_reflections``: the reflections written after
    the task's earlier failed trials (none in round 1, so round 1 is exactly a single-trial run); the
    loop reflects on every failed trial, whether or not a writable store also keeps the reflection.
    Reflections on *other* tasks come from the env's store as in single-trial runs.

    Args:
        env: a factory of CMAT envs (:func:`env_factory` with ``cmat=True``).
        policy, episodes, seed, task_indices, progress, batch_size, record: as :func:`run_episodes`
            (``episodes`` counts tasks).
        trials: the most trials per task (``K``; 1 is a single-trial run).

    Returns:
        For each task, its results in trial order (:attr:`EpisodeResult.trial` = 1, 2, ...); only the
        last one can be a success.
    """
    if trials < 1:
        raise ValueError(f"Expects trials >= 1, actual {trials}")
    if isinstance(env, gym.Env):
        raise ValueError("Expects an env factory for run_trials (each round builds its envs), actual an env")
    if task_indices is not None and len(task_indices) != episodes:
        raise ValueError(f"Expects one task index per episode ({episodes}), actual {len(task_indices)}")
    from cmat_gym.cmat.wrapper import CMATEnv

    first = env()  # checked now, and played in round 1
    if not isinstance(first.unwrapped, CMATEnv):
        first.close()
        raise ValueError("Expects CMAT envs for run_trials (env_factory(..., cmat=True)): retries are shown the "
                         f"reflections the CMAT loop writes; actual {type(first.unwrapped).__name__}")
    spare = [first]

    def build() -> gym.Env:
        return spare.pop() if spare else env()

    per_task: list[list[EpisodeResult]] = [[] for _ in range(episodes)]
    reflections: list[list[str]] = [[] for _ in range(episodes)]
    pending = list(range(episodes))
    for trial in range(1, trials + 1):
        if not pending:
            break
        results = run_episodes(
            build, policy, len(pending), seed, progress=progress, batch_size=batch_size,
            seeds=[seed + j for j in pending],
            task_indices=[task_indices[j] for j in pending] if task_indices is not None else None,
            reset_options=[{"trial_reflections": list(reflections[j])} for j in pending],
            record=record,
        )
        for j, result in zip(pending, results, strict=True):
            per_task[j].append(dataclasses.replace(result, trial=trial))
            if result.reflection:
                reflections[j].append(result.reflection)
        pending = [j for j in pending if not per_task[j][-1].success]
    for unused in spare:  # no episode at all: the run never took it
        unused.close()
    return per_task


def summarize_trials(per_task: Sequence[Sequence[EpisodeResult]], trials: int) -> dict[str, Any]:
    """``success@k`` for ``k = 1..trials`` (the fraction of tasks solved within their first ``k``
    trials, with its 95% Wilson interval), the mean number of trials played, and each task's outcome."""
    n = len(per_task)
    solved_at = [next((r.trial for r in results if r.success), None) for results in per_task]
    rows = []
    for k in range(1, trials + 1):
        successes = sum(t is not None and t <= k for t in solved_at)
        low, high = wilson_interval(successes, n)
        rows.append({"k": k, "successes": successes, "success_rate": successes / n if n else 0.0,
                     "ci95": [low, high]})
    return {
        "protocol": f"multi-trial: up to {trials} trials per task, stopping at the first success; a retry "
                    "sees the reflections of its task's earlier failed trials",
        "max_trials": trials,
        "tasks": n,
        "success@k": rows,
        "mean_trials": sum(len(results) for results in per_task) / n if n else 0.0,
        "per_task": [{"task_id": results[0].task_id if results else None, "trials": len(results), "solved_at": t}
                     for results, t in zip(per_task, solved_at, strict=True)],
    }


def env_factory(
    env_id: str,
    *,
    cmat: bool = False,
    checker: str = "rule",
    checker_policy: Any = None,
    memory: Any = None,
    **env_kwargs: Any,
) -> EnvFactory:
    """A factory of envs for :func:`run_episodes`: ``gym.make(env_id, **env_kwargs)``, or with ``cmat``
    the single-agent CMAT loop around it (:func:`~cmat_gym.cmat.wrapper.make_cmat` with ``checker``,
    ``checker_policy`` for ``checker="llm"``, and ``memory``, a ReflectionStore shared by every env)."""
    if not cmat:
        return lambda: gym.make(env_id, **env_kwargs)
    from cmat_gym.cmat.wrapper import make_cmat

    return lambda: make_cmat(env_id, checker=checker, checker_policy=checker_policy, memory=memory, **env_kwargs)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for the default ``z``).

    Well-behaved at 0 and n successes, unlike the normal approximation; ``(0.0, 1.0)`` when n is 0.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"Expects 0 <= successes <= n, actual successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n successes the ends are exactly 0 and 1; say so rather than carry rounding error.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Episodes, successes, success rate with its 95% Wilson interval, mean score and steps, and
    format errors (the fraction of steps whose action did not parse, and of episodes with at least one)."""
    n = len(results)
    successes = sum(r.success for r in results)
    steps = sum(r.steps for r in results)
    low, high = wilson_interval(successes, n)
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "ci95": [low, high],
        "mean_score": sum(r.score for r in results) / n if n else 0.0,
        "mean_steps": steps / n if n else 0.0,
        "format_error_rate": sum(r.format_errors for r in results) / steps if steps else 0.0,
        "episodes_with_format_error": sum(r.format_errors > 0 for r in results) / n if n else 0.0,
    }


def summarize_cmat(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """The CMAT loop's numbers over a run (episodes played through the CMAT wrapper).

    Checker precision and recall are aggregated over all reviewed actions of the run, against
    hindsight (a positive is a rejection of an action that hindsight calls bad): precision = bad
    rejected / rejected, recall = bad rejected / bad; None when the denominator is 0.
    """
    metrics = [r.cmat for r in results if r.cmat is not None]
    if len(metrics) != len(results):
        raise ValueError("Expects every episode to come from the CMAT wrapper (EpisodeResult.cmat set)")
    n = len(metrics)
    rejected = sum(m["rejected_actions"] for m in metrics)
    bad = sum(m["bad_actions"] for m in metrics)
    # episode_metrics gives precision = caught / rejected; recover the count (an exact integer).
    caught = sum(round(m["checker_precision"] * m["rejected_actions"]) for m in metrics if m["rejected_actions"])
    return {
        "reviewed_actions": sum(m["reviewed_actions"] for m in metrics),
        "rejected_actions": rejected,
        "mean_rejected_actions": rejected / n if n else 0.0,
        "bad_actions": bad,
        "bad_rejected": caught,
        "checker_precision": caught / rejected if rejected else None,
        "checker_recall": caught / bad if bad else None,
        "reflections_used": sum(m["reflections_used"] for m in metrics),
        "own_task_reflections_used": sum(m.get("own_task_reflections_used", 0) for m in metrics),
        "episodes_with_reflections": sum(m["reflections_used"] > 0 for m in metrics),
        "reflections_written": sum(bool(m["reflection_written"]) for m in metrics),
        "questions": sum(m["questions"] for m in metrics),
    }


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of ``k`` successes in ``n`` fair trials (sign test; 1 when n is 0)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"Expects 0 <= k <= n, actual k={k}, n={n}")
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(a: Sequence[bool | int], b: Sequence[bool | int]) -> dict[str, Any]:
    """Exact McNemar test of paired 0/1 outcomes (the same tasks played by agents ``a`` and ``b``).

    Returns ``only_a`` (tasks a solved and b did not), ``only_b`` and ``p``: the sign test of the
    discordant pairs, :func:`sign_test_p` of ``min(only_a, only_b)`` in ``only_a + only_b`` (1 when
    there are none). Concordant tasks carry no evidence either way, which is why the test ignores them.
    """
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return {"only_a": only_a, "only_b": only_b, "p": sign_test_p(min(only_a, only_b), only_a + only_b)}
