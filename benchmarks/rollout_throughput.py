"""Generated tokens per second: RolloutEngine vs HF ``generate``, same model, batch and lengths.

Every row of the batch gets exactly ``--prompt-len`` prompt tokens (chat-templated text, cut
from the left so each ends with the assistant header) and exactly ``--new-tokens`` generated
tokens: EOS does not stop either implementation, so both do the same work. Times cover the
whole call (prefill included) after one warm-up call; the engine's warm-up is where CUDA
graphs are captured and ``torch.compile`` compiles, reported separately.

Greedy outputs are compared row by row. In fp32 they should be identical. In bf16 the two
implementations round differently (fused matmuls, attention kernels) and bf16 logits are
coarse (steps of 0.125 near 20), so exact ties are common; once one breaks the other way
the rows diverge. So besides the identical fraction (whole rows, and replies up to their
first EOS) the script checks each engine token against a teacher-forced HF forward over
the engine's own sequence: agreement with HF's argmax, the largest HF logit gap where they
disagree (near 0 means ties, not errors) and the largest log-prob difference.

    python benchmarks/rollout_throughput.py                     # SmolLM2, CUDA, bf16, 256 x 128
    python benchmarks/rollout_throughput.py --device cpu --dtype fp32 --batch 8 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmat_gym.agents.engine import RolloutEngine  # noqa: E402
from cmat_gym.agents.models import load_model  # noqa: E402

SENTENCES = [
    "The warehouse database has tables for orders, customers and shipments.",
    "List every customer who placed more than three orders last month.",
    "Explain which shell command counts the lines of all log files in a folder.",
    "A knowledge graph links cities to the countries and rivers they are on.",
    "Find the cheapest pair of running shoes with a rating above four stars.",
    "Summarise the previous observation in one sentence before acting.",
    "Then answer with a single SQL query and nothing else.",
]


def make_prompts(tokenizer: Any, batch: int, prompt_len: int) -> list[list[int]]:
    """``batch`` different chat prompts of exactly ``prompt_len`` tokens each."""
    prompts = []
    for i in range(batch):
        words = []
        while len(words) < 2 * prompt_len:
            words += SENTENCES[(i + len(words)) % len(SENTENCES)].split()
        content = " ".join(words) + f" (request {i}, user {i * 7919 % 1000})"  # distinct endings
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(ids[-prompt_len:])  # keep the end: the assistant header is where replies start
    return prompts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def hf_generate(model: Any, prompts: list[list[int]], new_tokens: int, pad_id: int) -> list[list[int]]:
    """Greedy HF generate on the (equal-length) prompts, EOS ignored; returns the new tokens."""
    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=pad_id,
        )
    return out[:, ids.shape[1] :].tolist()


def compare(a: list[list[int]], b: list[list[int]], eos: set[int]) -> dict[str, float]:
    """Identical rows, identical replies (up to the first EOS) and mean common-prefix fraction."""
    same = replies = 0
    prefix = 0.0
    for x, y in zip(a, b, strict=True):
        n = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        same += x == y
        end = next((i + 1 for i, t in enumerate(x) if t in eos), len(x))
        replies += n >= end
        prefix += n / max(len(x), 1)
    return {
        "identical_rows": same / len(a),
        "identical_replies": replies / len(a),
        "common_prefix": prefix / len(a),
    }


@torch.no_grad()
def teacher_forced(
    model: Any,
    prompts: list[list[int]],
    completions: list[list[int]],
    logprobs: list[list[float]],
    chunk: int = 16,
) -> dict[str, float]:
    """Check the engine's tokens and log-probs against one HF forward over prompt + completion."""
    device = next(model.parameters()).device
    agree = total = 0
    max_gap = max_lp_err = 0.0
    for i in range(0, len(prompts), chunk):
        P = len(prompts[i])  # all prompts have the same length
        rows = zip(prompts[i : i + chunk], completions[i : i + chunk], strict=True)
        ids = torch.tensor([p + c for p, c in rows], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[:, P - 1 : -1].float()
        tokens = ids[:, P:]
        chosen = logits.gather(-1, tokens[..., None]).squeeze(-1)
        agree += int((logits.argmax(-1) == tokens).sum())
        total += tokens.numel()
        max_gap = max(max_gap, float((logits.max(-1).values - chosen).max()))
        reference = chosen - logits.logsumexp(-1)
        ours = torch.tensor(logprobs[i : i + chunk], device=device)
        max_lp_err = max(max_lp_err, float((reference - ours).abs().max()))
    return {"tf_agreement": agree / total, "tf_max_gap": max_gap, "tf_max_logprob_err": max_lp_err}


def write_json(path: Path | None, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the figures so far (after every measurement, so that a timeout loses little)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": config, "results": rows}, indent=2))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct, tiny-random or a folder"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument(
        "--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu"
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed engine runs (median reported)")
    parser.add_argument("--hf-repeats", type=int, default=1, help="timed HF runs (slow; median reported)")
    parser.add_argument(
        "--modes",
        default=None,
        help="engine variants, comma-separated from eager,graph,compile (default: graph,compile on cuda, eager on cpu)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    modes = (args.modes or ("graph,compile" if device.type == "cuda" else "eager")).split(",")
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, device=device, dtype=dtype)
    prompts = make_prompts(tokenizer, args.batch, args.prompt_len)
    n_tokens = args.batch * args.new_tokens
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    config = {
        "model": args.model,
        "device": gpu,
        "dtype": dtype,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "distinct_prompts": len({tuple(p) for p in prompts}),
        "torch": torch.__version__,
    }
    print(" | ".join(f"{k} {v}" for k, v in config.items()), flush=True)

    # HF baseline: a short warm-up (kernel selection, allocator), then the timed runs.
    hf_generate(model, prompts, 4, tokenizer.pad_token_id)
    hf_times = []
    for _ in range(args.hf_repeats):
        hf_tokens, seconds = timed(
            lambda: hf_generate(model, prompts, args.new_tokens, tokenizer.pad_token_id), device
        )
        hf_times.append(seconds)
    hf_s = statistics.median(hf_times)
    rows: list[dict[str, Any]] = [
        {"impl": "hf generate", "seconds": hf_s, "tok_s": n_tokens / hf_s, "speedup": 1.0}
    ]
    print(f"hf generate: {hf_s:.3f} s", flush=True)
    write_json(args.json, config, rows)
    eos = {tokenizer.eos_token_id}

    for mode in modes:
        engine = RolloutEngine(
            model,
            tokenizer,
            max_batch=args.batch,
            max_seq_len=args.prompt_len + args.new_tokens,
            use_cuda_graph=mode != "eager",
            compile=mode == "compile",
        )

        def run(new_tokens: int, engine: RolloutEngine = engine) -> list[Any]:
            return engine.generate(prompts, new_tokens, temperature=0.0, eos_token_ids=())

        _, warmup_s = timed(lambda: run(args.new_tokens), device)  # captures graphs / compiles
        times = []
        for _ in range(args.repeats):
            results, seconds = timed(lambda: run(args.new_tokens), device)
            times.append(seconds)
        _, prefill_s = timed(lambda: run(1), device)  # one token: prefill + first sample
        seconds = statistics.median(times)
        tokens = [r.completion_ids for r in results]
        row = {
            "impl": f"engine:{mode}",
            "seconds": seconds,
            "tok_s": n_tokens / seconds,
            "speedup": hf_s / seconds,
            "warmup_s": warmup_s,
            "prefill_s": prefill_s,
            **compare(tokens, hf_tokens, eos),
            **teacher_forced(model, prompts, tokens, [r.logprobs for r in results]),
        }
        rows.append(row)
        print(f"engine:{mode}: {seconds:.3f} s (warm-up {warmup_s:.1f} s)", flush=True)
        write_json(args.json, config, rows)
        del engine
        if device.type == "cuda":
            torch.cuda.empty_cache()

    header = [
        "impl",
        "tok/s",
        "time s",
        "speedup",
        "same rows",
        "same replies",
        "TF agree",
        "TF gap",
        "TF dlogp",
    ]
    print("\n" + "".join(f"{h:>13}" for h in header))
    for r in rows:
        cells = [r["impl"], f"{r['tok_s']:,.0f}", f"{r['seconds']:.3f}", f"{r['speedup']:.1f}x"]
        if "identical_rows" in r:
            cells += [
                f"{r['identical_rows']:.1%}",
                f"{r['identical_replies']:.1%}",
                f"{r['tf_agreement']:.2%}",
            ]
            cells += [f"{r['tf_max_gap']:.3f}", f"{r['tf_max_logprob_err']:.1e}"]
        else:
            cells += ["-"] * 5
        print("".join(f"{c:>13}" for c in cells))
    return {"config": config, "results": rows}


if __name__ == "__main__":
    main()
