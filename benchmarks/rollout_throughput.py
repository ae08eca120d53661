"""Generated tokens per second: RolloutEngine vs HF ``generate``, same model, batch and lengths.

Every row of the batch gets exactly ``--prompt-len`` prompt tokens (chat-templated text, cut
from the left so each ends with the assistant header) and exactly ``--new-tokens`` generated
tokens: EOS does not stop either implementation, so both do the same work. Times cover the
whole call (prefill included) after one warm-up call; the engine's warm-up is where CUDA
graphs are captured and ``torch.compile`` compiles, reported separately. Decode tokens/s
leaves the prefill out: (whole call - a one-token call) over the tokens after the first.

Greedy outputs are compared row by row. In fp32 they should be identical. In bf16 the two
implementations round differently (fused matmuls, attention kernels) and bf16 logits are
coarse (steps of 0.125 near 20), so exact ties are common; once one breaks the other way
the rows diverge. So besides the identical fraction (whole rows, and replies up to their
first EOS) the script checks each engine token against a teacher-forced HF forward over
the engine's own sequence: agreement with HF's argmax, the largest HF logit gap where they
disagree (near 0 means ties, not errors) and the largest log-prob difference.

On CPU the default compares, for tiny-random and SmolLM2 at batch 1 and 16: HF ``generate``
(torch's thread count, and the engine's when that differs), the engine before this change
(``engine:legacy``: ``RolloutEngine(legacy=True)``, torch's thread count) and now
(``engine:eager``), the implementations interleaved in each repeat so that a shared machine's
load hits them alike. It also measures the memory read bandwidth (and a numpy copy's) and prints the
weight-read floor of batch-1 decoding (every step reads every weight once). "CPU tok/s" divides by
the process's CPU time instead of wall time: on a shared machine the wall time includes the time
other processes held the cores, the CPU time does not (it still includes their effect on caches and
memory bandwidth).

    python benchmarks/rollout_throughput.py                     # SmolLM2, CUDA, bf16, 256 x 128
    python benchmarks/rollout_throughput.py --device cpu        # tiny + SmolLM2, batch 1 and 16, 64 + 32
    python benchmarks/rollout_throughput.py --device cpu --model smollm2 --batch 8 --new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmat_gym.agents.engine import RolloutEngine, default_cpu_threads  # noqa: E402
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


def read_bandwidth(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """Memory read bandwidth in GB/s (best of ``repeats`` sums over a tensor far larger than the caches)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.ones(megabytes * 2**20 // 4)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            x.sum()
            best = min(best, time.perf_counter() - start)
        return x.numel() * 4 / best / 1e9
    finally:
        torch.set_num_threads(before)


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s of a plain numpy copy (one thread; bytes read + bytes written, best of
    ``repeats``): a second measure of the floor that does not go through torch."""
    import numpy as np

    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def weight_bytes(model: Any) -> int:
    """Bytes a decode step reads: every weight once (a tied embedding counts once, as the LM head)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


class Impl:
    """One implementation to time: a name, the thread count it runs with and its generate function."""

    def __init__(self, name: str, threads: int | None, fn: Any, engine: RolloutEngine | None = None) -> None:
        self.name, self.threads, self.fn, self.engine = name, threads, fn, engine
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # CPU seconds of the process (all its threads): what load does not inflate
        self.cpu_prefill: list[float] = []
        self.last_cpu_s = 0.0
        self.prefill: list[float] = []
        self.warmup_s = 0.0
        self.tokens: list[list[int]] = []
        self.logprobs: list[list[float]] | None = None

    def __call__(self, new_tokens: int, device: torch.device) -> tuple[Any, float]:
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        cpu = time.process_time()
        try:
            return timed(lambda: self.fn(new_tokens), device)
        finally:
            self.last_cpu_s = time.process_time() - cpu
            torch.set_num_threads(before)


def measure(model_name: str, batch: int, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Every implementation on one model and batch size; returns the rows of the table."""
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    modes = (args.modes or ("graph,compile" if device.type == "cuda" else "legacy,eager")).split(",")
    torch.manual_seed(0)
    model, tokenizer = load_model(model_name, device=device, dtype=dtype)
    prompts = make_prompts(tokenizer, batch, args.prompt_len)
    n_tokens = batch * args.new_tokens
    pad = tokenizer.pad_token_id
    default_threads = torch.get_num_threads()
    engine_threads = args.threads or default_cpu_threads(batch)

    impls = [Impl("hf generate", None, lambda new: hf_generate(model, prompts, new, pad))]
    if device.type == "cpu" and engine_threads != default_threads:
        impls.append(
            Impl(f"hf generate ({engine_threads} thr)", engine_threads, lambda new: hf_generate(model, prompts, new, pad))
        )
    for mode in modes:
        engine = RolloutEngine(
            model,
            tokenizer,
            max_batch=batch,
            max_seq_len=args.max_seq_len or args.prompt_len + args.new_tokens,
            use_cuda_graph=mode in ("graph", "compile") or (mode == "legacy" and device.type == "cuda"),
            compile=mode == "compile",
            legacy=mode == "legacy",
            threads=args.threads,
            speculate=args.speculate,
        )

        def run(new: int, engine: RolloutEngine = engine) -> list[Any]:
            if not engine.legacy:
                engine._forget_all("benchmark")  # every call prefills the whole prompt, as the others do
            return engine.generate(prompts, new, temperature=0.0, eos_token_ids=())

        impls.append(Impl(f"engine:{mode}", None, run, engine))

    for impl in impls:  # warm-up: kernel selection, allocator; graphs and compilation for the engine
        _, impl.warmup_s = impl(args.new_tokens if impl.engine is not None else 4, device)
    hf_repeats = args.hf_repeats or (1 if device.type == "cuda" else args.repeats)
    for repeat in range(max(args.repeats, hf_repeats)):  # interleaved: load spikes hit every implementation
        for impl in impls:
            if repeat >= (args.repeats if impl.engine is not None else hf_repeats):
                continue
            out, seconds = impl(args.new_tokens, device)
            impl.times.append(seconds)
            impl.cpu_times.append(impl.last_cpu_s)
            if impl.engine is None:
                impl.tokens = out
            else:
                impl.tokens, impl.logprobs = [r.completion_ids for r in out], [r.logprobs for r in out]
            impl.prefill.append(impl(1, device)[1])  # one token: prefill + first sample
            impl.cpu_prefill.append(impl.last_cpu_s)
            print(f"  {model_name} b{batch} {impl.name}: {seconds:.3f} s", flush=True)

    hf = impls[0]
    hf_s = statistics.median(hf.times)
    eos = {tokenizer.eos_token_id}
    rows = []
    for impl in impls:
        seconds, prefill_s = statistics.median(impl.times), statistics.median(impl.prefill)
        decode_s = max(seconds - prefill_s, 1e-9)
        cpu_s, cpu_prefill_s = statistics.median(impl.cpu_times), statistics.median(impl.cpu_prefill)
        row: dict[str, Any] = {
            "model": model_name,
            "batch": batch,
            "impl": impl.name,
            "threads": impl.threads or (engine_threads if impl.engine is not None and not impl.engine.legacy
                                        else default_threads),
            "seconds": seconds,
            "times": impl.times,
            "tok_s": n_tokens / seconds,
            "decode_tok_s": batch * (args.new_tokens - 1) / decode_s,
            "speedup": hf_s / seconds,
            "prefill_s": prefill_s,
            "cpu_s": cpu_s,
            "cpu_tok_s": n_tokens / max(cpu_s, 1e-9),
            "cpu_decode_tok_s": batch * (args.new_tokens - 1) / max(cpu_s - cpu_prefill_s, 1e-9),
        }
        if impl is not hf:
            row.update(compare(impl.tokens, hf.tokens, eos))
        if impl.engine is not None:
            row["warmup_s"] = impl.warmup_s
            if args.check:
                row.update(teacher_forced(model, prompts, impl.tokens, impl.logprobs))
        rows.append(row)
    if device.type == "cpu":
        # The batch-1 floor: each decode step reads every weight once, at the engine's thread count.
        bandwidth, copy_gb_s = read_bandwidth(engine_threads), copy_bandwidth()
        nbytes = weight_bytes(model)
        for row in rows:
            row.update(weight_mb=nbytes / 1e6, read_gb_s=bandwidth, copy_gb_s=copy_gb_s,
                       floor_tok_s=batch * bandwidth * 1e9 / nbytes)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["model", "batch", "impl", "threads", "tok/s", "decode tok/s", "CPU tok/s", "CPU decode",
              "time s", "vs HF", "same rows", "TF agree", "TF dlogp"]
    widths = [22, 6, 24, 8, 9, 13, 10, 11, 9, 8, 10, 10, 10]
    print("\n" + "".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for r in rows:
        cells = [r["model"], str(r["batch"]), r["impl"], str(r["threads"]), f"{r['tok_s']:,.0f}",
                 f"{r['decode_tok_s']:,.0f}", f"{r['cpu_tok_s']:,.0f}", f"{r['cpu_decode_tok_s']:,.0f}",
                 f"{r['seconds']:.3f}", f"{r['speedup']:.1f}x"]
        cells.append(f"{r['identical_rows']:.0%}" if "identical_rows" in r else "-")
        cells.append(f"{r['tf_agreement']:.2%}" if "tf_agreement" in r else "-")
        cells.append(f"{r['tf_max_logprob_err']:.1e}" if "tf_max_logprob_err" in r else "-")
        print("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    floors = {(r["model"], r["batch"]): r for r in rows if "floor_tok_s" in r}
    for (model, batch), r in floors.items():
        if batch == 1:
            print(f"floor {model}: {r['weight_mb']:.0f} MB of weights per decode step at {r['read_gb_s']:.1f} GB/s "
                  f"read ({r['threads']} thr) -> at most {r['floor_tok_s']:.0f} tokens/s at batch 1 "
                  f"(numpy copy, 1 thr: {r['copy_gb_s']:.1f} GB/s read + write)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=None,
                        help="smollm2-135m-instruct, tiny-random or a folder (default: SmolLM2; on CPU both)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument(
        "--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="default: 256 on cuda, 1 16 on cpu")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 128 on cuda, 32 on cpu")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="engine cache columns (default prompt + new tokens; LMPolicy uses 2048)")
    parser.add_argument("--repeats", type=int, default=3, help="timed engine runs (median reported)")
    parser.add_argument("--hf-repeats", type=int, default=None,
                        help="timed HF runs (median reported; default 1 on cuda, --repeats on cpu)")
    parser.add_argument(
        "--modes",
        default=None,
        help="engine variants, comma-separated from legacy,eager,graph,compile "
        "(default: graph,compile on cuda, legacy,eager on cpu)",
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="the engine's CPU threads (default: cmat_gym.agents.engine.default_cpu_threads())")
    parser.add_argument("--speculate", type=int, default=0,
                        help="the engine's prompt-lookup draft length (default 0: the decode step alone is "
                        "measured; the prompts are random tokens, whose drafts would rarely be accepted)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the teacher-forced check of the engine's tokens")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    models = args.model or (["tiny-random", "smollm2-135m-instruct"] if cpu else ["smollm2-135m-instruct"])
    batches = args.batch or ([1, 16] if cpu else [256])
    args.new_tokens = args.new_tokens or (32 if cpu else 128)
    config = {
        "models": models,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "engine_threads": args.threads or {b: default_cpu_threads(b) for b in batches},  # at the start
        "dtype": args.dtype or ("bf16" if device.type == "cuda" else "fp32"),
        "batches": batches,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    print(" | ".join(f"{k} {v}" for k, v in config.items()), flush=True)
    rows: list[dict[str, Any]] = []
    for model_name in models:
        for batch in batches:
            rows += measure(model_name, batch, args, device)
            write_json(args.json, config, rows)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(rows)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return {"config": config, "results": rows}


if __name__ == "__main__":
    main()
