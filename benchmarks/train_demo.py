"""Issue 5's demonstration in one command: does training inside the CMAT loop make SmolLM2 better?

    python benchmarks/train_demo.py --preset gpu --output-dir runs/demo-gpu     # a lent GPU
    python benchmarks/train_demo.py --preset cpu --output-dir runs/demo-cpu     # 2 CPU cores, ~2.5 h

Five agents, all SmolLM2-135M-Instruct, scored by the same evaluation (``benchmarks/agentbench_table.py``:
greedy, the bare DB-v0 env, the same held-out test-split tasks and the same AgentBench dbbench dev tasks,
which no stage ever trains on):

* **zero-shot**: the bundled model as it is;
* **SFT**: ``algorithms.sft_train`` (oracle trajectories through the CMAT loop, LoRA, TRL ``SFTTrainer``);
* **SFT+PPO, checker**: ``algorithms.ppo_train --init-adapter SFT --checker rule --checker-weight W``;
* **SFT+PPO, weight 0**: the same run with ``--checker-weight 0`` (the checker still gates actions, but
  adds no reward: the ablation of the checker as critic);
* **SFT+GRPO**: ``algorithms.grpo_train --init-adapter SFT`` (TRL ``GRPOTrainer``, critic-free), same
  tasks, episodes and checker shaping as the PPO run.

Every stage is a separate process with its log in ``DIR/logs/STAGE.log`` and its command in
``DIR/commands.sh``. A stage whose output exists is skipped, and an interrupted PPO run resumes from
its checkpoint, so rerunning the same command after a crash loses only unfinished work. ``--stages``
runs a subset (e.g. two shells running different PPO stages at once). The table goes to stdout,
``DIR/summary.md`` and ``DIR/summary.json``, the curves to ``DIR/curves.png`` (each PPO run also
draws its own ``learning_curve.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

# Sizes per preset. "cpu" is what fits a few hours of 2 CPU cores; "gpu" the scale of a short lent-GPU
# session. Flags not named here take the scripts' defaults (see docs/training.md).
PRESETS: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "common": ["--device", "cpu"],
        "sft": ["--episodes", "64", "--epochs", "2", "--batch-size", "4", "--lr", "5e-4", "--max-seq-len", "1024"],
        "rl": ["--iterations", "8", "--episodes-per-iteration", "8", "--rollout-batch", "8", "--max-turns", "5",
               "--max-new-tokens", "128", "--learning-rate", "1e-4", "--micro-batch-size", "4",
               "--max-seq-len", "1024"],
        "ppo": ["--ppo-epochs", "1", "--minibatch-size", "8", "--checkpoint-every", "1"],
        "grpo": ["--num-generations", "4"],
        "eval": ["--episodes", "32", "--agentbench-tasks", "12", "--max-rounds", "5", "--max-new-tokens", "128",
                 "--batch-size", "16"],
    },
    # the whole pipeline in about a minute with the tiny random model (tests/benchmarks/test_train_demo.py)
    "smoke": {
        "common": ["--device", "cpu"],
        "sft": ["--episodes", "4", "--epochs", "1", "--batch-size", "2", "--max-seq-len", "1024"],
        "rl": ["--iterations", "1", "--episodes-per-iteration", "4", "--rollout-batch", "4", "--max-turns", "2",
               "--max-new-tokens", "8", "--micro-batch-size", "2"],
        "ppo": ["--ppo-epochs", "1", "--minibatch-size", "4"],
        "grpo": ["--num-generations", "2"],
        "eval": ["--episodes", "2", "--agentbench-tasks", "3", "--max-rounds", "2", "--max-new-tokens", "8",
                 "--batch-size", "4"],
    },
    "gpu": {
        "common": ["--device", "cuda"],
        "sft": ["--episodes", "400", "--epochs", "2", "--batch-size", "8", "--lr", "2e-4"],
        "rl": ["--iterations", "30", "--episodes-per-iteration", "64", "--rollout-batch", "64", "--max-turns", "5",
               "--max-new-tokens", "128", "--learning-rate", "5e-5"],
        "ppo": ["--checkpoint-every", "5"],
        "grpo": ["--num-generations", "8"],
        "eval": ["--episodes", "200", "--agentbench-tasks", "60", "--max-rounds", "5", "--max-new-tokens", "128",
                 "--batch-size", "64"],
    },
}

DONE_MARK = "demo_stage_done.json"  # written into a training stage's folder once its process exits 0
EVAL_POLICY = {"smollm2-135m-instruct": "smollm2"}  # model name -> its name as an evaluation policy

# (stage, the agent it trains or scores, its label in the table)
AGENTS = [("zero-shot", "zero-shot"), ("sft", "SFT"), ("ppo-checker", "SFT+PPO, checker"),
          ("ppo-no-checker", "SFT+PPO, checker weight 0"), ("grpo", "SFT+GRPO")]
# stage -> the stages whose output it needs
NEEDS = {"eval-zero-shot": [], "sft": [], "eval-sft": ["sft"],
         "ppo-checker": ["sft"], "eval-ppo-checker": ["ppo-checker"],
         "ppo-no-checker": ["sft"], "eval-ppo-no-checker": ["ppo-no-checker"],
         "grpo": ["sft"], "eval-grpo": ["grpo"]}
STAGES = list(NEEDS)


def stage_command(stage: str, out: Path, preset: dict[str, list[str]], args: argparse.Namespace) -> list[str]:
    """The command line of one stage."""
    model = ["--model", args.model, "--seed", str(args.seed)]
    sft_adapter = str(out / "sft" / "adapter")
    if stage == "sft":
        return [PY, "-m", "algorithms.sft_train", "--env", "cmat/DB-v0", *model, *preset["common"], *preset["sft"],
                "--output-dir", str(out / "sft")]
    if stage in ("ppo-checker", "ppo-no-checker"):
        weight = "0" if stage == "ppo-no-checker" else str(args.checker_weight)
        resume = ["--resume"] if (out / stage / "checkpoint" / "latest").exists() else []
        return [PY, "-m", "algorithms.ppo_train", "--env", "cmat/DB-v0", *model, *preset["common"], *preset["rl"],
                *preset["ppo"], "--checker", "rule", "--checker-weight", weight, "--init-adapter", sft_adapter,
                "--output-dir", str(out / stage), *resume]
    if stage == "grpo":
        return [PY, "-m", "algorithms.grpo_train", "--env", "cmat/DB-v0", *model, *preset["common"], *preset["rl"],
                *preset["grpo"], "--checker", "rule", "--checker-weight", str(args.checker_weight),
                "--init-adapter", sft_adapter, "--output-dir", str(out / stage)]
    if stage.startswith("eval-"):
        agent = stage.removeprefix("eval-")
        adapter = [] if agent == "zero-shot" else ["--adapter", str(out / agent / "adapter")]
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        return [PY, str(REPO / "benchmarks" / "agentbench_table.py"), "--policy", EVAL_POLICY.get(args.model, args.model), "--envs", "DB",
                "--seed", "0", *preset["eval"], *adapter, *preset["common"], *threads, "--quiet",
                "--json", str(out / "eval" / f"{agent}.json")]
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def stage_done(stage: str, out: Path) -> bool:
    """Whether a stage's final output is already there."""
    if stage.startswith("eval-"):
        return (out / "eval" / f"{stage.removeprefix('eval-')}.json").is_file()
    # not the adapter: PPO saves one at every checkpoint, so it exists before the run is over
    return (out / stage / DONE_MARK).is_file()


