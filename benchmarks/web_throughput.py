"""Web-v0 throughput under the oracle, against a direct call of the shop's handler in the same run.

    python benchmarks/web_throughput.py [--episodes 60] [--repeats 5] [--http-episodes 10] [--json out.json]

What is measured:

* **step**: ``env.step(action)`` for each action of the oracle's episodes (in process, the default
  transport): parsing the action, checking it against the page, calling the shop, WebShop's text
  mode, sanitising, the info dict. Baseline: the SAME page requests made directly on the app's
  handler, ``Shop.get(url)`` (the URL each click's link or the search form names, found before
  timing), on a fresh session of its own. Each episode is replayed ``--repeats`` times, env and
  baseline alternating; each step gets the median of its repeats on both sides; the ratio is the
  median over steps of (env / handler), over every step; each kind (search, click, Buy Now) is also
  shown apart (Buy Now: the env also reads the purchase's reward parts).
* **reset**: ``env.reset(options={"task_index": i})``: generate the task, end the last session, start
  one, fetch the search page. The catalogue and the BM25 index are built once per process before
  timing (their one-off cost is printed).
* **search engine**: BM25 with ``bm25s`` (the shop's) against SQLite FTS5 (``MATCH ... ORDER BY
  bm25``, OR of the query's words) on the same documents and queries: why bm25s was picked.
* **over HTTP** (information): the same steps and resets with ``serve=True`` (uvicorn on loopback in a
  thread of the same process, HTML parsed back).

Targets (Web issue): median step <= 2x the direct handler call; median reset <= 20 ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import time
from typing import Any
from urllib.parse import urlencode

from cmat_gym.domains.web.catalogue import catalogue
from cmat_gym.domains.web.env import GRAMMAR, WebEnv, element_name, normalize_query
from cmat_gym.domains.web.search import TOP_N, default_engine
from cmat_gym.domains.web.shop import BUY_NOW, Shop

STEP_RATIO_TARGET = 2.0
RESET_TARGET_MS = 20.0


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def episode_urls(shop: Shop, sid: str, actions: list[str]) -> list[str]:
    """The URL each action requests (found by playing the episode once on ``shop``, untimed)."""
    page = shop.get(f"/{sid}")
    urls = []
    for action in actions:
        parsed = GRAMMAR.parse(action)
        if parsed.tool == "search":
            form = next(e for e in page.elements if e.kind == "search")
            url = f"{form.href}?{urlencode({'q': normalize_query(parsed.args['query'])})}"
        else:
            name = element_name(parsed)
            clickables = page.clickables()
            url = (clickables.get(name) or clickables[name.lower()]).href
        urls.append(url)
        page = shop.get(url)
    return urls


def measure_steps(episodes: int, repeats: int) -> dict[str, Any]:
    shop = Shop()
    env = WebEnv(shop=shop)  # the same shop object serves both sides
    env_times: dict[tuple[int, int], list[float]] = {}
    base_times: dict[tuple[int, int], list[float]] = {}
    kinds: dict[tuple[int, int], str] = {}
    for i in range(episodes):
        env.reset(options={"task_index": i})
        task = env.task
        actions = WebEnv.oracle_actions(task)
        shop.start("bench", task.instruction, task.payload)
        urls = [u.replace("/bench", "/{sid}", 1) for u in episode_urls(shop, "bench", actions)]
        for r in range(repeats):
            env.reset(options={"task": task})
            for j, action in enumerate(actions):
                t = time.perf_counter()
                env.step(action)
                env_times.setdefault((i, j), []).append(time.perf_counter() - t)
                kinds[(i, j)] = "buy" if action == GRAMMAR.call("click", BUY_NOW) else GRAMMAR.parse(action).tool
            sid = f"base{r}"
            shop.start(sid, task.instruction, task.payload)
            shop.get(f"/{sid}")
            for j, url in enumerate(urls):
                url = url.replace("{sid}", sid, 1)
                t = time.perf_counter()
                shop.get(url)
                base_times.setdefault((i, j), []).append(time.perf_counter() - t)
            shop.end(sid)
    env.close()
    ratios = {k: statistics.median(env_times[k]) / statistics.median(base_times[k]) for k in env_times}
    by_kind: dict[str, Any] = {}
    for kind in ("search", "click", "buy"):
        keys = [k for k in ratios if kinds[k] == kind]
        by_kind[kind] = {"steps": len(keys),
                         "env_ms": statistics.median(statistics.median(env_times[k]) for k in keys) * 1e3,
                         "handler_ms": statistics.median(statistics.median(base_times[k]) for k in keys) * 1e3,
                         "ratio": statistics.median(ratios[k] for k in keys)}
    non_buy = [r for k, r in ratios.items() if kinds[k] != "buy"]
    return {"ratio_median": statistics.median(non_buy), "ratio_all_median": statistics.median(ratios.values()),
            "by_kind": by_kind, "steps": len(ratios),
            "env_step_ms": median_ms([statistics.median(v) for v in env_times.values()]),
            "handler_ms": median_ms([statistics.median(v) for v in base_times.values()])}


def measure_resets(n: int) -> dict[str, Any]:
    env = WebEnv()
    times = []
    for i in range(n):
        t = time.perf_counter()
        env.reset(options={"task_index": i})
        times.append(time.perf_counter() - t)
    env.close()
    return {"resets": n, "reset_ms_median": median_ms(times), "reset_ms_p90": statistics.quantiles(times, n=10)[-1] * 1e3}


def measure_search(queries: list[str]) -> dict[str, Any]:
    engine = default_engine()
    products = engine.products
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    db.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", [(i, p.search_text()) for i, p in enumerate(products)])
    fts_queries = [" OR ".join(f'"{w}"' for w in engine.tokens(q)) for q in queries]
    out: dict[str, Any] = {}
    for name, run in (
        ("bm25s", lambda i: engine.scores(queries[i])),
        ("fts5", lambda i: db.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?",
                                      (fts_queries[i], TOP_N)).fetchall()),
    ):
        times = []
        for _ in range(3):
            for i in range(len(queries)):
                t = time.perf_counter()
                run(i)
                times.append(time.perf_counter() - t)
        out[name] = median_ms(times)
    # the shop's full query path (tokenise, score, stable sort), cache disabled
    times = []
    for q in queries:
        engine.clear_cache()
        t = time.perf_counter()
        engine.search(q)
        times.append(time.perf_counter() - t)
    out["shop_search_uncached"] = median_ms(times)
    db.close()
    return out


def measure_http(episodes: int) -> dict[str, Any]:
    env = WebEnv(serve=True)
    times, resets = [], []
    for i in range(episodes):
        t = time.perf_counter()
        env.reset(options={"task_index": i})
        resets.append(time.perf_counter() - t)
        for action in WebEnv.oracle_actions(env.task):
            t = time.perf_counter()
            env.step(action)
            times.append(time.perf_counter() - t)
    env.close()
    return {"http_step_ms_median": median_ms(times), "steps": len(times), "http_reset_ms_median": median_ms(resets),
            "resets": len(resets)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resets", type=int, default=300)
    parser.add_argument("--http-episodes", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    t = time.perf_counter()
    catalogue()
    build_catalogue = time.perf_counter() - t
    default_engine()
    build_index = time.perf_counter() - t - build_catalogue
    print(f"# Web-v0 throughput ({platform.python_version()}, {platform.machine()}; a shared machine: timings are noisy)")
    print(f"one-off: catalogue {len(catalogue())} products {build_catalogue * 1e3:.0f} ms, "
          f"BM25 index {build_index * 1e3:.0f} ms")

    search = measure_search([p.title for p in catalogue()[::7]] + [f"{p.query} {' '.join(p.attributes)}" for p in catalogue()[::11]])
    print(f"search, median per query: bm25s scoring {search['bm25s']:.3f} ms | SQLite FTS5 {search['fts5']:.3f} ms | "
          f"the shop's search (tokenise+score+stable sort, uncached) {search['shop_search_uncached']:.3f} ms")

    steps = measure_steps(args.episodes, args.repeats)
    resets = measure_resets(args.resets)
    http = measure_http(args.http_episodes)
    print("\n| measure | ours (env) | baseline (handler called directly) | ratio | target | result |")
    print("|---|---|---|---|---|---|")
    for kind, row in steps["by_kind"].items():
        print(f"| step: {kind} ({row['steps']} steps) | {row['env_ms']:.3f} ms | {row['handler_ms']:.3f} ms | "
              f"{row['ratio']:.2f}x | | |")
    verdict = "PASS" if steps["ratio_all_median"] <= STEP_RATIO_TARGET else "FAIL"
    print(f"| step (every step, Buy Now included), median ratio | {steps['env_step_ms']:.3f} ms | "
          f"{steps['handler_ms']:.3f} ms | {steps['ratio_all_median']:.2f}x | <= {STEP_RATIO_TARGET:.0f}x | {verdict} |")
    verdict = "PASS" if resets["reset_ms_median"] <= RESET_TARGET_MS else "FAIL"
    print(f"| reset, median ({resets['resets']}) | {resets['reset_ms_median']:.3f} ms (p90 {resets['reset_ms_p90']:.3f}) "
          f"| | | <= {RESET_TARGET_MS:.0f} ms | {verdict} |")
    print(f"| step over HTTP (serve=True), median ({http['steps']}) | {http['http_step_ms_median']:.3f} ms | | | "
          f"(information) | |")
    print(f"| reset over HTTP (serve=True), median ({http['resets']}) | {http['http_reset_ms_median']:.3f} ms | | | "
          f"(information) | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"search": search, "steps": steps, "resets": resets, "http": http}, f, indent=2)


if __name__ == "__main__":
    main()
