"""The HTML episode report of ``cmat-gym eval --html FILE``: every recorded episode's dialogue in one file.

One self-contained page (inline CSS, no script, no external asset, so it opens anywhere and can be
mailed or attached to an issue): the run's header, the success rate with its 95% Wilson interval
(:func:`cmat_gym.evaluation.summarize`, the numbers ``cmat-gym eval`` prints), a summary table with one
row per episode, then each episode as a dialogue: the User's task (the first observation), and for each
step the Assistant's action, the Checker's verdict with its score, feedback and hindsight (CMAT loop),
the observation the action got (marked "not executed" when the checker rejected it) and the reward.

Agent text is hostile: everything that comes from an episode (actions, observations, feedback, task
ids, even the title) goes through :func:`html.escape`, so an action holding ``<script>`` shows as text
and never runs; control characters that HTML forbids are replaced.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmat_gym.core.files import atomic_write_text
from cmat_gym.evaluation import EpisodeResult, summarize, summarize_cmat
from cmat_gym.trajectories import Step, Trajectory

# HTML forbids C0 controls other than tab, newline, CR and form feed (and DEL): show them as U+FFFD.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d232b}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:#59636e;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:8px}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#59636e;font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d8dde3}
th,td{padding:5px 8px;border-bottom:1px solid #e6e9ed;text-align:left;font-size:13px}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#137333;font-weight:600}.fail{color:#b3261e;font-weight:600}
section.episode{background:#fff;border:1px solid #d8dde3;border-radius:8px;margin:16px 0;padding:4px 14px 12px}
summary{cursor:pointer;font-weight:600;padding:8px 0}
.turn{border-left:4px solid #9aa5b1;border-radius:4px;margin:8px 0;padding:6px 10px;background:#f8f9fa}
.turn .who{font-size:12px;font-weight:700;text-transform:uppercase;letter-spacing:.04em;color:#3c4650}
.turn .who small{font-weight:400;text-transform:none;letter-spacing:0;color:#59636e;margin-left:6px}
.user{border-color:#1a73e8;background:#eef4fe}.assistant{border-color:#7b3fe4;background:#f4effd}
.checker{border-color:#e8a317;background:#fdf7e8}.observation{border-color:#5f6b76}
.rejected{border-color:#b3261e;background:#fcefee}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:700;color:#fff}
.APPROVE{background:#137333}.REJECT{background:#b3261e}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0 0;font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace;
max-height:320px;overflow:auto}
.outcome{margin-top:10px;font-weight:600}
"""


def esc(text: Any) -> str:
    """``text`` as HTML text: escaped (quotes too) and without the control characters HTML forbids."""
    return html.escape(_FORBIDDEN.sub("\ufffd", str(text)), quote=True)


def render_html(
    results: Sequence[EpisodeResult],
    *,
    title: str = "cmat-gym episodes",
    description: str = "",
    summary: dict[str, Any] | None = None,
    open_episodes: int = 20,
) -> str:
    """The report page of ``results`` (each recorded: ``run_episodes(..., record=True)``).

    Args:
        results: the episodes, in order.
        title: the page title; description: one line under it (e.g. env, policy, task source).
        summary: the run's :func:`~cmat_gym.evaluation.summarize` (default: computed from ``results``;
            a multi-trial run passes its trial-1 summary).
        open_episodes: the first this many episodes are shown expanded, the rest folded.
    """
    missing = [i for i, r in enumerate(results) if r.trajectory is None]
    if missing:
        raise ValueError(f"Expects every result recorded (run_episodes(..., record=True)), actual "
                         f"{len(missing)} without a trajectory (first: episode {missing[0]})")
    summary = summary if summary is not None else summarize(results)
    cmat = all(r.cmat is not None for r in results) and bool(results)
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        # No script may run even if escaping were ever missed somewhere: the page needs none.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{esc(title)}</h1>",
        f"<p class=\"meta\">{esc(description)}</p>" if description else "",
        _summary_cards(summary, summarize_cmat(results) if cmat else None),
        _table(results, cmat),
        "<h2>Episodes</h2>",
        *(_episode(i, r, i < open_episodes) for i, r in enumerate(results)),
        "</main></body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def write_html(results: Sequence[EpisodeResult], path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`render_html` of ``results`` to ``path`` atomically (temp file, fsync, rename)."""
    final = Path(path).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(final, render_html(results, **kwargs))
    os.chmod(final, 0o644)  # the temp file was private (mkstemp's 0600); a report is for sharing
    return final


