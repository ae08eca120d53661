"""The metrics files of a training run: JSON-lines rows (``metrics.jsonl``, ``eval.jsonl``) and the plot.

Rows are plain dicts of numbers; :func:`json_safe` turns the NaN/inf of undefined metrics (a mean over no
episodes) into ``null``, since JSON has neither. (Named ``metrics``, not ``logging``, so that it can never
shadow the standard library's ``logging`` module.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from algorithms.common.checkpoint import atomic_write_text

__all__ = ["append_jsonl", "json_safe", "plot_learning_curve", "read_jsonl", "write_jsonl"]


def json_safe(value: Any) -> Any:
    """``value``, or None for a non-finite float (JSON has no NaN/inf: undefined metrics are null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: Path, max_iteration: int | None = None) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (those with ``iteration <= max_iteration`` when given)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if max_iteration is None or r["iteration"] <= max_iteration]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows``, one JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` (made :func:`json_safe`) as one line to ``path``, flushed at once."""
    with path.open("a") as handle:
        handle.write(json.dumps({k: json_safe(v) for k, v in row.items()}) + "\n")
        handle.flush()


def plot_learning_curve(
    path: Path,
    metrics: Sequence[dict[str, Any]],
    evals: Sequence[dict[str, Any]],
    title: str = "PPO learning curve",
) -> None:
    """Success rate and mean score per iteration (training rollouts; greedy test-split evals as markers)."""
    import matplotlib  # lazily: only runs that plot pay for matplotlib's import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = [m["iteration"] for m in metrics]
    for key, label in (("success_rate", "train success rate"), ("mean_score", "train mean score")):
        ax.plot(x, [m.get(key) if m.get(key) is not None else float("nan") for m in metrics], label=label)
    if evals:
        ax.plot(
            [e["iteration"] for e in evals],
            [e["eval_success_rate"] for e in evals],
            "o--",
            label="eval success rate (test, greedy)",
        )
    ax.set_xlabel("iteration")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    fig.tight_layout()
    # Written beside the target and renamed, so that a viewer never reads a half-written image.
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
