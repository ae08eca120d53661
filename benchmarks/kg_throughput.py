"""KG-v0 throughput: a tool-call step through the env against the same SPARQL on pyoxigraph directly,
and world generation + load, in the same run.

    python benchmarks/kg_throughput.py [--tasks 30] [--repeats 5] [--worlds 30] [--json out.json]

What is measured:

* **tool-call step**: ``env.step(action)`` for every operation of the oracle's action trace on
  ``--tasks`` procedural tasks per difficulty: parsing the raw text, resolving the arguments,
  checking the relation or attribute, the SPARQL queries, the observation, the Gymnasium wrapper.
  Baseline: the very queries that step ran (recorded through ``backend.log``) on the same
  pyoxigraph store directly (``store.query`` and pulling every row, no conversion). Each episode is
  replayed ``--repeats`` times (a fresh episode each time: the env's per-episode caches start
  empty); env and baseline alternate; each step gets the median of its repeats on both sides, and
  the ratio is the median over steps of (env median / baseline median). Target: <= 2x.
* **world generation + load** at difficulty 1: generating a world from a fresh key and loading it
  into a new in-memory store (no cache), median over ``--worlds`` keys, wall clock (the target's
  figure) and the process's CPU time (steadier on a shared machine). Target: <= 50 ms. The
  baseline line is pyoxigraph loading the same N-Triples text alone.
* **reset** (informative): ``env.reset`` of a new procedural task (generation of the world, the
  question, its gold answer by SPARQL), median.

The script reports and exits 0 whether or not a target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import pyoxigraph as ox

from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.kg.backend import OxigraphBackend, load_ntriples
from cmat_gym.domains.kg.env import KGEnv
from cmat_gym.domains.kg.tasks import generate_task, world_of
from cmat_gym.domains.kg.world import generate_world

STEP_RATIO_TARGET = 2.0
WORLD_TARGET_MS = 50.0


def direct(store: ox.Store, queries: Sequence[str]) -> float:
    """Seconds to run ``queries`` on ``store`` and pull every row."""
    start = time.perf_counter()
    for query in queries:
        for solution in store.query(query):
            _ = tuple(solution)
    return time.perf_counter() - start


def measure_steps(difficulty: int, n_tasks: int, repeats: int) -> dict[str, Any]:
    env = KGEnv()
    ratios, env_ms, base_ms = [], [], []
    for seed in range(n_tasks):
        task = generate_task(seed, "test", difficulty)
        actions = [a for a in KGEnv.oracle_actions(task) if not a.startswith("Final Answer")]
        env_times: list[list[float]] = [[] for _ in actions]
        base_times: list[list[float]] = [[] for _ in actions]
        for _ in range(repeats):
            env.reset(options={"task": task})
            backend = env.backend
            assert isinstance(backend, OxigraphBackend)
            for i, action in enumerate(actions):
                backend.log = []
                start = time.perf_counter()
                observation = env.step(action)[0]
                env_times[i].append(time.perf_counter() - start)
                assert "cannot be executed" not in observation, observation
                base_times[i].append(direct(backend.store, backend.log))
        for e, b in zip(env_times, base_times, strict=True):
            em, bm = statistics.median(e), statistics.median(b)
            env_ms.append(em * 1e3)
            base_ms.append(bm * 1e3)
            ratios.append(em / bm if bm > 0 else float("inf"))
    env.close()
    return {"difficulty": difficulty, "steps": len(ratios), "step_ms_median": statistics.median(env_ms),
            "sparql_ms_median": statistics.median(base_ms), "ratio_median": statistics.median(ratios),
            "ratio_p90": sorted(ratios)[int(0.9 * (len(ratios) - 1))]}


def measure_worlds(n_worlds: int) -> dict[str, Any]:
    total, cpu, load_only, triples = [], [], [], []
    for key in range(n_worlds):
        start, start_cpu = time.perf_counter(), time.process_time()
        world = generate_world(StableRandom("kg-bench", key), 1)
        backend = OxigraphBackend()
        text = world.ntriples()
        load_ntriples(text, backend)
        total.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
        start = time.perf_counter()
        ox.Store().bulk_load(text.encode(), format=ox.RdfFormat.N_TRIPLES)
        load_only.append((time.perf_counter() - start) * 1e3)
        triples.append(len(backend.store))
    return {"worlds": n_worlds, "gen_load_ms_median": statistics.median(total),
            "gen_load_cpu_ms_median": statistics.median(cpu),
            "load_only_ms_median": statistics.median(load_only), "triples_median": statistics.median(triples)}


def measure_resets(n: int) -> dict[str, Any]:
    env = KGEnv()
    times = []
    for seed in range(n):
        world_of.cache_clear()
        start = time.perf_counter()
        env.reset(options={"task_index": 10_000 + seed, "difficulty": 1 + seed % 3})
        times.append((time.perf_counter() - start) * 1e3)
    env.close()
    return {"resets": n, "reset_ms_median": statistics.median(times)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=30, help="procedural tasks per difficulty")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worlds", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"command: python benchmarks/kg_throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"Python {platform.python_version()}, pyoxigraph {ox.__version__}")

    steps = [measure_steps(d, args.tasks, args.repeats) for d in (1, 2, 3)]
    print("\ntool-call step (env.step) vs the same SPARQL on pyoxigraph directly, medians:")
    for r in steps:
        verdict = "PASS" if r["ratio_median"] <= STEP_RATIO_TARGET else "FAIL"
        print(f"  d{r['difficulty']}: {r['steps']:4d} steps  env {r['step_ms_median']:.3f} ms  "
              f"sparql {r['sparql_ms_median']:.3f} ms  ratio {r['ratio_median']:.2f}x (p90 {r['ratio_p90']:.2f}x)  "
              f"target <= {STEP_RATIO_TARGET:g}x: {verdict}")
    worlds = measure_worlds(args.worlds)
    verdict = "PASS" if worlds["gen_load_ms_median"] <= WORLD_TARGET_MS else "FAIL"
    print(f"\nworld generation + load, difficulty 1 ({worlds['triples_median']:.0f} triples): "
          f"{worlds['gen_load_ms_median']:.2f} ms median wall, {worlds['gen_load_cpu_ms_median']:.2f} ms CPU "
          f"(baseline: pyoxigraph loading the same N-Triples "
          f"alone {worlds['load_only_ms_median']:.2f} ms)  target <= {WORLD_TARGET_MS:g} ms: {verdict}")
    resets = measure_resets(max(6, args.tasks // 2))
    print(f"reset (new task: world, question, gold by SPARQL; informative): {resets['reset_ms_median']:.2f} ms median")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"steps": steps, "worlds": worlds, "resets": resets, "load_average": load}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
