"""Task success in the layout of AgentBench's table: rows = agents, columns = task sources + overall.

    python benchmarks/agentbench_table.py --policy oracle random smollm2 --envs DB OS --episodes 30 \\
        [--agentbench-dir DIR] [--agentbench-file TITLE=PATH] [--agentbench-tasks K] [--max-rounds R] \\
        [--adapter PATH] [--ablations [VARIANT ...]] [--batch-size B] [--max-new-tokens M] [--threads T] \\
        [--json PATH]

Sources of each domain in ``--envs`` (the titles of registered domains, ``cmat-gym list``; default all):

* **<Title>-v0 test**: ``--episodes`` procedural tasks of the held-out test split, difficulty mixed
  (episode i resets with ``seed + i``);
* **its AgentBench dev split** (the domain record's ``agentbench``, e.g. dbbench dev): the file under
  ``--agentbench-dir`` (default: the copies bundled in ``cmat_gym/data/agentbench``) or the one given by
  ``--agentbench-file TITLE=PATH``; skipped with a message when absent. All tasks, or an evenly spaced
  subset of ``--agentbench-tasks K`` (files are sorted by task type, so every type stays).

Each cell is the success rate with its 95% Wilson interval; **overall** pools the episodes of all
sources. **headline** is AgentBench's own metric of a domain on its dev split, where the domain
defines one (DB: ``overall_cat_accuracy``, the mean of the SELECT, INSERT and UPDATE accuracies).
**format errors**: the fraction of steps whose action did not parse, and of episodes with at least
one such step.

``--ablations`` adds the CMAT variants of each agent side by side: the loop with no checker, with
the rule checker, with an LLM checker (``--checker-model``, default the agent's own model, else
SmolLM2), and with the rule checker plus reflection memory (a fresh in-memory store in read-write
mode, shared by the episodes of one source; its final state is printed); ``--ablations rule``
adds only the named ones. Every row prints its wall time and episodes/s (and generated tokens/s).

``--policy smollm2`` runs the real SmolLM2-135M-Instruct (greedy, ``--max-new-tokens``), on CUDA
when available; ``--threads 1`` decodes faster on a CPU that other processes keep busy.

``--legacy-engine`` plays the language-model agents on the generation path before KV reuse (every
turn's prompt re-rendered and prefilled whole, torch's thread count; ``LMPolicy(legacy=True)``);
``--legacy-engine also`` plays each language-model row twice, old path then new, to compare them
in one run (temporary: until the new path's speed-up is on record).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.agents.policies import Policy, is_model_policy, make_policy
from cmat_gym.cmat.memory import ReflectionStore
from cmat_gym.core.domain import Domain, domain_of_env, registered_domains
from cmat_gym.core.task import Task
from cmat_gym.data import AGENTBENCH_DIR
from cmat_gym.evaluation import (
    EpisodeResult,
    env_factory,
    run_episodes,
    summarize,
    summarize_cmat,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AGENTBENCH_DIR = AGENTBENCH_DIR  # the dev splits bundled with the package


@dataclass(frozen=True)
class Source:
    """A set of tasks: the env kwargs and the task indices (None: procedural, ``episodes`` seeds)."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any]
    episodes: int
    task_indices: list[int] | None = None
    domain: Domain | None = None  # file sources: the domain whose AgentBench headline applies
    tasks: dict[str, Task] = field(default_factory=dict)  # task_id -> Task (file sources)


@dataclass(frozen=True)
class Variant:
    """How an agent plays: the bare env, or the CMAT loop with a checker and optional memory."""

    label: str
    cmat: bool = False
    checker: str = "none"
    memory: bool = False


BARE = Variant("")
ABLATIONS = {  # --ablations name -> variant
    "none": Variant("+ CMAT, no checker", cmat=True, checker="none"),
    "rule": Variant("+ CMAT, rule checker", cmat=True, checker="rule"),
    "llm": Variant("+ CMAT, LLM checker", cmat=True, checker="llm"),
    "memory": Variant("+ CMAT, rule checker, memory on", cmat=True, checker="rule", memory=True),
}


def domains_named(titles: Sequence[str] | None) -> list[Domain]:
    """The registered domains with these titles (all when None); SystemExit naming the known ones."""
    known = {d.title: d for d in registered_domains()}
    if not titles:
        return list(known.values())
    unknown = [t for t in titles if t not in known]
    if unknown:
        raise SystemExit(f"unknown domain(s) {unknown}; registered: {', '.join(known)}")
    return [known[t] for t in titles]


