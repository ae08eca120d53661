"""Scaling curve of distributed rollouts: episodes/s on 1, 2, 4 Ray workers against the local run, same run.

    python benchmarks/scaling.py [--workers 1 2 4] [--db-episodes 300] [--os-episodes 40] [--repeats 1]
                                 [--png docs/scaling.png] [--json out.json]

Env-bound work (the policy costs next to nothing): the oracle and the random agent on ``cmat/DB-v0``,
and the oracle on ``cmat/OS-v0`` (bubblewrap shell; skipped where the sandbox is unavailable). For
each workload, the same episodes (seed 0, episode ``i`` reset with seed ``i``) are played by:

* **local**: :func:`~cmat_gym.evaluation.run_episodes` in this process, one episode at a time (the
  baseline);
* **local batched**: the same with ``batch_size=4`` (continuous batching: 4 envs, one policy call per
  tick; this is how run_episodes vectorises, and for env-bound work it still runs on one core);
* **ray N**: ``run_episodes(..., backend="ray", workers=N)``. Two figures: *steady* = episodes / time
  from the first submission to the last result; *end to end* = episodes / (that + starting the actors,
  building their envs and policies). Ray itself is started once (its start time is printed).

Every Ray run's results are compared with the local run's ("same" column): the speed-up is for the same
work. Each figure is the best of ``--repeats`` runs. The PNG (matplotlib, from the ``[train]`` extra)
shows the curve; without matplotlib the script warns and skips it.

``--predict`` prints instead the throughput model of ``docs/scaling.md`` for 1, 8 and 64 GPU machines:
GPU tokens/s and prefill from ``docs/results/rollout_h200.json`` (measured on an H200), the LoRA adapter
size from SmolLM2-135M's config, the CPU cost of an episode of the CMAT loop measured here in the same
run, and the assumptions as flags (each printed with its value).

On a machine with C cores, N workers cannot beat min(N, C) x one worker; the driver also needs a
share of a core. Timings on a machine shared with other jobs are noisy: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.agents.policies import make_policy
from cmat_gym.domains.os.backend import is_available as os_sandbox_available
from cmat_gym.evaluation import env_factory, run_episodes
from cmat_gym.scale import PolicySpec
from cmat_gym.scale.ray_backend import require_ray, run_episodes_ray

LOCAL_BATCH = 4


def workloads(db_episodes: int, os_episodes: int) -> list[dict[str, Any]]:
    """The env-bound workloads: (label, env id, policy, domain, episodes)."""
    rows = [{"label": "DB-v0 oracle", "env": "cmat/DB-v0", "policy": "oracle", "domain": "db", "episodes": db_episodes},
            {"label": "DB-v0 random", "env": "cmat/DB-v0", "policy": "random", "domain": "db", "episodes": db_episodes}]
    if os_sandbox_available() and os_episodes > 0:
        rows.append({"label": "OS-v0 oracle", "env": "cmat/OS-v0", "policy": "oracle", "domain": "os",
                     "episodes": os_episodes})
    else:
        print("note: OS-v0 skipped (bubblewrap sandbox unavailable or --os-episodes 0)")
    return rows


def measure(work: dict[str, Any], workers: Sequence[int], repeats: int) -> dict[str, Any]:
    """Episodes/s of one workload: local, local batched, and Ray with each worker count (best of ``repeats``)."""
    factory = env_factory(work["env"])
    spec = PolicySpec(work["policy"], {"seed": 0, "domain": work["domain"]})
    n = work["episodes"]

    def local(batch_size: int) -> tuple[float, list[Any]]:
        best, results = 0.0, []
        for _ in range(repeats):
            policy = make_policy(work["policy"], seed=0, domain=work["domain"])
            started = time.perf_counter()
            results = run_episodes(factory, policy, n, seed=0, batch_size=batch_size, progress=False)
            best = max(best, n / (time.perf_counter() - started))
        return best, results

    row: dict[str, Any] = {**work, "ray": {}}
    row["local"], reference = local(1)
    row["local_batched"], _ = local(LOCAL_BATCH)
    for w in workers:
        steady = end_to_end = 0.0
        same = True
        for _ in range(repeats):
            stats: dict[str, float] = {}
            results = run_episodes_ray(factory, spec, n, seed=0, workers=w, progress=False, stats=stats)
            same &= results == reference
            steady = max(steady, n / stats["play_s"])
            end_to_end = max(end_to_end, n / (stats["play_s"] + stats["startup_s"]))
        row["ray"][w] = {"steady": steady, "end_to_end": end_to_end, "same_results": same}
    return row


def format_table(rows: Sequence[dict[str, Any]], workers: Sequence[int]) -> str:
    """The table: episodes/s per workload and runner, and the best Ray speed-up over local."""
    head = f"{'workload':<14} {'eps':>5} {'local':>8} {f'local b={LOCAL_BATCH}':>10}"
    for w in workers:
        head += f" {f'ray {w} steady (e2e)':>22}"
    head += f" {'best/local':>10} {'same':>5}"
    lines = [head, "-" * len(head)]
    for row in rows:
        line = f"{row['label']:<14} {row['episodes']:>5} {row['local']:>8.1f} {row['local_batched']:>10.1f}"
        for w in workers:
            cell = f"{row['ray'][w]['steady']:.1f} ({row['ray'][w]['end_to_end']:.1f})"
            line += f" {cell:>22}"
        best = max(row["ray"][w]["steady"] for w in workers)
        same = all(row["ray"][w]["same_results"] for w in workers)
        line += f" {best / row['local']:>9.2f}x {'yes' if same else 'NO':>5}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], workers: Sequence[int], path: str, cores: int) -> str | None:
    """Save the scaling curve to ``path``; None (and a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        print("warning: matplotlib is not installed (pip install 'cmat-gym[train]'): no PNG written")
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        ax.plot(workers, [row["ray"][w]["steady"] for w in workers], "o-", label="Ray, steady")
        ax.plot(workers, [row["ray"][w]["end_to_end"] for w in workers], "s--", label="Ray, incl. actor start")
        ax.axhline(row["local"], color="gray", linestyle=":", label="local (in-process)")
        ax.axhline(row["local_batched"], color="black", linestyle="-.", linewidth=0.8,
                   label=f"local, batch_size={LOCAL_BATCH}")
        ax.set_title(f"{row['label']} ({row['episodes']} episodes)", fontsize=10)
        ax.set_xlabel("Ray workers")
        ax.set_ylabel("episodes/s")
        ax.set_xticks(list(workers))
        top = max([row["local"], row["local_batched"]] + [row["ray"][w]["steady"] for w in workers])
        ax.set_ylim(0, 1.1 * top)  # room above the highest line
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Distributed rollouts on {cores} CPU cores (machine shared with other jobs: load average "
                 f"{os.getloadavg()[0]:.0f} at the end)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- the throughput model
# SmolLM2-135M-Instruct (its config.json): the LoRA adapter's size follows from these.
SMOLLM2_SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                 "num_key_value_heads": 3, "head_dim": 64}
SMOLLM2_PARAMS = 134.5e6  # 538,090,408 bytes of fp32 safetensors / 4


def lora_params(rank: int, shape: dict[str, int] = SMOLLM2_SHAPE) -> int:
    """Parameters of a LoRA adapter of ``rank`` on every linear of each layer (q, k, v, o, gate, up, down), as
    ``algorithms`` and ``ChatAgent`` configure it: ``rank * (in + out)`` per linear."""
    d, f, kv = shape["hidden_size"], shape["intermediate_size"], shape["num_key_value_heads"] * shape["head_dim"]
    per_layer = (d + d) + (d + kv) + (d + kv) + (d + d) + 3 * (d + f)
    return rank * per_layer * shape["num_hidden_layers"]


def measured_gpu_rates(path: str) -> tuple[float, float]:
    """(decode tokens/s, prefill tokens/s) of the CUDA-graph engine on the H200 from ``rollout_h200.json``."""
    with open(path) as handle:
        data = json.load(handle)
    config = data["config"]
    row = next(r for r in data["results"] if r["impl"] == "engine:graph")
    return row["tok_s"], config["batch"] * config["prompt_len"] / row["prefill_s"]


def cpu_ms_per_episode(episodes: int) -> float:
    """CPU milliseconds per episode of cmat/DB-CMAT-v0 (rule checker) under the oracle, in this process: what an
    env worker spends per episode besides waiting for the model."""
    factory = env_factory("cmat/DB-v0", cmat=True)
    policy = make_policy("oracle", domain="db")
    run_episodes(factory, policy, 5, seed=0, progress=False)  # warm-up (imports, first task generation)
    started = time.process_time()
    run_episodes(factory, policy, episodes, seed=0, progress=False)
    return 1000 * (time.process_time() - started) / episodes


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """The throughput model's figures (see docs/scaling.md), printed with every input."""
    decode, prefill = measured_gpu_rates(args.rollout_json)
    cpu_ms = cpu_ms_per_episode(args.cpu_episodes)
    adapter_mb = lora_params(args.lora_rank) * 4 / 1e6  # fp32 adapter weights (and fp32 gradients)
    link = args.gbit * 1e9 / 8  # bytes/s
    gpu_ms = 1000 * (args.gen_tokens / decode + args.prompt_tokens / prefill)
    client_ms = cpu_ms + args.turns * args.request_ms  # env + CMAT rule checker + one request per turn
    train_tokens = args.prompt_tokens + args.gen_tokens + args.context_tokens
    update_ms = 1000 * args.forwards * 2 * SMOLLM2_PARAMS * train_tokens / (args.tflops * 1e12)
    cores = args.cores - 1  # one core for the server process and the driver
    rollout_ms = max(gpu_ms, client_ms / cores)  # per episode, per machine: GPU- or CPU-bound
    print(f"inputs: decode {decode:,.0f} tok/s and prefill {prefill:,.0f} tok/s per GPU (engine:graph, H200, "
          f"{args.rollout_json}); CPU per episode {cpu_ms:.2f} ms (DB-CMAT-v0, rule checker, oracle, measured "
          f"now on this machine) + {args.turns} requests x {args.request_ms} ms (assumed)")
    print(f"  generated tokens/episode {args.gen_tokens} (measured on CPU, docs/results.md); new prompt tokens/episode "
          f"{args.prompt_tokens} and context re-read in training {args.context_tokens} (assumed); LoRA r={args.lora_rank}: "
          f"{lora_params(args.lora_rank):,} params = {adapter_mb:.1f} MB fp32; link {args.gbit:g} Gbit/s (assumed); "
          f"update {args.forwards} forward-equivalents at {args.tflops:g} TFLOP/s effective (assumed)")
    print(f"per episode: GPU rollout {gpu_ms:.1f} ms, env worker CPU {client_ms:.1f} ms ({cores} cores: "
          f"{client_ms / cores:.2f} ms), update {update_ms:.1f} ms")
    rows = []
    for machines in args.machines:
        episodes = args.episodes_per_machine * machines
        # Colocated data-parallel (recommended): every GPU rolls out its share, then all update together,
        # all-reducing the LoRA gradients (ring: 2 (M-1)/M of the adapter per optimizer step).
        allreduce_s = args.optimizer_steps * 2 * (machines - 1) / machines * adapter_mb * 1e6 / link
        iteration = (args.episodes_per_machine * (rollout_ms + update_ms) / 1000 + allreduce_s
                     + args.reload_s + args.tail_s)
        colocated = episodes / iteration
        # One learner GPU; the others only roll out and receive the adapter after each update (tree broadcast).
        rollout_machines = max(1, machines - 1)
        broadcast_s = math.ceil(math.log2(machines)) * adapter_mb * 1e6 / link if machines > 1 else 0.0
        single = episodes / (episodes * rollout_ms / 1000 / rollout_machines + episodes * update_ms / 1000
                             + broadcast_s + args.reload_s + args.tail_s)
        rows.append({"machines": machines, "episodes_per_iteration": episodes, "colocated_eps": colocated,
                     "iteration_s": iteration, "allreduce_s": allreduce_s, "single_learner_eps": single,
                     "broadcast_s": broadcast_s})
    print(f"{'machines':>8} {'episodes/iter':>13} {'iteration s':>11} {'grad sync s':>11} "
          f"{'episodes/s (data-parallel)':>26} {'episodes/s (1 learner)':>22}")
    for r in rows:
        print(f"{r['machines']:>8} {r['episodes_per_iteration']:>13} {r['iteration_s']:>11.2f} {r['allreduce_s']:>11.3f} "
              f"{r['colocated_eps']:>26.1f} {r['single_learner_eps']:>22.1f}")
    return {"decode_tok_s": decode, "prefill_tok_s": prefill, "cpu_ms": cpu_ms, "adapter_mb": adapter_mb,
            "gpu_ms": gpu_ms, "client_ms": client_ms, "update_ms": update_ms, "rows": rows, "inputs": vars(args)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="Ray worker counts (default 1 2 4)")
    parser.add_argument("--db-episodes", type=int, default=300, help="episodes per DB-v0 run (default 300)")
    parser.add_argument("--os-episodes", type=int, default=40, help="episodes per OS-v0 run (default 40; 0 skips)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure, best kept (default 1)")
    parser.add_argument("--png", default="docs/scaling.png", help="where to save the plot ('' for none)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    model = parser.add_argument_group("--predict: the throughput model for many GPU machines (docs/scaling.md)")
    model.add_argument("--predict", action="store_true", help="print the model's predictions instead of measuring Ray")
    model.add_argument("--machines", type=int, nargs="+", default=[1, 8, 64])
    model.add_argument("--rollout-json", default="docs/results/rollout_h200.json")
    model.add_argument("--cores", type=int, default=16, help="CPU cores per machine (default 16, the lent H200 box)")
    model.add_argument("--cpu-episodes", type=int, default=200, help="episodes timed for the CPU cost (default 200)")
    model.add_argument("--gen-tokens", type=float, default=460,
                       help="generated tokens per episode (default 460: SmolLM2 on DB-v0 test, docs/results.md)")
    model.add_argument("--prompt-tokens", type=float, default=1500,
                       help="new prompt tokens prefilled per episode, with KV reuse across turns (assumed 1500)")
    model.add_argument("--context-tokens", type=float, default=0,
                       help="extra tokens the update re-reads per episode (assumed 0: the dialogue is one sequence)")
    model.add_argument("--turns", type=int, default=5, help="model requests per episode (default 5)")
    model.add_argument("--request-ms", type=float, default=2.0, help="CPU ms per request on the client (assumed 2)")
    model.add_argument("--forwards", type=float, default=5,
                       help="forward-equivalents per trained token: old and reference log-probs 1+1, "
                            "forward+backward 3 (default 5)")
    model.add_argument("--tflops", type=float, default=100, help="effective TFLOP/s of the update (assumed 100)")
    model.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (default 8, the project's default)")
    model.add_argument("--gbit", type=float, default=10, help="network between machines, Gbit/s (assumed 10)")
    model.add_argument("--episodes-per-machine", type=int, default=256, help="episodes per iteration per GPU "
                                                                             "(default 256: one full decode batch)")
    model.add_argument("--optimizer-steps", type=int, default=4, help="optimizer steps per iteration (default 4)")
    model.add_argument("--reload-s", type=float, default=0.05, help="loading a new adapter into the engine (assumed)")
    model.add_argument("--tail-s", type=float, default=1.0,
                       help="the batch draining at the end of a rollout: the last episodes run at a small "
                            "batch (assumed 1 s)")
    args = parser.parse_args(argv)
    if args.predict:
        figures = predict(args)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(figures, handle, indent=1)
        return 0
    ray = require_ray()
    cores = os.cpu_count() or 1
    print(f"{cores} CPU cores, load average {os.getloadavg()[0]:.1f} at start (other jobs share this machine: "
          "figures are noisy)")
    started_here = not ray.is_initialized()
    if started_here:
        t0 = time.perf_counter()
        # As many CPUs as the most workers asked, so that 4 workers get 4 actors on a 2-core machine.
        ray.init(address="local", num_cpus=max(max(args.workers), cores), include_dashboard=False,
                 log_to_driver=False)
        print(f"Ray started in {time.perf_counter() - t0:.1f} s (once; not in any figure)")
    try:
        rows = [measure(work, args.workers, args.repeats) for work in workloads(args.db_episodes, args.os_episodes)]
    finally:
        if started_here:
            ray.shutdown()
    print("episodes/s (ray: steady, and end to end incl. starting actors, envs and policies in parentheses)")
    print(format_table(rows, args.workers), end="")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.png:
        path = plot(rows, args.workers, args.png, cores)
        if path:
            print(f"plot: {path}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cores": cores, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
