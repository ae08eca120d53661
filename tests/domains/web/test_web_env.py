"""WebEnv: WebShop's action language and text mode, invalid actions as observations, the same site in
process and over HTTP, per-session state, and clean server shutdown."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from cmat_gym.domains.web.env import GRAMMAR, WebEnv
from cmat_gym.domains.web.search import default_engine
from cmat_gym.domains.web.server import ShopServer
from cmat_gym.domains.web.shop import SEP, Shop, page_html, parse_page
from cmat_gym.domains.web.tasks import generate_task


def clickables(observation: str) -> list[str]:
    return json.loads(observation.rsplit("Available actions: ", 1)[1])["clickables"]


def test_search_page_is_webshop_text_mode() -> None:
    env = WebEnv()
    obs, info = env.reset(seed=0)
    assert obs.startswith(f"WebShop{SEP}Instruction:{SEP}{env.task.instruction}{SEP}Search")
    assert '"has_search_bar": true' in obs and clickables(obs) == []
    assert info["domain"] == "web"
    env.close()


def test_results_paging_item_subpages_and_back() -> None:
    env = WebEnv()
    env.reset(options={"task": generate_task(2, "train", 2)})
    obs, *_ = env.step("search[snack pack]")
    assert f"Back to Search{SEP}Page 1 (Total results: 50){SEP}Next >" in obs
    assert "< prev" not in clickables(obs) and len([c for c in clickables(obs) if c.startswith("b0")]) == 10
    obs, *_ = env.step("click[Next >]")
    assert "Page 2 (Total results: 50)" in obs and "< prev" in clickables(obs)
    obs, *_ = env.step("click[< Prev]")
    assert "Page 1 (Total results: 50)" in obs
    asin = next(c for c in clickables(obs) if c.startswith("b0"))
    obs, *_ = env.step(f"click[{asin}]")  # lower-case product ids, as WebShop lists them
    assert env.page.name == "item" and {"buy now", "description", "features", "reviews"} <= set(clickables(obs))
    for sub in ("Description", "features", "REVIEWS"):
        obs, *_ = env.step(f"click[{sub}]")
        assert env.page.name == "item_sub" and obs.startswith(f"Back to Search{SEP}< Prev{SEP}")
        env.step("click[< Prev]")
        assert env.page.name == "item"
    env.step("click[< Prev]")
    assert env.page.name == "results"
    obs, *_ = env.step("click[Back to Search]")
    assert env.page.name == "search" and obs.startswith("WebShop")
    env.close()


def test_invalid_actions_are_helpful_observations_that_change_nothing() -> None:
    env = WebEnv()
    env.reset(seed=4)
    obs, reward, terminated, _, info = env.step("click[Buy Now]")  # no item open yet
    assert obs.startswith("Error: invalid action") and not terminated and reward == 0.0
    assert info["error"] == "invalid_action" and env.page.name == "search"
    env.step("search[candle]")
    obs, *_, info = env.step("search[hoodie]")
    assert "no search bar" in obs and "click[Back to Search]" in obs and env.page.name == "results"
    obs, *_, info = env.step("click[Add to Cart]")
    assert "'Add to Cart' is not clickable" in obs and "back to search" in obs and info["error"] == "invalid_action"
    obs, *_, info = env.step("click[]")
    assert obs.startswith("Error") and info["error"] == "parse_error"
    env.close()


def test_json_tool_calls_and_options() -> None:
    env = WebEnv()
    task = generate_task(9, "test", 1)
    env.reset(options={"task": task})
    env.step(json.dumps({"tool": "search", "args": {"query": task.payload["title"]}}))
    env.step(json.dumps({"name": "click", "arguments": {"element": task.payload["asin"]}}))
    name, value = next(iter(task.payload["goal_options"].items()))
    obs, *_ = env.step(GRAMMAR.call_json("click", element=value))
    assert obs.startswith(f"You have clicked {value}.") and env.page.selected_options()[name] == value
    parsed = GRAMMAR.parse('{"tool": "click", "args": {"element": "buy now"}}')
    assert parsed.kind == "answer" and GRAMMAR.answer() == "click[Buy Now]"
    env.close()


def test_html_round_trips_to_the_same_page() -> None:
    shop = Shop()
    task = generate_task(1, "train", 3)
    shop.start("s1", task.instruction, task.payload)
    urls = ["/s1", "/s1/search?q=throw+pillow&page=3", f"/s1/item/{task.payload['asin']}",
            f"/s1/item/{task.payload['asin']}/reviews", "/s1/nope", "/nobody", "/s1/buy"]
    for url in urls:
        page = shop.get(url)
        assert parse_page(page_html(page)) == page, url


def test_hostile_urls_and_queries_are_pages_not_exceptions() -> None:
    shop = Shop()
    shop.start("s", "find x", generate_task(0, "train", 1).payload)
    for url in ("/s/search?q=" + "a" * 5000, "/s/search?q=%00%ff&page=-3", "/s/search?page=99999999999",
                "/s/item/../../etc/passwd", "/s/option/B0XXXX?name=size&value=x", "/" + "x" * 3000, "/s/item/a/b/c/d"):
        page = shop.get(url)
        assert page.name in ("results", "error")
    with pytest.raises(ValueError):
        shop.start("bad id!", "x", {})


def test_sessions_are_isolated_and_bounded() -> None:
    shop = Shop(max_sessions=3)
    t1, t2 = generate_task(1, "train", 1), generate_task(2, "train", 1)
    shop.start("a", t1.instruction, t1.payload)
    shop.start("b", t2.instruction, t2.payload)
    shop.get(f"/a/item/{t1.payload['asin']}")
    name, value = next(iter(t1.payload["goal_options"].items()))
    shop.get(f"/a/option/{t1.payload['asin']}?name={name}&value={value}")
    assert shop.quote("a")[1]["options_matched"] >= 1
    assert shop.quote("b") == (0.0, {"error": "no item is open"})  # b has no cart
    assert t2.instruction in shop.get("/b").text() and t1.instruction not in shop.get("/b").text()
    for sid in ("c", "d", "e"):
        shop.start(sid, "x", t1.payload)
    assert len(shop) == 3 and shop.get("/a").name == "error"  # the least recently used went first


def test_http_mode_sees_the_same_pages_and_reward_as_in_process() -> None:
    threads = threading.active_count()
    task = generate_task(21, "test", 3)
    actions = WebEnv.oracle_actions(task)
    runs = []
    for kwargs in ({}, {"serve": True}):
        env = WebEnv(**kwargs)
        observations = [env.reset(options={"task": task})[0]]
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            observations.append(obs)
        runs.append((observations, reward, info["success"]))
        if kwargs:
            assert env.server_url.startswith("http://127.0.0.1:")
            url = env.server_url
        env.close()
        env.close()  # idempotent
    assert runs[0] == runs[1] and runs[0][1] == 1.0
    with pytest.raises(httpx.HTTPError):  # the port is closed
        httpx.get(url, timeout=2)
    assert threading.active_count() == threads


def test_envs_share_one_served_shop_without_seeing_each_other() -> None:
    with ShopServer() as server:
        envs = [WebEnv(server_url=server.url) for _ in range(3)]
        tasks = [generate_task(s, "train", 2) for s in range(3)]
        for env, task in zip(envs, tasks, strict=True):
            obs, _ = env.reset(options={"task": task})
            assert task.instruction in obs
        assert len(server.shop) == 3
        for env, task in zip(envs, tasks, strict=True):
            for action in WebEnv.oracle_actions(task):
                _, reward, *_ = env.step(action)
            assert reward == 1.0
        for env in envs:
            env.close()
        assert len(server.shop) == 0  # close() ends its session on the server
        response = httpx.post(f"{server.url}/api/sessions/x", content=b"{" * 70_000)
        assert response.status_code == 413
        assert httpx.post(f"{server.url}/api/sessions/x", content=b"[]").status_code == 400
        assert httpx.get(f"{server.url}/nobody/search?q=x").status_code == 404


def test_search_is_bm25_over_the_catalogue() -> None:
    engine = default_engine()
    hits = engine.search("gluten free vegan snack pack")
    assert len(hits) == 50 and engine.products[hits[0]].query == "snack pack"
    assert engine.search("the of and") == () and engine.search("") == ()
    assert engine.search("gluten free vegan snack pack") == hits  # deterministic (and cached)