def _summary_cards(summary: dict[str, Any], cmat: dict[str, Any] | None) -> str:
    low, high = summary["ci95"]
    cards = [
        (f"{summary['success_rate']:.3f}", f"success rate ({summary['successes']}/{summary['episodes']})"),
        (f"[{low:.3f}, {high:.3f}]", "95% Wilson interval"),
        (f"{summary['mean_score']:.3f}", "mean score"),
        (f"{summary['mean_steps']:.1f}", "mean steps"),
        (f"{summary['format_error_rate']:.1%}", "steps with format errors"),
    ]
    if cmat is not None:
        cards.append((f"{cmat['mean_rejected_actions']:.2f}", "rejected actions per episode"))
        for key in ("checker_precision", "checker_recall"):
            value = cmat[key]
            cards.append(("n/a" if value is None else f"{value:.3f}", key.replace("_", " ") + " (hindsight)"))
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><b>{esc(v)}</b><span>{esc(label)}</span></div>" for v, label in cards) + "</div>"


def _table(results: Sequence[EpisodeResult], cmat: bool) -> str:
    head = ["#", "task", "seed", "trial", "outcome", "score", "steps", "return"]
    if cmat:
        head.append("rejected")
    rows = []
    for i, r in enumerate(results):
        t = r.trajectory
        assert t is not None
        cells = [f"<a href=\"#ep-{i}\">{i}</a>", esc(r.task_id), str(t.seed), str(r.trial), _outcome(r),
                 f"{r.score:g}", str(r.steps), f"{sum(s.reward for s in t.steps):g}"]
        if cmat:
            cells.append(str(sum(s.checker_verdict == "REJECT" for s in t.steps)))
        rows.append("<tr>" + "".join(
            f"<td class=\"num\">{c}</td>" if j in (0, 2, 3, 5, 6, 7, 8) else f"<td>{c}</td>"
            for j, c in enumerate(cells)) + "</tr>")
    return ("<h2>Summary</h2><table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _outcome(result: EpisodeResult) -> str:
    if result.success:
        return "<span class=\"ok\">success</span>"
    return "<span class=\"fail\">" + ("truncated" if result.truncated else "failure") + "</span>"


def _episode(index: int, result: EpisodeResult, expanded: bool) -> str:
    t: Trajectory = result.trajectory  # type: ignore[assignment]
    head = (f"Episode {index}: {esc(result.task_id)} (seed {t.seed}"
            + (f", trial {result.trial}" if result.trial != 1 else "") + f") {_outcome(result)}")
    turns = [_turn("user", "User", t.observation, "the task")]
    for n, step in enumerate(t.steps, 1):
        turns.extend(_step(n, step))
    outcome = f"score {result.score:g}, {result.steps} steps" + (", truncated at the step limit" if result.truncated else "")
    if result.reflection:
        turns.append(_turn("checker", "Reflection", result.reflection, "written after this failed episode"))
    return (f"<section class=\"episode\" id=\"ep-{index}\"><details{' open' if expanded else ''}>"
            f"<summary>{head}</summary>{''.join(turns)}"
            f"<div class=\"outcome\">{_outcome(result)}: {esc(outcome)}</div></details></section>")


def _step(n: int, step: Step) -> list[str]:
    turns = [_turn("assistant", "Assistant", step.action, f"action {n}")]
    if step.checker_verdict is not None:
        notes = []
        if step.checker_score is not None:
            notes.append(f"score {step.checker_score:g}")
        if step.hindsight is not None:
            notes.append("fine in hindsight" if step.hindsight else "bad in hindsight")
        badge = f"<span class=\"badge {esc(step.checker_verdict)}\">{esc(step.checker_verdict)}</span>"
        turns.append(_turn("checker", "Checker", step.checker_feedback or "", "; ".join(notes), badge=badge))
    rejected = step.checker_verdict == "REJECT"
    notes = ["not executed" if rejected else "", f"reward {step.reward:g}", f"error: {step.error}" if step.error else ""]
    turns.append(_turn("rejected" if rejected else "observation", "Observation", step.observation,
                       "; ".join(x for x in notes if x)))
    return turns


def _turn(kind: str, who: str, text: str, note: str = "", *, badge: str = "") -> str:
    body = f"<pre>{esc(text)}</pre>" if text else ""
    return (f"<div class=\"turn {kind}\"><div class=\"who\">{esc(who)} {badge}"
            f"<small>{esc(note)}</small></div>{body}</div>")