def run_stage(stage: str, out: Path, preset: dict[str, list[str]], args: argparse.Namespace) -> float:
    """Run one stage in its own process (log to DIR/logs); returns its wall time; raises if it fails."""
    cmd = stage_command(stage, out, preset, args)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if args.threads is not None:  # the training scripts read torch's thread count from the environment
        env["OMP_NUM_THREADS"] = str(args.threads)
    log = out / "logs" / f"{stage}.log"
    with (out / "commands.sh").open("a") as f:
        f.write(shlex.join(cmd) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {shlex.join(cmd)}\n    log: {log}", flush=True)
    started = time.perf_counter()
    with log.open("a") as f:  # append: a resumed run keeps the log of its first part
        code = subprocess.call(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"stage {stage} failed (exit {code}) after {wall:.0f} s; see {log}")
    if not stage.startswith("eval-"):
        (out / stage / DONE_MARK).write_text(json.dumps({"command": cmd, "wall_s": wall}))
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: done in {wall:.0f} s", flush=True)
    return wall


def summarize(out: Path) -> dict[str, Any]:
    """Collect the evaluation JSONs and the training metrics into one table (missing stages: None)."""
    rows = []
    for agent, label in AGENTS:
        path = out / "eval" / f"{agent}.json"
        row: dict[str, Any] = {"agent": agent, "label": label, "evaluated": path.is_file()}
        if path.is_file():
            ev = json.loads(path.read_text())["rows"][0]
            for name, cell in ev["sources"].items():
                row[name] = {k: cell[k] for k in ("episodes", "successes", "success_rate", "ci95", "mean_steps",
                                                   "format_error_rate", "wall_s")}
                if "headline" in cell:
                    row["db_headline"] = cell["headline"]["headline"]
            row["overall"] = ev["overall"]
        metrics = out / agent / "metrics.jsonl"
        if metrics.is_file():
            lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            row["train_success_by_iteration"] = [m.get("success_rate") for m in lines]
        rows.append(row)
    by = {r["agent"]: r for r in rows}
    test = "DB-v0 test"
    gain = None
    if by["sft"]["evaluated"] and by["ppo-checker"]["evaluated"]:
        gain = by["ppo-checker"][test]["success_rate"] - by["sft"][test]["success_rate"]
    return {"rows": rows, "ppo_gain_over_sft_test": gain}


def plot_curves(path: Path, summary: dict[str, Any]) -> None:
    """Training success per iteration of the RL runs, and each agent's held-out test success as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(summary["rows"]):
        color = f"C{i}"
        curve = r.get("train_success_by_iteration")
        if curve:
            ax.plot(range(1, len(curve) + 1), [float("nan") if v is None else v for v in curve], "-o", ms=3,
                    color=color, label=f"{r['label']}: train rollouts")
        if "DB-v0 test" in r:
            ax.axhline(r["DB-v0 test"]["success_rate"], color=color, ls="--", lw=1,
                       label=f"{r['label']}: test {r['DB-v0 test']['success_rate']:.3f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("Training success per iteration (solid) and held-out test success (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_summary(summary: dict[str, Any]) -> str:
    """The demonstration table as Markdown."""
    lines = ["| agent | DB-v0 test | dbbench dev | DB headline | format errors (steps) | train success by iteration |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        def cell(name: str, r: dict[str, Any] = r) -> str:
            if name not in r:
                return "not run"
            c = r[name]
            return f"{c['success_rate']:.3f} ({c['successes']}/{c['episodes']}) [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
        curve = r.get("train_success_by_iteration")
        curve_text = " ".join("-" if v is None else f"{v:.2f}" for v in curve) if curve else ""
        headline = r.get("db_headline")
        errors = f"{r['overall']['format_error_rate']:.1%}" if "overall" in r else ""
        lines.append(f"| {r['label']} | {cell('DB-v0 test')} | {cell('dbbench dev')} | "
                     f"{'' if headline is None else f'{headline:.3f}'} | {errors} | {curve_text} |")
    gain = summary["ppo_gain_over_sft_test"]
    if gain is not None:
        verdict = "met" if gain >= 0.10 - 1e-9 else "NOT met"  # 0.3 - 0.2 < 0.1 in floats
        lines.append(f"\nSFT+PPO (checker) minus SFT on the test split: {100 * gain:+.1f} points "
                     f"(target >= +10: {verdict}).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen stages, then print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: runs/demo-PRESET")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=STAGES, help="default: all, in order")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="the Assistant's base model (tiny-random: the pipeline in a minute, for tests)")
    parser.add_argument("--checker-weight", type=float, default=0.1, help="checker shaping weight of the runs with it")
    parser.add_argument("--seed", type=int, default=1, help="training seed (evaluation tasks never depend on it)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of every stage")
    parser.add_argument("--summary-only", action="store_true", help="run nothing; print the table of what exists")
    args = parser.parse_args(argv)
    out = (args.output_dir or REPO / "runs" / f"demo-{args.preset}").resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(exist_ok=True)
    preset = PRESETS[args.preset]

    walls_file = out / "stage_walls.json"

    def read_walls() -> dict[str, float]:  # re-read each time: another shell may run other stages
        return json.loads(walls_file.read_text()) if walls_file.is_file() else {}

    for stage in ([] if args.summary_only else [s for s in STAGES if s in args.stages]):
        if stage_done(stage, out):
            print(f"{stage}: already done (output present), skipped", flush=True)
            continue
        missing = [n for n in NEEDS[stage] if not stage_done(n, out)]
        if missing:
            print(f"{stage}: skipped, needs {', '.join(missing)} first", flush=True)
            continue
        wall = run_stage(stage, out, preset, args)
        walls_file.write_text(json.dumps({**read_walls(), stage: wall}, indent=1))

    walls = read_walls()
    summary = summarize(out)
    summary.update(preset=args.preset, stage_walls_s=walls, output_dir=str(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = format_summary(summary)
    (out / "summary.md").write_text(table + "\n")
    plot_curves(out / "curves.png", summary)
    print(f"\n{table}\n\nstage wall times (s): {json.dumps({k: round(v) for k, v in walls.items()})}")
    print(f"commands: {out / 'commands.sh'}; logs: {out / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
