"""``cmat-gym eval`` with a language model: the generation path before KV reuse against today's, same run.

    python benchmarks/eval_speed.py [--policy smollm2] [--episodes 2] [--max-new-tokens 256] [--json out.json]
        [-- more cmat-gym eval flags]

Both sides run what ``cmat-gym eval --env cmat/DB-v0 --cmat --checker rule --policy smollm2 --episodes 2``
runs (the CMAT loop, rule checker, 20 turns per episode unless one ends earlier), through the CLI's own
functions, with one model:

* **old**: the path before issue 15: ``--batch-size 1`` (one episode after the other) and the engine's
  ``legacy`` mode (every turn's conversation prefilled whole by HF, torch's thread count);
* **new**: the CLI's defaults now: the episodes batched (``--batch-size`` auto: min(episodes, 16) for a
  local model), KV reuse across turns, the engine's thread count, prompt-lookup drafts in greedy decoding;
* **new, no drafts** (``--also-without-drafts``): the same with ``speculate=0``, to show what the drafts add.

It prints each side's wall time, generated tokens and tokens/s, where the time went (engine prefill,
decode, the rest: env, checker, tokenizer), and whether both played the same episodes (greedy: equal
results and the same number of generated tokens). The speed-up is old wall time / new wall time.
Target (issue 15): >= 3x. It reports; it exits 0 either way.

The floor: a decode step of a 135M-parameter fp32 model reads all its weights (~540 MB) once, whatever
the batch; with B episodes decoding together the new side needs 1/B of the old side's steps, but a step
of B rows costs more than a step of one once the matmuls stop being bound by memory bandwidth. A pass that
verifies drafted tokens also reads the weights once, so each accepted draft token saves most of a step.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmat_gym import cli  # noqa: E402

TARGET = 3.0


def run_side(argv: list[str], legacy: bool, speculate: int | None = None) -> dict[str, Any]:
    """Play the eval ``argv`` describes with a freshly loaded model (its engine sized by the side's batch);
    ``legacy``: batch 1 and the old engine path; ``speculate``: the engine's draft length (None: its default)."""
    args = cli.build_parser().parse_args(argv + (["--batch-size", "1"] if legacy else []))
    cli.check_counts(args)  # resolves the --batch-size default
    policy = cli.build_policy(args)
    lm = policy.lm
    lm.legacy = legacy
    if speculate is not None:
        lm.speculate = speculate
    engine = lm.engine
    tokens0, stats0 = policy.generated_tokens, dict(engine.stats)
    started = time.perf_counter()
    results = cli.run_policy(args, policy, None, progress=False)
    wall = time.perf_counter() - started
    stats = {k: v - stats0.get(k, 0) for k, v in engine.stats.items()}
    tokens = policy.generated_tokens - tokens0
    figures = {
        "batch_size": args.batch_size, "threads": engine.threads or "engine default", "wall_s": wall,
        "generated_tokens": tokens, "tokens_per_s": tokens / wall, "steps": sum(r.steps for r in results),
        "successes": sum(r.success for r in results), "engine": stats,
        "results": [r.to_dict() for r in results],
    }
    return figures


def describe(name: str, f: dict[str, Any]) -> str:
    e = f["engine"]
    rest = f["wall_s"] - e["prefill_s"] - e["decode_s"]
    return (f"{name:<4} batch {f['batch_size']:>2}: {f['wall_s']:7.1f} s, {f['generated_tokens']} generated tokens "
            f"({f['tokens_per_s']:.1f} tokens/s), {f['steps']} env steps, {f['successes']} successes\n"
            f"     prefill {e['prefill_s']:.1f} s ({e['prefilled_tokens']:.0f} tokens prefilled of "
            f"{e['prompt_tokens']:.0f}, {e['reused_tokens']:.0f} reused), decode {e['decode_s']:.1f} s "
            f"({e['decode_steps']:.0f} steps, {1e3 * e['decode_s'] / max(e['decode_steps'], 1):.1f} ms each), "
            f"rest {rest:.1f} s"
            + (f"\n     prompt-lookup drafts: {e['accepted_tokens']:.0f} of {e['drafted_tokens']:.0f} drafted tokens "
               f"accepted" if e.get("drafted_tokens") else ""))


def main(argv: list[str] | None = None) -> int:
    """Run old then new, print both and the speed-up; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="smollm2")
    parser.add_argument("--env", default="cmat/DB-v0")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--also-without-drafts", action="store_true",
                        help="a third side: today's path with prompt-lookup drafts off (speculate=0)")
    parser.add_argument("extra", nargs="*", help="more cmat-gym eval flags (after --)")
    args = parser.parse_args(argv)
    eval_argv = ["eval", "--env", args.env, "--cmat", "--checker", "rule", "--policy", args.policy,
                 "--episodes", str(args.episodes), "--max-new-tokens", str(args.max_new_tokens), *args.extra]
    load = os.getloadavg()
    print(f"cmat-gym {shlex.join(eval_argv)}\nmachine: {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start", flush=True)
    old = run_side(eval_argv, legacy=True)
    print(describe("old", old), flush=True)
    new = run_side(eval_argv, legacy=False)
    print(describe("new", new), flush=True)
    plain = None
    if args.also_without_drafts:
        plain = run_side(eval_argv, legacy=False, speculate=0)
        print(describe("new, no drafts:", plain), flush=True)
        print(f"speed-up old / (new, no drafts): {old['wall_s'] / plain['wall_s']:.2f}x; same generated tokens as "
              f"new: {plain['generated_tokens'] == new['generated_tokens']}", flush=True)
    same = ([(r["task_id"], r["success"], r["steps"], r["score"]) for r in old["results"]]
            == [(r["task_id"], r["success"], r["steps"], r["score"]) for r in new["results"]])
    speedup = old["wall_s"] / new["wall_s"]
    print(f"same episodes (task, success, steps, score): {same}; generated tokens old {old['generated_tokens']}, "
          f"new {new['generated_tokens']}")
    print(f"speed-up old / new: {speedup:.2f}x   target >= {TARGET:.0f}x: {'PASS' if speedup >= TARGET else 'FAIL'}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"command": eval_argv, "old": old, "new": new, "new_no_drafts": plain,
                                               "speedup": speedup}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
