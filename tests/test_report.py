"""The HTML episode report (``cmat-gym eval --html FILE``): the dialogue of every episode, the summary table
and the success rate with its Wilson interval, hostile agent text escaped, one self-contained file that a real
browser (headless Chromium, where installed) renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from cmat_gym import cli
from cmat_gym.agents.policies import make_policy
from cmat_gym.evaluation import env_factory, run_episodes, summarize, wilson_interval
from cmat_gym.report import render_html, write_html

HOSTILE = '<script>alert("pwned")</script><img src=x onerror="alert(1)"> & </pre></div>'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class HostilePolicy:
    """Plays an action full of markup first (the DB grammar cannot parse it), then gives up with more markup."""

    def __init__(self) -> None:
        self.turns: dict[int, int] = {}

    def reset(self, slots: Sequence[int] | None = None) -> None:
        for slot in slots if slots is not None else list(self.turns):
            self.turns[slot] = 0

    def act(self, observations: list[str], slots: Sequence[int] | None = None) -> list[str]:
        actions = []
        for slot in slots if slots is not None else range(len(observations)):
            turn = self.turns.get(slot, 0)
            self.turns[slot] = turn + 1
            actions.append(HOSTILE if turn == 0 else f'Action: Answer\nFinal Answer: ["{HOSTILE}"]')
        return actions


@pytest.fixture(scope="module")
def hostile_page() -> str:
    results = run_episodes(env_factory("cmat/DB-v0", cmat=True), HostilePolicy(), 2, 0, progress=False, record=True)
    return render_html(results, title=f"run {HOSTILE}", description=HOSTILE)


def test_hostile_text_is_escaped(hostile_page: str) -> None:
    assert "<script" not in hostile_page.lower() and "<img" not in hostile_page.lower()
    assert "onerror=&quot;alert(1)&quot;" in hostile_page  # shown as text, not as an attribute
    assert hostile_page.count("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;") >= 4  # title, actions
    # the page's own structure is intact: one <pre> close per <pre> open, the injected ones are text
    assert hostile_page.count("<pre>") == hostile_page.count("</pre>")


def test_self_contained(hostile_page: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", hostile_page)
    assert "<link" not in hostile_page and "@import" not in hostile_page and "url(" not in hostile_page
    assert "default-src 'none'" in hostile_page  # no script could run even if escaping slipped


def test_dialogue_summary_and_interval() -> None:
    results = run_episodes(env_factory("cmat/DB-v0", cmat=True), make_policy("random", seed=3, domain="db"), 12, 0,
                           progress=False, record=True)
    page = render_html(results)
    summary = summarize(results)
    low, high = wilson_interval(summary["successes"], len(results))
    assert f"{summary['success_rate']:.3f}" in page and f"[{low:.3f}, {high:.3f}]" in page
    assert "95% Wilson interval" in page
    assert page.count('<section class="episode"') == len(results)
    assert page.count("<tr>") == len(results) + 1  # the header row and one row per episode
    steps = sum(r.steps for r in results)
    assert page.count('<div class="turn assistant">') == steps  # every action is shown
    rejections = sum(s.checker_verdict == "REJECT" for r in results for s in r.trajectory.steps)
    assert rejections > 0 and page.count('<span class="badge REJECT">') == rejections
    assert page.count('<div class="turn rejected">') == rejections  # the observation says "not executed"
    assert "not executed" in page and "reward 0" in page and "hindsight" in page


def test_cli_html_bare_env(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    assert cli.main(["eval", "--env", "cmat/DB-v0", "--policy", "oracle", "--episodes", "3", "--html", str(target)]) == 0
    page = target.read_text()
    assert "success rate (3/3)" in page and "policy oracle" in page
    assert 'class="badge' not in page  # no checker outside the CMAT loop
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temp file left behind


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (install it to render the report in a real browser)")
def test_chromium_renders_a_screenshot(tmp_path: Path) -> None:
    results = run_episodes(env_factory("cmat/DB-v0", cmat=True), HostilePolicy(), 1, 0, progress=False, record=True)
    page = write_html(results, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,800", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
