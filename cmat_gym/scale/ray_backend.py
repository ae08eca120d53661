"""Distributed rollouts on Ray actors: the Ray backend of :func:`cmat_gym.evaluation.run_episodes`.

Layout: ``workers`` actors (one CPU each), each holding ``batch_size`` envs from the factory and its
own policy replica built from a :class:`~cmat_gym.scale.specs.PolicySpec` (or a client of a shared
model server: ``PolicySpec("openai", ...)``). The driver cuts the run into chunks of consecutive
episodes and keeps every actor busy with up to two chunks (the second hides the round trip); results
come back per chunk and are put in episode order. With ``batch_size > 1`` an actor plays its chunk
with :func:`run_episodes`'s continuous batching: a language model (a replica, or a server that batches
concurrent requests) then generates for ``workers x batch_size`` episodes at once.

**Same results as the local run.** Episode ``i`` gets exactly what the local sequential run
(``batch_size=1``) gives it: reset seed ``seed + i`` (or ``seeds[i]``), task ``task_indices[i]``,
``reset_options[i]``, and the policy's slot 0 put where it stands before episode ``i`` locally
(:func:`~cmat_gym.scale.specs.seek_episode`), whichever worker plays it and in whatever order. With
``batch_size > 1`` the guarantee is the one of local batching: equal results for policies whose
actions depend only on their slot's episode (the oracle; a greedy language model up to float rounding
of padded batches), not for the random agent, whose streams follow the slots. What cannot be the same
is state shared *across* episodes: a read-write reflection memory lives in one process, so a Ray run
takes envs without one (each actor pickles the factory).

**Worker failure.** An actor that dies (killed, its node lost, out of memory) loses the chunks it held;
they go back to the queue, are played again by a fresh actor, and every such episode says so in
:attr:`~cmat_gym.evaluation.EpisodeResult.reruns` (and the run prints "re-run after worker failure: N"
on stderr). Episodes are never dropped; after ``workers`` replacements the run stops with an error
rather than loop on a fault that kills every actor. An exception raised *by* an env or a policy is a
bug, not a failure: it propagates.

**Cluster.** ``address`` joins a running cluster (``ray start --head`` / ``ray://...``; every node
needs cmat-gym installed); without it, and unless Ray is already initialised (then it is used as is),
a local instance is started with ``max(workers, cpu_count)`` CPUs (so that 4 workers run on 2 cores)
and shut down at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
from tqdm import tqdm

from cmat_gym.agents.policies import is_model_policy
from cmat_gym.evaluation import EnvFactory, EpisodeResult, run_episodes
from cmat_gym.scale.specs import PolicySpec, seek_episode

# Chunks in flight per actor: the second one is queued on the actor while the first plays, so the actor
# never waits for the driver; more would only lose more work when an actor dies.
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that fixes one episode of the run: its index, reset seed, task and reset options."""

    index: int
    seed: int
    task_index: int | None = None
    options: dict[str, Any] | None = None


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install the ``[scale]`` extra."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'cmat-gym[scale]' (or pip install 'ray>=2.9')") from exc
    return ray


class _Kept(gym.Wrapper):
    """A worker's env lent to one :func:`run_episodes` call, which closes its factory's envs: kept open
    here, for the next chunk."""

    def close(self) -> None:
        """Keep the env open (the worker closes it)."""


