"""Distributed rollouts on Ray (``run_episodes(backend="ray")``, ``cmat-gym eval --ray``): the same
per-episode results as the local run, and a killed worker's episodes re-run, never dropped.

Real Ray actors in real worker processes, real envs. One local Ray instance (2 CPUs) is shared by the
module: starting Ray costs seconds, each run then only starts its actors.
"""

from __future__ import annotations

import json

import pytest

from cmat_gym import cli
from cmat_gym.agents.policies import make_policy
from cmat_gym.evaluation import env_factory, run_episodes
from cmat_gym.scale import PolicySpec

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'cmat-gym[scale]'")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray for the whole module (run_episodes uses an initialised Ray as it is)."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def differences(local, remote) -> list[str]:
    """Which episodes differ, and in which fields (the assertion message of a failed comparison)."""
    fields = [f for f in vars(local[0]) if f != "trajectory"] if local else []
    return [f"episode {i} {f}: local {getattr(a, f)!r} ray {getattr(b, f)!r}"
            for i, (a, b) in enumerate(zip(local, remote, strict=True)) for f in fields if getattr(a, f) != getattr(b, f)]


def local_and_ray(env_id: str, policy: str, episodes: int, domain: str, **kwargs):
    spec = PolicySpec(policy, {"seed": 5, "domain": domain})
    factory = env_factory(env_id, **kwargs)
    local = run_episodes(factory, make_policy(policy, seed=5, domain=domain), episodes, seed=11, progress=False)
    remote = run_episodes(factory, spec, episodes, seed=11, progress=False, backend="ray", workers=2)
    return local, remote


@pytest.mark.parametrize("policy", ["oracle", "random"])
def test_db_results_equal_local(policy: str) -> None:
    local, remote = local_and_ray("cmat/DB-v0", policy, 12, "db")
    assert remote == local, differences(local, remote)
    assert [r.score for r in remote] == [r.score for r in local]  # equality covers every compared field
    assert all(r.reruns == 0 for r in remote)
    if policy == "random":
        # Not a trivially equal run: episodes differ from each other, so which stream each got matters.
        assert len({(r.steps, r.score, r.format_errors) for r in remote}) > 1
    else:
        assert all(r.success for r in remote)


def test_random_needs_the_episode_position() -> None:
    """Without seeking, a fresh random policy per episode would play other actions: the random agent's
    streams depend on the episode's position, and the workers reproduce it."""
    factory = env_factory("cmat/DB-v0")
    policy = make_policy("random", seed=5, domain="db")
    sequential = run_episodes(factory, policy, 6, seed=11, progress=False)
    fresh = [run_episodes(factory, make_policy("random", seed=5, domain="db"), 1, seed=11 + i, progress=False)[0]
             for i in range(6)]
    assert fresh != sequential


def test_batched_workers_equal_local() -> None:
    """batch_size per worker (continuous batching over the worker's envs): the oracle's results, which depend
    only on each episode, equal the local sequential run's; the chunks leave the workers' envs open."""
    factory = env_factory("cmat/DB-v0")
    local = run_episodes(factory, make_policy("oracle", domain="db"), 14, seed=2, progress=False)
    from cmat_gym.scale.ray_backend import run_episodes_ray

    # Chunks of 4 on 2 workers: each worker plays at least two chunks with the same 3 envs.
    remote = run_episodes_ray(factory, PolicySpec("oracle", {"domain": "db"}), 14, seed=2, progress=False,
                              workers=2, batch_size=3, chunk_size=4)
    assert remote == local, differences(local, remote)


def test_cmat_env_results_equal_local() -> None:
    local, remote = local_and_ray("cmat/DB-v0", "random", 8, "db", cmat=True)
    assert remote == local, differences(local, remote)
    assert all(r.cmat is not None for r in remote)  # the CMAT loop's metrics came back from the workers


def test_os_results_equal_local() -> None:
    local, remote = local_and_ray("cmat/OS-v0", "oracle", 4, "os")
    assert remote == local, differences(local, remote)
    assert all(r.success for r in remote)


def test_task_file_assignment_equal_local(agentbench_db_path) -> None:
    factory = env_factory("cmat/DB-v0", tasks=str(agentbench_db_path))
    indices = [7, 3, 3, 0, 12, 59]
    local = run_episodes(factory, make_policy("oracle", domain="db"), 6, seed=0, task_indices=indices,
                         progress=False)
    remote = run_episodes(factory, PolicySpec("oracle", {"domain": "db"}), 6, seed=0, task_indices=indices,
                          progress=False, backend="ray", workers=2)
    assert [r.task_id for r in remote] == [r.task_id for r in local]
    assert remote == local, differences(local, remote)


