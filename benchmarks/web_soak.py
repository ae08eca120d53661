"""Soak: many Web-v0 episodes against ONE served shop; the server's memory must stay flat.

    python benchmarks/web_soak.py [--episodes 10000] [--clients 4] [--abandon 0.05] [--every 1000] [--json out.json]

The shop runs as its own process (``cmat_gym.domains.web.server.main`` with port 0: uvicorn on a loopback
port), so its resident memory is measured alone (``/proc/<pid>/statm``), with its open file
descriptors. ``--clients`` envs (``WebEnv(server_url=...)``) share it, round-robin; each episode is
the oracle's (search, result pages, item, options, Buy Now) or, every 4th, the random agent's
(invalid clicks, searches, sub-pages), so every route runs. A fraction ``--abandon`` of the episodes
are also opened by a client that never says goodbye (a session started over the API and left):
the shop's LRU cap (4,096 live sessions) must bound them.

Flat means: after warm-up (the first 10% of episodes) the server's RSS grows less than
``--max-growth-mib`` from its warm-up level to the end, and its fd count ends no higher than the
highest count seen in the first half of the run (idle keep-alive connections closed by the server
and reopened by a client move it by one or two; a leak grows without bound). Baseline
(same run): the server's RSS right after it started, before any episode. Every ``--every`` episodes a
line shows episodes, RSS, fds and live sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cmat_gym.agents.policies import RandomPolicy
from cmat_gym.domains.web.env import WebEnv

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server() -> tuple[subprocess.Popen[str], str]:
    """The shop in its own process; returns it and its URL."""
    proc = subprocess.Popen([sys.executable, "-c", "from cmat_gym.domains.web.server import main; main()", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the shop did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0]


def live_sessions(client: httpx.Client) -> int:
    return int(client.get("/api/stats").json()["sessions"])


def run(episodes: int, clients: int, abandon: float, every: int, seed: int = 0) -> dict[str, Any]:
    proc, url = start_server()
    try:
        pid = proc.pid
        start_rss, start_fds = rss_mib(pid), fds(pid)
        envs = [WebEnv(server_url=url) for _ in range(clients)]
        policy = RandomPolicy(seed, domain="web")
        rng = random.Random(seed)
        raw = httpx.Client(base_url=url)
        samples: list[dict[str, Any]] = []
        warm: dict[str, Any] | None = None
        successes = oracle_episodes = 0
        t0 = time.perf_counter()
        for i in range(episodes):
            env = envs[i % clients]
            obs, _ = env.reset(options={"task_index": i})
            if i % 4 == 3:  # the random agent
                policy.reset([0])
                done = False
                while not done:
                    obs, _, terminated, truncated, _ = env.step(policy.act([obs])[0])
                    done = terminated or truncated
            else:
                oracle_episodes += 1
                for action in WebEnv.oracle_actions(env.task):
                    _, reward, *_ = env.step(action)
                successes += reward == 1.0
            if rng.random() < abandon:  # a client that never ends its session
                raw.post(f"/api/sessions/gone{i}", json={"instruction": env.task.instruction,
                                                          "goal": dict(env.task.payload)})
                raw.get(f"/gone{i}/search", params={"q": env.task.payload["query"]})
            if (i + 1) % every == 0 or i + 1 == episodes or i + 1 == max(1, episodes // 10):
                sample = {"episodes": i + 1, "rss_mib": rss_mib(pid), "fds": fds(pid), "sessions": live_sessions(raw),
                          "seconds": time.perf_counter() - t0}
                if i + 1 == max(1, episodes // 10):
                    warm = sample
                if (i + 1) % every == 0 or i + 1 == episodes:
                    samples.append(sample)
                    print(f"  {sample['episodes']:>6} episodes  server RSS {sample['rss_mib']:7.1f} MiB  "
                          f"fds {sample['fds']:3d}  live sessions {sample['sessions']:5d}  "
                          f"{sample['seconds']:6.0f} s", flush=True)
        for env in envs:
            env.close()
        end = samples[-1]
        after_close = live_sessions(raw)
        raw.close()
        return {"episodes": episodes, "clients": clients, "abandon": abandon, "start_rss_mib": start_rss,
                "start_fds": start_fds, "warm": warm, "end": end, "samples": samples,
                "oracle_success_rate": successes / max(1, oracle_episodes),
                "sessions_after_close": after_close}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--abandon", type=float, default=0.05)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--max-growth-mib", type=float, default=8.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    print(f"# Web-v0 soak: {args.episodes} episodes, {args.clients} clients, one served shop "
          f"({platform.python_version()}; a shared machine)")
    result = run(args.episodes, args.clients, args.abandon, args.every)
    warm, end = result["warm"], result["end"]
    growth = end["rss_mib"] - warm["rss_mib"]
    # fds vary by one or two as idle keep-alive connections are closed by the server and reopened
    # by a client: a leak shows as the end above every count seen in the first half of the run.
    first_half = [s["fds"] for s in result["samples"] if s["episodes"] <= args.episodes // 2] + [warm["fds"]]
    flat = growth < args.max_growth_mib and end["fds"] <= max(first_half)
    print(f"\nserver RSS: at start {result['start_rss_mib']:.1f} MiB (baseline, no episode yet) | after warm-up "
          f"({warm['episodes']} episodes) {warm['rss_mib']:.1f} MiB | at the end ({end['episodes']}) "
          f"{end['rss_mib']:.1f} MiB | growth after warm-up {growth:+.1f} MiB (limit {args.max_growth_mib:g})")
    print(f"server fds: start {result['start_fds']}, warm {warm['fds']}, first-half max {max(first_half)}, "
          f"end {end['fds']}; live sessions at the end "
          f"{end['sessions']} (abandoned ones, capped at 4096), after the clients closed {result['sessions_after_close']}")
    print(f"oracle success rate {result['oracle_success_rate']:.3f}; "
          f"{end['episodes'] / end['seconds']:.1f} episodes/s")
    print(f"flat memory: {'PASS' if flat else 'FAIL'}")
    result["growth_mib"], result["flat"] = growth, flat
    result["fds_first_half_max"] = max(first_half)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