class RolloutWorker:
    """One worker's envs and policy replica, playing chunks of episodes (a Ray actor's body; plain
    Python, so it also runs in-process).

    Args:
        env: a picklable factory of the env (built ``batch_size`` times, reused for every episode).
        policy: the policy to build here.
        record: keep each episode's trajectory (:func:`run_episodes`'s ``record``).
        batch_size: episodes played at once (continuous batching; 1: one at a time, exactly as the
            local sequential run).
    """

    def __init__(self, env: EnvFactory, policy: PolicySpec, record: bool = False, batch_size: int = 1) -> None:
        if is_model_policy(policy.name):
            # One torch thread per worker process: N workers on N cores, not N x cores threads fighting.
            import torch

            torch.set_num_threads(1)
        self.policy = policy.build()
        self.envs = [env() for _ in range(batch_size)]
        self.record = record
        self.pid = os.getpid()

    def ready(self) -> int:
        """The worker's process id, once its env and policy are built (construction errors surface here)."""
        return self.pid

    def play(self, chunk: Sequence[EpisodeSpec]) -> list[EpisodeResult]:
        """Play the episodes of ``chunk``: one at a time, each exactly as the local sequential run plays it;
        or, with ``batch_size > 1``, with continuous batching over the worker's envs."""
        with_tasks = chunk[0].task_index is not None
        if len(self.envs) > 1:
            lent = list(self.envs)
            return run_episodes(
                lambda: _Kept(lent.pop()), self.policy, len(chunk), 0, progress=False, record=self.record,
                batch_size=len(self.envs), seeds=[spec.seed for spec in chunk],
                task_indices=[spec.task_index for spec in chunk] if with_tasks else None,  # type: ignore[misc]
                reset_options=[spec.options for spec in chunk],
            )
        results = []
        for spec in chunk:
            seek_episode(self.policy, 0, spec.index)
            results += run_episodes(
                self.envs[0], self.policy, 1, spec.seed, progress=False, record=self.record,
                task_indices=[spec.task_index] if with_tasks else None,  # type: ignore[list-item]
                reset_options=[spec.options],
            )
        return results

    def close(self) -> None:
        """Close the envs, and the policy when it has something to close (an API client's connections)."""
        for env in self.envs:
            env.close()
        close_policy = getattr(self.policy, "close", None)
        if close_policy is not None:
            close_policy()


@contextmanager
def ray_session(address: str | None, num_cpus: int) -> Iterator[Any]:
    """Ray, initialised: as it is when already up; else joined at ``address``, or started locally with
    ``num_cpus`` CPUs; shut down (or disconnected) at the end when this call started it."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        ray.init(address=address, log_to_driver=False)
    else:
        # address="local": a fresh instance, even when `ray start` left a cluster on this machine (plain
        # ray.init() would join that one).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def episode_specs(
    episodes: int, seed: int, task_indices: Sequence[int] | None, seeds: Sequence[int] | None,
    reset_options: Sequence[dict[str, Any] | None] | None,
) -> list[EpisodeSpec]:
    """Each episode's spec, derived as :func:`run_episodes` derives them (seed ``seed + i`` unless ``seeds``)."""
    return [EpisodeSpec(i, int(seeds[i]) if seeds is not None else seed + i,
                        int(task_indices[i]) if task_indices is not None else None,
                        dict(reset_options[i]) if reset_options is not None and reset_options[i] else None)
            for i in range(episodes)]


