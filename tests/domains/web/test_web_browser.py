"""The browser check: the shop served on a loopback port, the oracle's episode played in headless
Chromium (real DOM clicks on links, the search form typed into and submitted), every page equal to
the text-mode env's, the same reward, and a screenshot saved."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from chromium_cdp import CHROMIUM, Chromium

from cmat_gym.domains.web.env import GRAMMAR, WebEnv
from cmat_gym.domains.web.server import ShopServer
from cmat_gym.domains.web.shop import parse_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (the Makefile installs "
                                                          "Debian's chromium when run as root)")


def play_in_browser(browser: Chromium, base_url: str, sid: str, actions: list[str]) -> list[str]:
    """Play ``actions`` (WebShop text actions) in the browser; the text-mode page after each."""
    browser.goto(f"{base_url}/{sid}")
    pages = [parse_page(browser.html()).text()]
    for action in actions:
        parsed = GRAMMAR.parse(action)
        if parsed.tool == "search":
            browser.search(parsed.args["query"])
        else:
            browser.click(parsed.args["element"])
        pages.append(parse_page(browser.html()).text())
    return pages


def test_oracle_episode_in_chromium_matches_text_mode(tmp_path: Path) -> None:
    task = WebEnv.generate_task(11, "test", 3)
    actions = WebEnv.oracle_actions(task)
    # ---- text mode, in process
    env = WebEnv()
    env.reset(options={"task": task})
    text_pages = [env.page.text()]
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        text_pages.append(env.page.text())
    env.close()
    assert terminated and reward == 1.0 and info["success"]
    # ---- the same episode in a browser against the served shop
    with ShopServer() as server:
        httpx.post(f"{server.url}/api/sessions/browser1",
                   json={"instruction": task.instruction, "goal": dict(task.payload)}).raise_for_status()
        browser = Chromium()
        try:
            browser_pages = play_in_browser(browser, server.url, "browser1", actions[:-1])
            shot = tmp_path / "web_item_page.png"
            browser.screenshot(str(shot))
            browser.click("Buy Now")
            done = parse_page(browser.html())
        finally:
            browser.close()
    assert browser_pages == text_pages[:-1]
    assert done.text() == text_pages[-1]
    assert done.reward == reward
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