def test_killed_worker_episodes_are_rerun(capsys) -> None:
    from cmat_gym.scale.ray_backend import run_episodes_ray

    factory = env_factory("cmat/DB-v0")
    spec = PolicySpec("random", {"seed": 5, "domain": "db"})
    local = run_episodes(factory, spec, 16, seed=3, progress=False)
    killed = []

    def kill_third(actor, submitted: int) -> None:
        # The 3rd chunk was just queued on this actor (its first chunk is still running): kill it mid-run.
        if submitted == 3:
            ray.kill(actor)
            killed.append(actor)

    remote = run_episodes_ray(factory, spec, 16, seed=3, workers=2, chunk_size=2, progress=False,
                              on_submit=kill_third)
    assert killed
    assert remote == local, differences(local, remote)  # nothing dropped, nothing changed
    rerun = [r for r in remote if r.reruns > 0]
    assert len(rerun) >= 2  # at least the killed chunk
    assert f"re-run after worker failure: {len(rerun)} episodes" in capsys.readouterr().err


def test_a_fault_that_kills_every_worker_stops_the_run() -> None:
    """Replacements are bounded (``workers`` of them): a fault that kills each actor is an error, not a loop."""
    from cmat_gym.scale.ray_backend import run_episodes_ray

    def kill_always(actor, submitted: int) -> None:
        ray.kill(actor)

    with pytest.raises(RuntimeError, match="kept dying"):
        run_episodes_ray(env_factory("cmat/DB-v0"), PolicySpec("oracle", {"domain": "db"}), 4, seed=0, workers=1,
                         chunk_size=2, progress=False, on_submit=kill_always)


def test_bad_arguments_are_rejected() -> None:
    factory = env_factory("cmat/DB-v0")
    with pytest.raises(ValueError, match="PolicySpec"):
        run_episodes(factory, make_policy("oracle", domain="db"), 2, 0, backend="ray", workers=2)
    with pytest.raises(ValueError, match="factory"):
        run_episodes(factory(), PolicySpec("oracle", {"domain": "db"}), 2, 0, backend="ray", workers=2)
    with pytest.raises(ValueError, match="on_episode_end"):
        run_episodes(factory, PolicySpec("oracle", {"domain": "db"}), 2, 0, backend="ray",
                     on_episode_end=lambda result, env: None)
    with pytest.raises(ValueError, match="backend"):
        run_episodes(factory, PolicySpec("oracle", {"domain": "db"}), 2, 0, backend="dask")


def test_cli_ray_equals_local(capsys) -> None:
    argv = ["eval", "--env", "cmat/DB-v0", "--policy", "random", "--episodes", "6", "--seed", "4", "--json"]
    assert cli.main(argv) == 0
    local = json.loads(capsys.readouterr().out)
    assert cli.main(argv + ["--ray", "--workers", "2"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote.pop("ray") == {"workers": 2, "address": "local", "rerun_after_worker_failure": 0}
    assert remote == local, differences(local, remote)


def test_cli_ray_rejects_shared_memory(capsys) -> None:
    assert cli.main(["eval", "--cmat", "--memory", "on", "--ray", "--episodes", "2"]) == 2
    assert "--ray" in capsys.readouterr().err


def test_scaling_benchmark_runs(capsys, tmp_path) -> None:
    """benchmarks/scaling.py end to end with tiny sizes (figures live in docs/results/scaling.md, not here)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import scaling

    assert scaling.main(["--workers", "1", "--db-episodes", "4", "--os-episodes", "0", "--png", ""]) == 0
    out = capsys.readouterr().out
    assert "DB-v0 oracle" in out and "DB-v0 random" in out and "same" in out
    rows = [line for line in out.splitlines() if line.startswith("DB-v0")]
    assert all(line.rstrip().endswith("yes") for line in rows)  # Ray's results equal the local run's
    figures = tmp_path / "predict.json"
    assert scaling.main(["--predict", "--cpu-episodes", "3", "--json", str(figures)]) == 0
    predicted = json.loads(figures.read_text())
    assert [row["machines"] for row in predicted["rows"]] == [1, 8, 64]
    assert scaling.lora_params(8) == 8 * 10176 * 30  # SmolLM2-135M: r * (in + out) over 7 linears x 30 layers


@pytest.mark.slow  # starts a model server (torch, tiny-random) in its own process
def test_workers_share_one_model_server() -> None:
    """Ray workers as clients of one OpenAI-compatible server (``cmat-gym serve``, tiny-random): each worker
    builds its own client from the spec, the server batches their requests, and every episode comes back, in
    episode order, on the task the local run plays."""
    from serve_process import serving_tiny_random

    with serving_tiny_random() as (url, _):
        kwargs = {"base_url": url, "model": "tiny-random", "domain": "db", "max_tokens": 24, "concurrency": 2}
        factory = env_factory("cmat/DB-v0", max_rounds=2)
        local = run_episodes(factory, PolicySpec("openai", kwargs), 6, seed=0, batch_size=2, progress=False)
        remote = run_episodes(factory, PolicySpec("openai", kwargs), 6, seed=0, batch_size=2, progress=False,
                              backend="ray", workers=2)
    assert [r.task_id for r in remote] == [r.task_id for r in local]
    assert all(1 <= r.steps <= 2 for r in remote)  # every episode ran through the server and ended