def run_episodes_ray(
    env: EnvFactory,
    policy: PolicySpec,
    episodes: int,
    seed: int,
    *,
    workers: int,
    address: str | None = None,
    task_indices: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    reset_options: Sequence[dict[str, Any] | None] | None = None,
    record: bool = False,
    progress: bool = True,
    batch_size: int = 1,
    chunk_size: int | None = None,
    on_submit: Callable[[Any, int], None] | None = None,
    stats: dict[str, float] | None = None,
) -> list[EpisodeResult]:
    """Play the episodes :func:`run_episodes` would play, on ``workers`` Ray actors; results in episode order.

    Args:
        env: a picklable env factory (:func:`cmat_gym.evaluation.env_factory`), not an env.
        policy: the policy as a :class:`PolicySpec` (each actor builds its replica).
        workers: actors to start.
        address: a running cluster to join (default: Ray as initialised, else a local instance).
        batch_size: episodes each actor plays at once (see the module's doc for what stays equal).
        chunk_size: episodes per task sent to an actor (default: about 8 chunks per worker, at most 16
            episodes each, and at least 4 batches with ``batch_size > 1``).
        on_submit: called with the actor handle and the number of chunks submitted so far, right after
            each submission (tests kill an actor there).
        stats: a dict to fill with ``startup_s`` (actors started, envs and policies built), ``play_s``
            (first submission to last result) and ``rerun`` (episodes re-run after a worker failure).
        task_indices, seeds, reset_options, record, progress: as :func:`run_episodes`.
    """
    if workers < 1 or batch_size < 1:
        raise ValueError(f"Expects workers >= 1 and batch_size >= 1, actual {workers} and {batch_size}")
    if not isinstance(policy, PolicySpec):
        raise ValueError("Expects the policy as a PolicySpec(name, kwargs) for backend='ray' (each worker builds "
                         f"its own replica), actual {type(policy).__name__}")
    if not callable(env) or hasattr(env, "step"):
        raise ValueError("Expects a picklable env factory (cmat_gym.evaluation.env_factory) for backend='ray', "
                         f"actual {type(env).__name__}")
    specs = episode_specs(episodes, seed, task_indices, seeds, reset_options)
    if not specs:
        return []
    size = chunk_size or max(1, min(16, -(-episodes // (8 * workers))), 4 * batch_size if batch_size > 1 else 1)
    pending = deque(specs[i:i + size] for i in range(0, episodes, size))
    results: list[EpisodeResult | None] = [None] * episodes
    reruns = [0] * episodes
    replacements_left = workers
    with ray_session(address, max(workers, os.cpu_count() or 1)) as ray:
        from ray.exceptions import RayActorError

        remote = ray.remote(num_cpus=1, max_restarts=0)(RolloutWorker)

        def start_actor() -> Any:
            actor = remote.remote(env, policy, record, batch_size)
            ray.get(actor.ready.remote())  # a bad spec fails here, with its own traceback
            return actor

        started = time.perf_counter()
        actors = [remote.remote(env, policy, record, batch_size) for _ in range(workers)]
        ray.get([actor.ready.remote() for actor in actors])
        playing = time.perf_counter()
        in_flight: dict[Any, tuple[int, Any, list[EpisodeSpec]]] = {}
        load = [0] * workers
        submitted = 0

        def fill() -> None:
            nonlocal submitted
            for w in range(workers):
                while pending and load[w] < IN_FLIGHT_PER_WORKER:
                    chunk = pending.popleft()
                    in_flight[actors[w].play.remote(chunk)] = (w, actors[w], chunk)
                    load[w] += 1
                    submitted += 1
                    if on_submit is not None:
                        on_submit(actors[w], submitted)

        bar = tqdm(total=episodes, desc="episodes (ray)", unit="ep", file=sys.stderr, disable=not progress)
        try:
            fill()
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                w, actor, chunk = in_flight.pop(ref)
                try:
                    played = ray.get(ref)
                except RayActorError:
                    # The actor died with this chunk: play it again, first, on a fresh actor.
                    pending.appendleft(chunk)
                    for spec in chunk:
                        reruns[spec.index] += 1
                    if actors[w] is actor:  # its other chunk in flight fails too; replace the actor once
                        if replacements_left == 0:
                            raise RuntimeError(f"Ray workers kept dying: {workers} replaced, giving up with "
                                               f"{sum(r is None for r in results)} episodes unplayed") from None
                        replacements_left -= 1
                        load[w] = 0
                        ray.kill(actor)  # if it was only unreachable, it must not come back and play on
                        actors[w] = start_actor()
                else:
                    load[w] -= 1
                    for spec, result in zip(chunk, played, strict=True):
                        results[spec.index] = result
                    bar.update(len(chunk))
                fill()
            if stats is not None:
                stats.update(startup_s=playing - started, play_s=time.perf_counter() - playing)
        finally:
            bar.close()
            try:  # close the envs (an OS sandbox's shell) before the processes go
                ray.get([actor.close.remote() for actor in actors], timeout=30)
            except Exception:  # noqa: BLE001 - a dead or stuck actor is killed below all the same
                pass
            for actor in actors:
                ray.kill(actor)
    rerun = sum(r > 0 for r in reruns)
    if stats is not None:
        stats["rerun"] = rerun
    if rerun:
        sys.stderr.write(f"re-run after worker failure: {rerun} episodes\n")
    return [replace(result, reruns=n) if n else result  # type: ignore[arg-type]
            for result, n in zip(results, reruns, strict=True)]
