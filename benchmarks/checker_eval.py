"""Checker quality on held-out actions: the learned checker vs the rule checker vs a zero-shot LLM critic.

1. Train (or, with ``--adapter DIR``, load) the learned checker with ``algorithms.checker_train`` on
   train-split CMAT episodes (oracle, flawed and random actions, hindsight labels).
2. Collect held-out labelled actions the same way on **test-split** tasks with evaluation seeds
   (``derive_seed(EVAL_SEED, i)``; the train and test splits are disjoint by construction, and the
   script prints the task-id overlap, which must be 0).
3. Score every held-out action with each checker and report AUROC (score vs the hindsight label),
   precision and recall of its rejections (a positive is a rejected bad action, as in the loop's
   ``episode_metrics``), accuracy and the time spent:

   * ``learned``: ``sigmoid(logp("yes") - logp("no"))`` of the adapter, approve at its config threshold;
   * ``rule``: the domain's rule checker, whose verdicts were taken live in the loop while collecting
     (its dry runs need the env as it was); score = its score, else 1/0;
   * ``llm``: ``LLMChecker`` (zero-shot critic prompt) on the base model (SmolLM2 by default), greedy;
     score = the score it writes, else 1/0 from its verdict; an unreadable reply approves;
   * ``none``: approves everything (the floor: AUROC 0.5, no rejections).

    python benchmarks/checker_eval.py                                    # SmolLM2 on CPU (see docs/results/checker.md)
    python benchmarks/checker_eval.py --model tiny-random --train-episodes 8 --test-episodes 4 --epochs 1

Exits 0 whatever the figures are (it reports; it does not assert).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="cmat/DB-v0")
    p.add_argument("--model", default="smollm2-135m-instruct", help="base of the learned and the LLM checker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--adapter", default=None, metavar="DIR", help="use this trained checker (skip training)")
    p.add_argument("--output-dir", default="runs/checker-eval", help="where the learned checker is trained")
    p.add_argument("--train-episodes", type=int, default=24)
    p.add_argument("--test-episodes", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-len", type=int, default=320)
    p.add_argument("--history-turns", type=int, default=1, help="dialogue turns in the learned checker's prompt")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=4, help="prompts per forward/backward (memory)")
    p.add_argument("--lora-layers", type=int, default=4, help="LoRA on the last K blocks only (cheaper backward)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--llm-max-new-tokens", type=int, default=24, help="tokens of each zero-shot verdict")
    p.add_argument("--llm-batch", type=int, default=8)
    p.add_argument("--no-llm", action="store_true", help="skip the zero-shot LLM row")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    return p.parse_args(argv)


def llm_scores(args: argparse.Namespace, examples: list[dict[str, Any]]) -> tuple[list[float], list[bool], int]:
    """The zero-shot ``LLMChecker``'s scores and verdicts on ``examples``, and how many replies held no verdict."""
    from cmat_gym.agents.chat_agent import make_critic_lm
    from cmat_gym.cmat.checkers import LLMChecker, ReviewRequest, parse_verdict

    lm = make_critic_lm(args.model, max_new_tokens=args.llm_max_new_tokens, device=args.device,
                        threads=args.threads)
    checker = LLMChecker(lm)
    scores, approved, unreadable = [], [], 0
    for i in range(0, len(examples), args.llm_batch):
        chunk = examples[i:i + args.llm_batch]
        # The critic prompt reads only the task's instruction and context: the recorded task text stands in.
        requests = [ReviewRequest(types.SimpleNamespace(instruction=e["task_text"], context=""),  # type: ignore[arg-type]
                                  e["history"], e["action"]) for e in chunk]
        for verdict, reply in zip(checker.review_batch(requests), checker.last_replies, strict=True):
            unreadable += parse_verdict(reply) is None
            approved.append(verdict.approve)
            scores.append(verdict.score if verdict.score is not None else float(verdict.approve))
    return scores, approved, unreadable


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from algorithms import checker_train
    from algorithms.common.script import EVAL_SEED, derive_seed
    from cmat_gym.cmat.checkers import LearnedRewardModel

    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/checker_eval.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"$ {command}".rstrip())
    report: dict[str, Any] = {"command": command, "torch_threads": torch.get_num_threads()}

    # ---- 1. the learned checker
    t0 = time.perf_counter()
    folder = args.adapter
    if folder is None:
        folder = args.output_dir
        train_argv = ["--env", args.env, "--model", args.model, "--device", args.device, "--episodes",
                      str(args.train_episodes), "--epochs", str(args.epochs), "--max-len", str(args.max_len),
                      "--history-turns", str(args.history_turns), "--lora-layers", str(args.lora_layers),
                      "--batch-size", str(args.batch_size),
                      "--micro-batch-size", str(args.micro_batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
                      "--val-fraction", "0", "--output-dir", folder]
        print("training: python -m algorithms.checker_train " + " ".join(train_argv))
        result = checker_train.train(checker_train.parse_args(train_argv))
        report["train"] = {k: v for k, v in result.metrics.items() if k != "loss_curve"}
        rm = result.reward_model
        config = json.loads((Path(folder) / "checker_config.json").read_text())
    else:
        rm, config = LearnedRewardModel.load(folder, device=args.device)
    train_s = time.perf_counter() - t0
    train_tasks = {json.loads(line)["task_id"] for line in (Path(folder) / "examples.jsonl").open()} \
        if (Path(folder) / "examples.jsonl").is_file() else set()

    # ---- 2. held-out labelled actions (test split, evaluation seeds)
    seeds = [derive_seed(EVAL_SEED, i) for i in range(args.test_episodes)]
    examples = checker_train.collect_examples(args.env, split="test", seeds=seeds, checker="rule",
                                              mix_seed=derive_seed(EVAL_SEED, 1), progress="held-out")
    labels = [e["label"] for e in examples]
    overlap = len(train_tasks & {e["task_id"] for e in examples})
    report["held_out"] = {"actions": len(examples), "good": sum(labels), "bad": len(labels) - sum(labels),
                          "episodes": args.test_episodes, "task_overlap_with_training": overlap}
    print(f"held-out: {len(examples)} labelled actions ({sum(labels)} good, {len(labels) - sum(labels)} bad) "
          f"from {args.test_episodes} test-split episodes; task ids shared with training: {overlap}")

    # ---- 3. score them
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    scores = rm.score_batch([(e["task_text"], e["history"], e["action"]) for e in examples])
    threshold = float(config.get("threshold", 0.5))
    rows["learned"] = {**checker_train.checker_metrics(scores, [s >= threshold for s in scores], labels),
                       "seconds": time.perf_counter() - t0, "train_seconds": train_s, "threshold": threshold}
    rows["rule"] = {**checker_train.checker_metrics([e["loop_score"] for e in examples],
                                                    [e["loop_approve"] for e in examples], labels),
                    "seconds": None}
    if not args.no_llm:
        del rm  # the LLM row loads its own copy of the base model
        t0 = time.perf_counter()
        s, a, unreadable = llm_scores(args, examples)
        rows["llm"] = {**checker_train.checker_metrics(s, a, labels), "seconds": time.perf_counter() - t0,
                       "unreadable_replies": unreadable}
    rows["none"] = {**checker_train.checker_metrics([1.0] * len(labels), [True] * len(labels), labels),
                    "seconds": None}
    report["rows"] = rows
    by_source: dict[str, list[int]] = {}
    for e in examples:
        by_source.setdefault(e["source"], [0, 0])[int(e["label"])] += 1
    report["held_out"]["by_source"] = {k: {"bad": v[0], "good": v[1]} for k, v in sorted(by_source.items())}

    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    print(f"\nchecker quality on {len(examples)} held-out actions ({args.env}, base {args.model}, {args.device}, "
          f"{report['torch_threads']} torch threads)")
    print("| checker | AUROC | precision | recall | accuracy | rejected | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {fmt(r['auroc'])} | {fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['accuracy'])} "
              f"| {r['rejected']}/{r['n']} | {fmt(r['seconds'])} |")
    print(f"held-out by source (bad/good): {report['held_out']['by_source']}")
    if "llm" in rows:
        print(f"llm: {rows['llm']['unreadable_replies']} replies held no verdict (approved, score 1)")
    print(f"learned checker: {folder} (threshold {threshold:g}; trained/loaded in {train_s:.0f}s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
    raise SystemExit(0)
