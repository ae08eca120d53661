"""The training demonstration in one command: does PPO inside the CMAT loop make SmolLM2 better than SFT?

    python benchmarks/train_demo.py --preset gpu --output-dir runs/demo-gpu     # a lent H200: one 10-min call
    python benchmarks/train_demo.py --preset cpu --output-dir runs/demo-cpu     # 2 CPU cores, ~30-60 min
    python benchmarks/train_demo.py --preset cpu-tiny                            # tiny-random: the pipeline, ~20 s idle

Agents (all the same base model, scored by the same evaluation):

* **zero-shot**: the base model as it is;
* **SFT**: ``algorithms.sft_train`` (oracle trajectories through the CMAT loop, LoRA); trained once
  (seed = the first training seed) and shared by every seed's RL runs, so "SFT+PPO minus SFT" isolates RL;
* **SFT+PPO**, one run per training seed and per checker-reward ablation, all from the SFT adapter:
  ``none`` (rule checker in the loop, ``--checker-weight 0``: no checker reward), ``rule`` (rule checker's
  score as shaping reward) and ``learned`` (a LoRA checker trained first by ``algorithms.checker_train``,
  its score as shaping reward);
* **SFT+GRPO** (presets ``smoke`` and ``cpu-long`` only): ``algorithms.grpo_train``, rule-checker reward.

Evaluation (``benchmarks/agentbench_table.py --ablations rule memory``): greedy, the same held-out
test-split tasks for every agent (episode i = seed i), in three settings: the **bare** DB-v0 env, the
**CMAT** loop (rule checker + reflection memory, a fresh in-memory store per run) and **CMAT, no
memory** (the reflection-memory ablation). Every agent's per-task outcomes are kept, so every
comparison is paired: for SFT+PPO minus SFT (per seed, and pooled over seeds) the table gives the
discordant pairs, the exact McNemar p-value (two-sided binomial on the discordant pairs) and a paired
bootstrap 95% interval of the success-rate difference. The PPO runs' diagnostics (``approx_kl``, clip
fraction, KL to the reference, explained variance per iteration, from ``metrics.jsonl``) are tabled,
and a run whose policy never moved (no policy update, or ``approx_kl`` ~ 0 and clip fraction 0
throughout) is said to be so.

Every stage is a separate process (``--in-process``: this process; the ``cpu-tiny`` default) with its
log in ``DIR/logs/STAGE.log`` and its command in ``DIR/commands.sh``; ``--jobs N`` runs up to N ready
stages at once (a 135M model leaves a GPU mostly idle). A stage whose output exists is skipped, and an
interrupted PPO run resumes from its checkpoint, so rerunning the same command continues a run.
``--stages`` runs a subset. The tables go to stdout, ``DIR/summary.md`` and ``DIR/summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmat_gym.evaluation import mcnemar_exact

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TABLE_SCRIPT = REPO / "benchmarks" / "agentbench_table.py"

# Flags per preset; flags not named take the scripts' defaults (docs/training.md). "seeds" are the RL training
# seeds; "ppo_variants" the checker-reward ablations run per seed; "jobs" the stages run at once by default.
#
# gpu (one 600-s call on an H200, an ESTIMATE: no GPU run of this pipeline has been made). Figures behind it:
# engine decode 59k tokens/s at batch 256 (docs/results.md, rollout engine); assumed ~40 s per process for
# imports, model load and CUDA-graph capture. SFT 256 episodes x 2 epochs ~ 60 s; checker 120 episodes ~ 60 s
# (both beside the zero-shot evaluation); 9 PPO runs of 8 x 32 episodes, 5 at once, ~20 s per iteration
# under sharing -> 2 waves x ~200 s; 11 evaluations x 3 settings x 200 episodes (<= 5 turns, batch 200)
# ~30 s of decoding each after start-up, 5 at once -> ~100 s. Sum ~8 min. Trimmed against the issue-5 GPU
# preset to fit: one SFT shared by the seeds (400 -> 256 episodes), RL 30 x 64 -> 8 x 32 episodes per run,
# no GRPO, no dbbench dev tasks; --time-limit stops it in time and still writes the tables.
PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {
        "model": "smollm2-135m-instruct", "seeds": [1, 2, 3], "ppo_variants": ["none", "rule", "learned"], "with_grpo": False,
        "jobs": 5, "in_process": False,
        "common": ["--device", "cuda"],
        "sft": ["--episodes", "256", "--epochs", "2", "--batch-size", "8", "--lr", "2e-4"],
        "checker": ["--episodes", "120", "--epochs", "2", "--batch-size", "8", "--micro-batch-size", "8"],
        "rl": ["--iterations", "8", "--episodes-per-iteration", "32", "--rollout-batch", "32", "--max-turns", "5",
               "--max-new-tokens", "128", "--learning-rate", "1e-4"],
        "ppo": ["--ppo-epochs", "2", "--minibatch-size", "8", "--checkpoint-every", "2"],
        "grpo": ["--num-generations", "8"],
        "eval": ["--episodes", "200", "--agentbench-tasks", "0", "--max-rounds", "5", "--max-new-tokens", "128",
                 "--batch-size", "200"],
    },
    # SmolLM2 on 2 CPU cores in ~30-60 min (estimate from the 2026-11-27 CPU demo in docs/results.md: a PPO
    # iteration of 8 episodes ~3 min, SFT 64 x 2 epochs 26 min, a trained agent ~9 s per evaluation episode,
    # zero-shot ~50 s). One seed: too small to show a gain; it shows the pipeline on the real model. Measured
    # 2026-11-30 (docs/results/train_demo.md): its 16-example SFT solves 0/8, so PPO's 4 episodes earn no reward
    # and the runs make no policy update (flagged in the table); a CPU run that can move the policy needs the
    # cpu-long SFT (64 x 2 epochs: 8/32 solved) and hours.
    "cpu": {
        "model": "smollm2-135m-instruct", "seeds": [1], "ppo_variants": ["none", "rule", "learned"], "with_grpo": False,
        "jobs": 1, "in_process": False,
        "common": ["--device", "cpu"],
        "sft": ["--episodes", "16", "--epochs", "1", "--batch-size", "1", "--grad-accum", "4", "--lr", "5e-4",
                "--max-seq-len", "1024"],
        "checker": ["--episodes", "24", "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "2",
                    "--lora-layers", "4", "--max-len", "512"],
        "rl": ["--iterations", "1", "--episodes-per-iteration", "4", "--rollout-batch", "4", "--max-turns", "4",
               "--max-new-tokens", "96", "--learning-rate", "1e-4", "--micro-batch-size", "1",
               "--max-seq-len", "1024"],
        "ppo": ["--ppo-epochs", "2", "--minibatch-size", "2"],
        "grpo": ["--num-generations", "2"],
        "eval": ["--episodes", "8", "--agentbench-tasks", "0", "--max-rounds", "4", "--max-new-tokens", "96",
                 "--batch-size", "8"],
    },
    # the whole pipeline with the tiny random model, in this process: the default test runs it
    "cpu-tiny": {
        "model": "tiny-random", "seeds": [1, 2], "ppo_variants": ["none", "rule", "learned"], "with_grpo": False,
        "jobs": 1, "in_process": True,
        "common": ["--device", "cpu", "--no-progress"],
        "sft": ["--episodes", "2", "--epochs", "1", "--batch-size", "2", "--max-seq-len", "512"],
        "checker": ["--episodes", "2", "--epochs", "1", "--batch-size", "4", "--micro-batch-size", "4",
                    "--max-turns", "2", "--max-len", "256"],
        "rl": ["--iterations", "1", "--episodes-per-iteration", "2", "--rollout-batch", "2", "--max-turns", "2",
               "--max-new-tokens", "4", "--micro-batch-size", "2", "--max-seq-len", "512"],
        "ppo": ["--ppo-epochs", "2", "--minibatch-size", "2"],
        "grpo": ["--num-generations", "2"],
        "eval": ["--episodes", "4", "--agentbench-tasks", "0", "--max-rounds", "2", "--max-new-tokens", "4",
                 "--batch-size", "4"],
    },
    # the 2026-11-27 CPU demo's sizes (docs/results.md; one seed, PPO with and without checker reward, GRPO)
    "cpu-long": {
        "model": "smollm2-135m-instruct", "seeds": [1], "ppo_variants": ["rule", "none"], "with_grpo": True,
        "jobs": 1, "in_process": False,
        "common": ["--device", "cpu"],
        "sft": ["--episodes", "64", "--epochs", "2", "--batch-size", "4", "--lr", "5e-4", "--max-seq-len", "1024"],
        "checker": [],
        "rl": ["--iterations", "8", "--episodes-per-iteration", "8", "--rollout-batch", "8", "--max-turns", "5",
               "--max-new-tokens", "128", "--learning-rate", "1e-4", "--micro-batch-size", "4",
               "--max-seq-len", "1024"],
        "ppo": ["--ppo-epochs", "1", "--minibatch-size", "8", "--checkpoint-every", "1"],
        "grpo": ["--num-generations", "4"],
        "eval": ["--episodes", "32", "--agentbench-tasks", "12", "--max-rounds", "5", "--max-new-tokens", "128",
                 "--batch-size", "16"],
    },
    # the former smoke preset: every stage with the tiny random model, GRPO included, separate processes
    "smoke": {
        "model": "tiny-random", "seeds": [1], "ppo_variants": ["rule", "none"], "with_grpo": True, "jobs": 1, "in_process": False,
        "common": ["--device", "cpu"],
        "sft": ["--episodes", "4", "--epochs", "1", "--batch-size", "2", "--max-seq-len", "1024"],
        "checker": [],
        "rl": ["--iterations", "1", "--episodes-per-iteration", "4", "--rollout-batch", "4", "--max-turns", "2",
               "--max-new-tokens", "8", "--micro-batch-size", "2"],
        "ppo": ["--ppo-epochs", "1", "--minibatch-size", "4"],
        "grpo": ["--num-generations", "2"],
        "eval": ["--episodes", "2", "--agentbench-tasks", "3", "--max-rounds", "2", "--max-new-tokens", "8",
                 "--batch-size", "4"],
    },
}

DONE_MARK = "demo_stage_done.json"  # written into a training stage's folder once its process exits 0
EVAL_POLICY = {"smollm2-135m-instruct": "smollm2"}  # model name -> its name as an evaluation policy
TEST_SOURCE = "DB-v0 test"
# evaluation settings: agentbench_table's row variant -> (key, label)
SETTINGS = {"": ("bare", "bare DB-v0"),
            "+ CMAT, rule checker, memory on": ("cmat", "CMAT (rule checker + memory)"),
            "+ CMAT, rule checker": ("cmat-no-memory", "CMAT, no memory")}
KIND_LABELS = {"zero-shot": "zero-shot", "sft": "SFT", "ppo-none": "SFT+PPO, no checker reward",
               "ppo-rule": "SFT+PPO, rule-checker reward", "ppo-learned": "SFT+PPO, learned-checker reward",
               "grpo": "SFT+GRPO, rule-checker reward"}
DIAGNOSTICS = ("approx_kl", "clipfrac", "kl_to_ref", "explained_variance")
STILL = 1e-6  # |approx_kl| below this on every iteration, with no clipped token: the update did not move the policy
BOOTSTRAP_REPS = 10_000


# ------------------------------------------------------------------------------ the stages
def rl_runs(preset: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(run name, kind, seed) of every RL run of a preset, e.g. ``("ppo-rule-s2", "ppo-rule", 2)``."""
    kinds = [f"ppo-{v}" for v in preset["ppo_variants"]] + (["grpo"] if preset["with_grpo"] else [])
    return [(f"{kind}-s{seed}", kind, seed) for seed in preset["seeds"] for kind in kinds]


