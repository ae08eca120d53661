"""One decode step's matmuls on CPU: ``F.linear`` (x @ W.T) against ``W @ x.T`` for a few rows of x.

    python benchmarks/cpu_matmul_rows.py [--model smollm2] [--threads 2 1] [--rows 1 2 4 8 16 32]

For each thread count and row count it runs every matmul of one decode step of the model (per layer: the
fused q/k/v, the output projection, the fused gate/up and the down projection; then the LM head), with the
engine's own weight copies, both ways, and prints the milliseconds per step and the ratio. A step of one row
reads all weights once, so the fastest way is the one nearest the memory-bandwidth floor, which the script
prints too (the weights' bytes over the faster time). ``RolloutEngine`` uses ``W @ x.T``
(``cmat_gym.agents.engine._weight_times_rows``) up to ``few_rows`` rows (16; 4 at one thread): the figures
this script prints are the reason. It reports; it exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmat_gym.agents.engine import RolloutEngine, _weight_times_rows  # noqa: E402
from cmat_gym.agents.models import load_model  # noqa: E402


def step_ms(mats: list[torch.Tensor], rows: int, way: str, repeats: int) -> float:
    """Milliseconds to run every matrix in ``mats`` on ``rows`` input rows (median of ``repeats``)."""
    inputs = {m.shape[1]: torch.randn(rows, m.shape[1]) for m in mats}
    run = F.linear if way == "F.linear" else (lambda x, w: _weight_times_rows(w, x))
    for m in mats:  # warm-up: kernel selection, allocator
        run(inputs[m.shape[1]], m)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for m in mats:
            run(inputs[m.shape[1]], m)
        times.append(time.perf_counter() - started)
    return 1e3 * sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 8, 12, 16, 24, 32, 72])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model)
    engine = RolloutEngine(model, tokenizer, max_batch=1, max_seq_len=64)
    w = engine.w
    mats = [m for i in range(engine.n_layers) for m in (w.qkv[i], w.o[i], w.gate_up[i], w.down[i])] + [w.lm_head]
    megabytes = sum(m.numel() * m.element_size() for m in mats) / 1e6
    load = os.getloadavg()
    print(f"{args.model}: {len(mats)} matmuls a decode step, {megabytes:.0f} MB of weights; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at the start")
    print(f"{'threads':>7} {'rows':>5} {'F.linear ms':>12} {'W @ x.T ms':>11} {'ratio':>6} {'GB/s (faster)':>14}")
    before = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for rows in args.rows:
                linear = step_ms(mats, rows, "F.linear", args.repeats)
                streamed = step_ms(mats, rows, "W @ x.T", args.repeats)
                print(f"{threads:>7} {rows:>5} {linear:>12.1f} {streamed:>11.1f} {linear / streamed:>5.2f}x "
                      f"{megabytes / min(linear, streamed):>14.1f}", flush=True)
    finally:
        torch.set_num_threads(before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