def sources(domains: Sequence[Domain], episodes: int, agentbench_dir: Path, files: dict[str, Path],
            agentbench_tasks: int | None, max_rounds: int | None = None) -> list[Source]:
    """The task sources of ``domains`` (prints why a source is skipped)."""
    found = []
    rounds = {} if max_rounds is None else {"max_rounds": max_rounds}
    for domain in domains:
        found.append(Source(f"{domain.title}-v0 test", domain.env_id, {"split": "test", **rounds}, episodes))
        split = domain.agentbench
        if split is None:
            continue
        if agentbench_tasks == 0:
            print(f"('{split.name}' skipped: --agentbench-tasks 0)")
            continue
        path = files.get(domain.title, agentbench_dir / split.path)
        if not path.is_file():
            print(f"(AgentBench file not found at {path}: '{split.name}' skipped)")
            continue
        tasks = domain.env_class.load_tasks(str(path))
        try:  # a file whose tasks need a live backend not given here (KG: a Freebase endpoint) is skipped
            domain.env_class(tasks=str(path), **rounds).close()
        except ValueError as exc:
            print(f"('{split.name}' skipped: {exc})")
            continue
        n = len(tasks) if agentbench_tasks is None else min(agentbench_tasks, len(tasks))
        indices = [i * len(tasks) // n for i in range(n)]  # evenly spaced: the file is sorted by type
        found.append(Source(split.name, domain.env_id, {"tasks": str(path), **rounds}, n, indices, domain,
                            {t.task_id: t for t in tasks}))
    return found


def headline(source: Source, results: Sequence[EpisodeResult]) -> dict[str, Any] | None:
    """The domain's AgentBench headline on a file source (None when it defines none)."""
    split = source.domain.agentbench if source.domain is not None else None
    if split is None or split.headline is None:
        return None
    return split.headline([source.tasks[r.task_id] for r in results], [r.success for r in results])


# ------------------------------------------------------------------------------ running
def run_row(
    name: str, variant: Variant, srcs: Sequence[Source], get_policy: Callable[[str], Policy],
    args: argparse.Namespace, critic: Callable[[Policy], Any],
) -> dict[str, Any]:
    """Every source for one agent (policy + variant): results, summaries, timing."""
    row: dict[str, Any] = {"agent": f"{name} {variant.label}".strip(), "policy": name, "variant": variant.label,
                           "cmat": variant.cmat, "checker": variant.checker if variant.cmat else None,
                           "memory": variant.memory, "sources": {}}
    for source in srcs:
        policy = get_policy(domain_of_env(source.env_id).name)
        memory = ReflectionStore(None, mode="rw") if variant.memory else None
        lm = critic(policy) if variant.cmat and variant.checker == "llm" else None
        factory = env_factory(source.env_id, cmat=variant.cmat, checker=variant.checker, checker_policy=lm,
                              memory=memory, **source.env_kwargs)
        tokens_before = getattr(policy, "generated_tokens", 0)
        engine_before = engine_stats(policy)
        started = time.perf_counter()
        results = run_episodes(factory, policy, source.episodes, args.seed, task_indices=source.task_indices,
                               progress=not args.quiet, batch_size=args.batch_size)
        wall = time.perf_counter() - started
        cell = {**summarize(results), "wall_s": wall, "episodes_per_s": len(results) / wall,
                "results": [r.to_dict() for r in results]}
        tokens = getattr(policy, "generated_tokens", 0) - tokens_before
        if tokens:
            cell.update(generated_tokens=tokens, tokens_per_s=tokens / wall)
        engine_after = engine_stats(policy)
        if engine_after:  # where the time went: prefill, decode, the rest (env, tokenizer, prompt rendering)
            cell["engine"] = {k: v - engine_before.get(k, 0) for k, v in engine_after.items()}
        if variant.cmat:
            cell["cmat"] = summarize_cmat(results)
        if memory is not None:
            cell["memory"] = memory.describe()
            memory.close()
        summary = headline(source, results)
        if summary is not None:
            cell["headline"] = summary
        row["sources"][source.name] = cell
        print(f"  {row['agent']:<44} {source.name:<12} {cell['successes']:>3}/{cell['episodes']:<3} "
              f"in {wall:7.1f} s ({cell['episodes_per_s']:.2f} episodes/s)", flush=True)
    pooled = [EpisodeResult(**r) for cell in row["sources"].values() for r in cell["results"]]
    row["overall"] = summarize(pooled)
    return row


def engine_stats(policy: Policy) -> dict[str, float]:
    """The rollout engine's counters behind a language-model agent ({} for other agents or before use)."""
    engine = getattr(getattr(policy, "lm", None), "_engine", None)  # not .engine: that would build one
    return dict(engine.stats) if engine is not None else {}


# ------------------------------------------------------------------------------ printing
def _rate(summary: dict[str, Any]) -> str:
    low, high = summary["ci95"]
    return f"{summary['success_rate']:.3f} [{low:.2f}, {high:.2f}]"


def format_table(rows: Sequence[dict[str, Any]], srcs: Sequence[Source]) -> str:
    """The AgentBench-style table, the headline breakdowns, and the CMAT and timing details."""
    names = [s.name for s in srcs]
    width = max(28, *(len(r["agent"]) for r in rows))
    head = [f"{'agent':<{width}}"] + [f"{f'{n} ({s.episodes})':>22}" for n, s in zip(names, srcs, strict=True)]
    head += [f"{'overall':>22}", f"{'headline':>11}", f"{'format errors':>22}"]
    lines = [" | ".join(head), "-" * len(" | ".join(head))]
    for r in rows:
        cells = [f"{r['agent']:<{width}}"] + [f"{_rate(r['sources'][n]):>22}" for n in names]
        found = [c["headline"]["headline"] for c in r["sources"].values() if "headline" in c]
        best = sum(found) / len(found) if found else None  # the mean over domains, as AgentBench's overall
        o = r["overall"]
        errors = f"{o['format_error_rate']:.1%} steps, {o['episodes_with_format_error']:.0%} ep"
        cells += [f"{_rate(o):>22}", f"{'-' if best is None else f'{best:.3f}':>11}", f"{errors:>22}"]
        lines.append(" | ".join(cells))

    for source in srcs:
        split = source.domain.agentbench if source.domain is not None else None
        with_headline = [(r, r["sources"][source.name]["headline"]) for r in rows
                         if "headline" in r["sources"].get(source.name, {})]
        if split is None or not with_headline:
            continue
        lines += ["", f"AgentBench headline on {source.name} ({split.headline_doc}):"]
        for r, h in with_headline:
            parts = [f"{c} {a:.3f} (n={h['counts'][c]})" for c, a in h["accuracy"].items()]
            lines.append(f"  {r['agent']:<{width}}  " + ", ".join(parts) + f"  -> {h['headline']:.3f}")

    cmat_rows = [r for r in rows if r["cmat"]]
    if cmat_rows:
        lines += ["", "CMAT loop (per source): rejected actions per episode, checker precision / recall "
                      "(aggregate, against hindsight), reflections used / written:"]
        for r in cmat_rows:
            for n, c in r["sources"].items():
                m = c["cmat"]
                p, rc = m["checker_precision"], m["checker_recall"]
                lines.append(f"  {r['agent']:<{width}} {n:<12} {m['mean_rejected_actions']:.2f}, "
                             f"{'n/a' if p is None else f'{p:.2f}'} / {'n/a' if rc is None else f'{rc:.2f}'}, "
                             f"{m['reflections_used']} / {m['reflections_written']}"
                             + (f"   [{c['memory']}]" if "memory" in c else ""))

    lines += ["", "Timing (wall clock of each run, batch of episodes played at once):"]
    for r in rows:
        for n, c in r["sources"].items():
            tok = f", {c['tokens_per_s']:.1f} generated tokens/s" if "tokens_per_s" in c else ""
            lines.append(f"  {r['agent']:<{width}} {n:<12} {c['wall_s']:8.1f} s, "
                         f"{c['episodes_per_s']:.3f} episodes/s{tok}")
            e = c.get("engine")
            if e:
                rest = c["wall_s"] - e["prefill_s"] - e["decode_s"]
                lines.append(f"  {'':<{width}}   prefill {e['prefill_s']:.1f} s ({e['prefilled_tokens']:.0f} of "
                             f"{e['prompt_tokens']:.0f} prompt tokens, {e['reused_tokens']:.0f} reused), decode "
                             f"{e['decode_s']:.1f} s ({e['decode_steps']:.0f} steps), rest {rest:.1f} s")
                if e.get("drafted_tokens"):
                    lines.append(f"  {'':<{width}}   prompt-lookup drafts: {e['accepted_tokens']:.0f} of "
                                 f"{e['drafted_tokens']:.0f} drafted tokens accepted")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", nargs="+", default=["oracle", "random"],
                        help="agents (rows): oracle, random, smollm2, tiny-random or model folders")
    parser.add_argument("--envs", nargs="+", default=None, metavar="TITLE",
                        help="domains by title (default: every registered one: "
                             f"{', '.join(d.title for d in registered_domains())})")
    parser.add_argument("--episodes", type=int, default=30, help="procedural test episodes per agent and domain")
    parser.add_argument("--agentbench-dir", type=Path, default=DEFAULT_AGENTBENCH_DIR,
                        help="the folder of AgentBench's data files (default: the bundled dev splits, "
                             f"{DEFAULT_AGENTBENCH_DIR})")
    parser.add_argument("--agentbench-file", action="append", default=[], metavar="TITLE=PATH",
                        help="a domain's AgentBench file, e.g. DB=path/to/dev.jsonl (repeatable)")
    parser.add_argument("--agentbench-tasks", "--dbbench-tasks", type=int, default=None, dest="agentbench_tasks",
                        help="play an evenly spaced subset of this many AgentBench tasks per domain "
                             "(default: all; 0: none)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="actions per episode before truncation, for every agent (default: each env's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablations", nargs="*", default=None, choices=sorted(ABLATIONS), metavar="VARIANT",
                        help="add CMAT variants of each agent: none (no checker), rule, llm, memory (rule checker "
                             "+ reflection memory); the flag alone adds all four")
    parser.add_argument("--checker-model", default=None,
                        help="the LLM checker's model (default: the agent's model, else smollm2)")
    parser.add_argument("--adapter", default=None, help="a peft adapter for the language-model agents")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes played at once (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--legacy-engine", nargs="?", const="only", default=None, choices=["only", "also"],
                        help="language models on the path before KV reuse; 'also': old path, then new, per row")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure and result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.batch_size < 1 or (args.agentbench_tasks or 0) < 0 or (args.max_rounds or 1) < 1:
        parser.error("--episodes, --batch-size and --max-rounds must be at least 1, --agentbench-tasks at least 0")
    files = {}
    for item in args.agentbench_file:
        title, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"--agentbench-file expects TITLE=PATH, got {item!r}")
        files[title] = Path(path)

    command = "python benchmarks/agentbench_table.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    domains = domains_named(args.envs)
    srcs = sources(domains, args.episodes, args.agentbench_dir, files, args.agentbench_tasks, args.max_rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, Python {platform.python_version()}"
    print(f"command: {command}\nmachine: {machine}")
    print("measured: " + "; ".join(f"{s.name}: {s.episodes} episodes" for s in srcs)
          + f"; seed {args.seed}; batch size {args.batch_size}; max rounds {args.max_rounds or 'each env default'}")

    models: dict[str, Policy] = {}

    def policy_for(name: str) -> Callable[[str], Policy]:
        if not is_model_policy(name):
            return lambda domain: make_policy(name, seed=args.seed, domain=domain)  # fresh per run: reproducible
        if name not in models:
            first = domains[0].name
            models[name] = make_policy(name, adapter=args.adapter, max_new_tokens=args.max_new_tokens,
                                       max_batch=args.batch_size, device=args.device, threads=args.threads,
                                       domain=first)
            lm = models[name].lm  # type: ignore[attr-defined]
            print(f"model: {name} on {lm.model.device}, greedy, max {args.max_new_tokens} new tokens"
                  + (f", adapter {args.adapter}" if args.adapter else ""))
        # One model, one agent per domain (each domain's system prompt), so tokens add up per agent.
        return lambda domain: models[name].for_domain(domain)  # type: ignore[attr-defined]

    critics: dict[str, Any] = {}

    def critic(policy: Policy) -> Any:
        from cmat_gym.agents.chat_agent import ChatAgent, make_critic_lm

        model = args.checker_model or (policy if isinstance(policy, ChatAgent) else "smollm2")
        key = model if isinstance(model, str) else f"agent:{id(model)}"
        if key not in critics:
            critics[key] = make_critic_lm(model, device=args.device, threads=args.threads)
        return critics[key]

    chosen = [] if args.ablations is None else (args.ablations or list(ABLATIONS))
    variants = (BARE, *(ABLATIONS[name] for name in ABLATIONS if name in chosen))
    rows = []
    for name in args.policy:
        get_policy = policy_for(name)
        paths = [args.legacy_engine == "only" and is_model_policy(name)]
        if args.legacy_engine == "also" and is_model_policy(name):
            paths = [True, False]
        for variant in variants:
            for legacy in paths:
                if is_model_policy(name):
                    models[name].lm.legacy = legacy  # type: ignore[attr-defined]  (shared by its domain agents)
                label = f"{name} (old path)" if legacy else name
                rows.append(run_row(label, variant, srcs, get_policy, args, critic))
    if any(v.memory for v in variants):
        print("memory on: a fresh in-memory ReflectionStore (read-write) per agent and source, shared by its episodes")
    print()
    print(format_table(rows, srcs))
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