def stage_graph(preset: dict[str, Any]) -> dict[str, list[str]]:
    """Every stage of a preset, in run order, with the stages whose output it needs."""
    needs: dict[str, list[str]] = {"sft": []}
    if "learned" in preset["ppo_variants"]:
        needs["checker"] = []
    needs["eval-sft"] = ["sft"]
    for run, kind, _ in rl_runs(preset):  # each evaluation right after its run: a time-boxed run gets pairs
        needs[run] = ["sft", "checker"] if kind == "ppo-learned" else ["sft"]
        needs[f"eval-{run}"] = [run]
    # last: the paired comparisons do not need it, and it is the slowest evaluation (all turns, long prompts),
    # so a time-boxed run (--time-limit) spends its time on the comparison first
    needs["eval-zero-shot"] = []
    return needs


def stage_command(stage: str, out: Path, preset: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The command line of one stage (``[python, -m, module, flags...]`` or ``[python, script, flags...]``)."""
    common = ["--model", args.model, *preset["common"]]
    first_seed = str(preset["seeds"][0])
    sft_adapter = str(out / "sft" / "adapter")
    if stage == "sft":
        return [PY, "-m", "algorithms.sft_train", "--env", "cmat/DB-v0", *common, "--seed", first_seed,
                *preset["sft"], "--output-dir", str(out / "sft")]
    if stage == "checker":
        return [PY, "-m", "algorithms.checker_train", "--env", "cmat/DB-v0", *common, "--seed", first_seed,
                *preset["checker"], "--output-dir", str(out / "checker")]
    runs = {run: (kind, seed) for run, kind, seed in rl_runs(preset)}
    if stage in runs:
        kind, seed = runs[stage]
        rl = ["--env", "cmat/DB-v0", *common, "--seed", str(seed), *preset["rl"], "--init-adapter", sft_adapter,
              "--output-dir", str(out / stage)]
        if kind == "grpo":
            return [PY, "-m", "algorithms.grpo_train", *rl, *preset["grpo"], "--checker", "rule",
                    "--checker-weight", str(args.checker_weight)]
        variant = kind.removeprefix("ppo-")
        checker = {"none": ["--checker", "rule", "--checker-weight", "0"],
                    "rule": ["--checker", "rule", "--checker-weight", str(args.checker_weight)],
                    "learned": ["--checker", "learned", "--checker-adapter", str(out / "checker"),
                                "--checker-weight", str(args.checker_weight)]}[variant]
        resume = ["--resume"] if (out / stage / "checkpoint" / "latest").exists() else []
        return [PY, "-m", "algorithms.ppo_train", *rl, *preset["ppo"], *checker, *resume]
    if stage.startswith("eval-"):
        agent = stage.removeprefix("eval-")
        adapter = [] if agent == "zero-shot" else ["--adapter", str(out / agent / "adapter")]
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        device = preset["common"][preset["common"].index("--device"):][:2]
        return [PY, str(TABLE_SCRIPT), "--policy", EVAL_POLICY.get(args.model, args.model), "--envs", "DB",
                "--seed", "0", "--ablations", "rule", "memory", *preset["eval"], *adapter, *device, *threads,
                "--quiet", "--json", str(out / "eval" / f"{agent}.json")]
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(stage_graph(preset))}")


def stage_done(stage: str, out: Path) -> bool:
    """Whether a stage's final output is already there."""
    if stage.startswith("eval-"):
        return (out / "eval" / f"{stage.removeprefix('eval-')}.json").is_file()
    # not the adapter: PPO saves one at every checkpoint, so it exists before the run is over
    return (out / stage / DONE_MARK).is_file()


def _stage_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if args.threads is not None:  # the training scripts read torch's thread count from the environment
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def run_in_process(cmd: list[str], log: Path) -> int:
    """Run a stage's command in this process (its module's ``check_args`` then ``main``), output to ``log``;
    returns the exit status a separate process would have had. Saves the ~5-10 s import of every process."""
    if cmd[1] == "-m":
        module = importlib.import_module(cmd[2])
        argv = cmd[3:]
    else:
        name = f"_demo_{Path(cmd[1]).stem}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, cmd[1])
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module  # dataclasses look their module up here
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        argv = cmd[2:]
    with log.open("a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            if hasattr(module, "check_args"):
                module.check_args(argv)
            module.main(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001  (a failed stage is reported like a failed process, with its traceback)
            import traceback

            traceback.print_exc()
            return 1
    return 0


def run_stages(stages: Sequence[str], out: Path, preset: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Run the chosen stages whose needs are met, up to ``args.jobs`` at once; returns their wall times.

    Raises SystemExit naming the log when a stage fails (the stages already running finish first). Past
    ``args.time_limit`` seconds no stage starts and the running ones are stopped (a rerun continues them)."""
    graph = stage_graph(preset)
    deadline = None if args.time_limit is None else time.perf_counter() + args.time_limit
    pending = [s for s in graph if s in stages]
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    walls: dict[str, float] = {}
    failed: list[str] = []

    def start(stage: str) -> None:
        cmd = stage_command(stage, out, preset, args)
        log = out / "logs" / f"{stage}.log"
        with (out / "commands.sh").open("a") as f:
            f.write(shlex.join(cmd) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] {stage}: {shlex.join(cmd)}\n    log: {log}", flush=True)
        started = time.perf_counter()
        if args.in_process:
            finish(stage, run_in_process(cmd, log), started, cmd)
            return
        handle = log.open("a")  # append: a resumed run keeps the log of its first part
        proc = subprocess.Popen(cmd, cwd=REPO, env=_stage_env(args), stdout=handle, stderr=subprocess.STDOUT)
        running[stage] = (proc, started, handle)

    def finish(stage: str, code: int, started: float, cmd: list[str]) -> None:
        wall = time.perf_counter() - started
        if code != 0:
            print(f"[{time.strftime('%H:%M:%S')}] {stage}: FAILED (exit {code}) after {wall:.0f} s; see "
                  f"{out / 'logs' / f'{stage}.log'}", flush=True)
            failed.append(stage)
            return
        if not stage.startswith("eval-"):
            (out / stage / DONE_MARK).write_text(json.dumps({"command": cmd, "wall_s": wall}))
        walls[stage] = wall
        print(f"[{time.strftime('%H:%M:%S')}] {stage}: done in {wall:.0f} s", flush=True)

    while pending or running:
        if deadline is not None and time.perf_counter() > deadline:
            for proc, _, handle in running.values():
                proc.terminate()
                proc.wait()
                handle.close()
            print(f"--time-limit {args.time_limit:.0f} s reached: stopped {', '.join(running) or 'nothing'}; "
                  f"not started: {', '.join(pending) or 'nothing'} (rerun the command to continue)", flush=True)
            break
        for stage in list(pending):
            if failed or len(running) >= max(1, args.jobs):
                break
            if stage_done(stage, out):
                print(f"{stage}: already done (output present), skipped", flush=True)
                pending.remove(stage)
            elif all(stage_done(n, out) for n in graph[stage]):
                pending.remove(stage)
                start(stage)
            elif not any(n in pending or n in running for n in graph[stage]):  # a need that will not come
                print(f"{stage}: skipped, needs {', '.join(n for n in graph[stage] if not stage_done(n, out))} "
                      "first", flush=True)
                pending.remove(stage)
        if failed and not running:
            break
        for stage, (proc, started, handle) in list(running.items()):
            code = proc.poll()
            if code is not None:
                handle.close()
                del running[stage]
                finish(stage, code, started, proc.args)  # type: ignore[arg-type]
        if running:
            time.sleep(0.5)
    if failed:
        raise SystemExit(f"stage(s) failed: {', '.join(failed)}; see {out / 'logs'} (rerun to continue)")
    return walls


# ------------------------------------------------------------------------------ paired statistics
def paired_bootstrap(diffs: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean paired difference, resampling tasks with replacement.

    ``diffs`` is ``[tasks]`` or ``[seeds, tasks]`` (per-task outcome differences, e.g. PPO minus SFT in
    {-1, 0, 1}); with seeds, a resample draws tasks and keeps every seed's outcome on each drawn task (the
    seeds share the tasks, so the task is the unit of resampling)."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    per_task = d.mean(axis=0)
    if per_task.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = per_task[rng.integers(0, per_task.size, size=(reps, per_task.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_comparison(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """``a`` minus ``b`` on the same tasks (``[tasks]`` or ``[seeds, tasks]`` 0/1 outcomes): successes, the
    McNemar test over every (seed, task) pair, the mean difference and its task-resampled bootstrap interval."""
    a2, b2 = np.atleast_2d(a).astype(bool), np.atleast_2d(b).astype(bool)
    test = mcnemar_exact(a2.ravel().tolist(), b2.ravel().tolist())
    low, high = paired_bootstrap(a2.astype(int) - b2.astype(int))
    return {"pairs": int(a2.size), "a_successes": int(a2.sum()), "b_successes": int(b2.sum()), **test,
            "diff": float(a2.mean() - b2.mean()), "ci95": [low, high]}


# ------------------------------------------------------------------------------ the summary
def read_eval(path: Path) -> dict[str, dict[str, Any]]:
    """One agent's evaluation JSON: setting key -> {"source name": cell, ...} (cells as agentbench_table's)."""
    rows = json.loads(path.read_text())["rows"]
    return {SETTINGS[r["variant"]][0]: r["sources"] for r in rows if r["variant"] in SETTINGS}


def outcomes(cell: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Task ids and 0/1 successes of one evaluation cell, in episode order."""
    results = cell["results"]
    return [r["task_id"] for r in results], np.array([bool(r["success"]) for r in results])


def diagnostics(metrics_path: Path) -> dict[str, Any] | None:
    """Per-iteration PPO diagnostics from a run's metrics.jsonl, and whether the update moved the policy."""
    if not metrics_path.is_file():
        return None
    lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    if not lines or "approx_kl" not in lines[0]:
        return None  # GRPO's metrics are TRL's
    diag: dict[str, Any] = {k: [m.get(k) for m in lines] for k in (*DIAGNOSTICS, "policy_update", "success_rate")}
    kl = [abs(v) for v in diag["approx_kl"] if v is not None]
    clip = [v for v in diag["clipfrac"] if v is not None]
    updates = [v for v in diag["policy_update"] if v is not None]
    if updates and not any(updates):
        diag["moved"], diag["why"] = False, "no policy update on any iteration (every batch without signal)"
    elif (not kl or max(kl) < STILL) and not any(clip):
        diag["moved"], diag["why"] = False, "approx_kl ~ 0 and clip fraction 0 on every iteration"
    else:
        diag["moved"], diag["why"] = True, f"max approx_kl {max(kl, default=0):.2g}, max clipfrac {max(clip, default=0):.2g}"
    return diag


def summarize(out: Path, preset: dict[str, Any]) -> dict[str, Any]:
    """Collect the evaluations and the training metrics into the tables' data (missing stages: absent)."""
    evals = {p.stem: read_eval(p) for p in sorted((out / "eval").glob("*.json"))}
    kinds: dict[str, list[tuple[int | None, str]]] = {"zero-shot": [(None, "zero-shot")], "sft": [(None, "sft")]}
    for run, kind, seed in rl_runs(preset):
        kinds.setdefault(kind, []).append((seed, run))
    settings = [key for key, _ in SETTINGS.values()]
    task_ids: list[str] | None = None

    def test_outcomes(agent: str, setting: str) -> np.ndarray | None:
        nonlocal task_ids
        cell = evals.get(agent, {}).get(setting, {}).get(TEST_SOURCE)
        if cell is None:
            return None
        ids, ok = outcomes(cell)
        if task_ids is None:
            task_ids = ids
        if ids != task_ids:  # the pairing rests on this: every agent played the same tasks in the same order
            raise ValueError(f"{agent} {setting}: other test tasks than the first evaluation's")
        return ok

    rows = []
    for kind, members in kinds.items():
        row: dict[str, Any] = {"kind": kind, "label": KIND_LABELS[kind], "cells": {}}
        for setting in settings:
            per_seed = {str(seed): (run, test_outcomes(run, setting)) for seed, run in members}
            done = {s: o for s, (_, o) in per_seed.items() if o is not None}
            if done:
                allk = np.concatenate(list(done.values()))
                row["cells"][setting] = {"successes": int(allk.sum()), "episodes": int(allk.size),
                                         "success_rate": float(allk.mean()),
                                         "per_seed": {s: f"{int(o.sum())}/{o.size}" for s, o in done.items()}}
        rows.append(row)

    paired = []
    sft = {s: test_outcomes("sft", s) for s in settings}
    for kind, members in kinds.items():
        if kind in ("zero-shot", "sft"):
            continue
        for setting in settings:
            if sft[setting] is None:
                continue
            got = [(seed, test_outcomes(run, setting)) for seed, run in members]
            got = [(seed, o) for seed, o in got if o is not None]
            for seed, o in got:
                paired.append({"kind": kind, "setting": setting, "seed": str(seed),
                               **paired_comparison(o, sft[setting])})
            if len(got) > 1:
                stack = np.stack([o for _, o in got])
                paired.append({"kind": kind, "setting": setting, "seed": "pooled",
                               **paired_comparison(stack, np.stack([sft[setting]] * len(got)))})

    memory = []  # the reflection-memory ablation: CMAT with memory minus CMAT without, same agent and tasks
    for kind, members in kinds.items():
        got = [(test_outcomes(run, "cmat"), test_outcomes(run, "cmat-no-memory")) for _, run in members]
        got = [(a, b) for a, b in got if a is not None and b is not None]
        if got:
            memory.append({"kind": kind, "seed": "pooled" if len(got) > 1 else str(members[0][0] or "-"),
                           **paired_comparison(np.stack([a for a, _ in got]), np.stack([b for _, b in got]))})

    runs = {}
    for run, kind, seed in rl_runs(preset):
        diag = diagnostics(out / run / "metrics.jsonl")
        if diag is not None:
            runs[run] = {"kind": kind, "seed": seed, **diag}
    return {"rows": rows, "paired_vs_sft": paired, "memory_ablation": memory, "diagnostics": runs,
            "test_tasks": task_ids}


def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def _pair_cells(c: dict[str, Any]) -> str:
    return (f"{c['a_successes']} | {c['b_successes']} | {c['only_a']} | {c['only_b']} | {_p(c['p'])} | "
            f"{100 * c['diff']:+.1f} | [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]")


def _series(values: Sequence[Any]) -> str:
    return " ".join("-" if v is None else f"{v:.3g}" for v in values)


def format_summary(summary: dict[str, Any]) -> str:
    """The demonstration's tables as Markdown."""
    labels = dict(SETTINGS.values())
    keys = list(labels)
    n_tasks = len(summary["test_tasks"] or [])
    lines = [f"Held-out test tasks: {n_tasks} (the same for every agent, greedy). Cells: successes / "
             "episodes pooled over seeds (rate), then per seed.", "",
             "| agent | " + " | ".join(labels[k] for k in keys) + " |", "| --- |" + " --- |" * len(keys)]
    for r in summary["rows"]:
        cells = []
        for k in keys:
            c = r["cells"].get(k)
            seeds = "" if c is None or list(c["per_seed"]) == ["None"] else \
                " (" + ", ".join(f"s{s} {v}" for s, v in c["per_seed"].items()) + ")"
            cells.append("not run" if c is None else f"{c['successes']}/{c['episodes']} ({c['success_rate']:.3f}){seeds}")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")

    lines += ["", "Paired against SFT on the same tasks (A = the RL agent, B = SFT): successes, tasks only A / only "
              "B solved, exact McNemar p (two-sided binomial on the discordant pairs; pooled: over every (seed, "
              "task) pair), difference in points and its paired bootstrap 95% interval (10,000 resamples of the "
              "tasks; pooled: each seed's outcome on a drawn task).", "",
              "| agent | setting | seed | A | B | only A | only B | McNemar p | A - B (pts) | bootstrap 95% |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in summary["paired_vs_sft"]:
        lines.append(f"| {KIND_LABELS[c['kind']]} | {labels[c['setting']]} | {c['seed']} | {_pair_cells(c)} |")
    if summary["memory_ablation"]:
        lines += ["", "Reflection memory ablation: the same agent in the CMAT loop with memory (A) minus without (B).",
                  "", "| agent | seed | A | B | only A | only B | McNemar p | A - B (pts) | bootstrap 95% |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in summary["memory_ablation"]:
            lines.append(f"| {KIND_LABELS[c['kind']]} | {c['seed']} | {_pair_cells(c)} |")
    if summary["diagnostics"]:
        lines += ["", "PPO diagnostics per iteration (metrics.jsonl): approx_kl, clip fraction, KL to the reference, "
                  "explained variance, and whether the update moved the policy.", "",
                  "| run | approx_kl | clipfrac | kl_to_ref | explained variance | moved the policy? |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for run, d in summary["diagnostics"].items():
            verdict = f"yes ({d['why']})" if d["moved"] else f"**NO: {d['why']}**"
            lines.append(f"| {run} | " + " | ".join(_series(d[k]) for k in DIAGNOSTICS) + f" | {verdict} |")
        still = [run for run, d in summary["diagnostics"].items() if not d["moved"]]
        if still:
            lines.append(f"\n**These runs did not move the policy: {', '.join(still)}.** Their evaluation "
                         "differences from SFT are not an effect of RL.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen stages, then print and save the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: runs/demo-PRESET")
    parser.add_argument("--stages", nargs="+", default=None, help="default: all of the preset's, in order")
    parser.add_argument("--model", default=None, help="the base model (default: the preset's)")
    parser.add_argument("--checker-weight", type=float, default=0.1, help="checker shaping weight of the runs with it")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of every stage")
    parser.add_argument("--jobs", type=int, default=None, help="stages run at once (default: the preset's)")
    parser.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                        help="run the stages in this process (default: the preset's; cpu-tiny does)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds: then stop the running stages, start no more, and write the tables of what "
                             "exists (so a time-boxed call still reports)")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; print the tables of what exists")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    args.model = args.model or preset["model"]
    args.jobs = args.jobs or preset["jobs"]
    args.in_process = preset["in_process"] if args.in_process is None else args.in_process
    graph = stage_graph(preset)
    unknown = [s for s in args.stages or [] if s not in graph]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; the preset's stages: {', '.join(graph)}")
    out = (args.output_dir or REPO / "runs" / f"demo-{args.preset}").resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(exist_ok=True)

    walls_file = out / "stage_walls.json"
    if not args.summary_only:
        walls = run_stages(args.stages or list(graph), out, preset, args)
        # re-read before writing: another shell may have run other stages
        old = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
        walls_file.write_text(json.dumps({**old, **walls}, indent=1))
    walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
    summary = summarize(out, preset)
    summary.update(preset=args.preset, model=args.model, stage_walls_s=walls, output_dir=str(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = format_summary(summary)
    (out / "summary.md").write_text(table + "\n")
    print(f"\n{table}\n\nstage wall times (s): {json.dumps({k: round(v) for k, v in walls.items()})}")
    print(f"commands: {out / 'commands.sh'}; logs: {out / 'logs'}; tables: {out / 'summary.md'}, "
          f"{out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
