"""Soak: many episodes through the CMAT loop with reflection memory on; resident memory and file
descriptors must stay flat.

    python benchmarks/soak.py [--env cmat/DB-v0] [--episodes 10000] [--policy random] [--checker rule]
                              [--memory-path runs/soak.sqlite] [--every 1000] [--json out.json]

One env (``make_cmat(env, checker=..., memory=<a file-backed ReflectionStore>)``) plays
``--episodes`` episodes with a seeded random agent, so most episodes fail and write a reflection
that later episodes retrieve: the loop, the checker, the store's writes (WAL, fsync per reflection)
and its BM25 search all run every episode. Every ``--every`` episodes it prints resident memory
(``/proc/self/statm``), open file descriptors (``/proc/self/fd``) and the store's size.

For ``--env cmat/OS-v0`` every episode is a fresh bubblewrap sandbox running the random agent's
commands: the host's process count and this process's mounts are sampled too (a sandbox that
outlived its episode, or a mount that leaked out of one, would show there).

What "flat" means: the file descriptor count must not change after warm-up, and RSS may grow only
with what the run legitimately keeps, the store's in-memory BM25 index (one entry per reflection);
the script reports the RSS slope over the second half of the run in KiB per 1,000 episodes. Leaks
of envs, sandboxes, connections or observations would show as a slope far above that and as
growing fd counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.agents.policies import make_policy
from cmat_gym.cmat.memory import ReflectionStore
from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.core.domain import domain_of_env
from cmat_gym.evaluation import run_episodes

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_KIB


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


SANDBOX_UIDS = 1 << 30  # OS-v0 sandboxes run as host uids from here up (cmat_gym/domains/os/backend.py)


def host_processes() -> int:
    """How many host processes run as sandbox uids: the live sandbox (and its prebuilt spare) only;
    a sandbox that outlived its episode would add to it."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid >= SANDBOX_UIDS:
                    count += 1
            except OSError:  # the process ended meanwhile
                pass
    return count


def host_mounts() -> int:
    """How many mounts this process sees (sandbox mounts live in their own namespaces: this must not grow)."""
    with open("/proc/self/mountinfo") as handle:
        return sum(1 for _ in handle)


def soak(env_id: str, episodes: int, policy_name: str, checker: str, memory_path: Path | None, every: int,
         seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Play the episodes in chunks of ``every``; one sample of RSS, fds and store size per chunk
    (``memory_path`` None: memory off, the baseline that shows what the store itself costs)."""
    store = ReflectionStore(memory_path, mode="rw") if memory_path is not None else None
    env = make_cmat(env_id, checker=checker, memory=store)
    policy = make_policy(policy_name, seed=seed, domain=domain_of_env(env_id).name)
    samples = []
    started = time.perf_counter()
    done = successes = 0
    try:
        while done < episodes:
            n = min(every, episodes - done)
            results = run_episodes(env, policy, n, seed + done, progress=progress)
            done += n
            successes += sum(r.success for r in results)
            gc.collect()
            samples.append({"episodes": done, "rss_kib": rss_kib(), "open_fds": open_fds(),
                            "host_processes": host_processes(), "mounts": host_mounts(),
                            "reflections": len(store) if store is not None else 0, "elapsed_s": time.perf_counter() - started})
            s = samples[-1]
            print(f"{done:>7} episodes  rss {s['rss_kib'] / 1024:8.1f} MiB  fds {s['open_fds']:>4}  "
                  f"sandbox processes {s['host_processes']:>4}  mounts {s['mounts']:>3}  "
                  f"reflections {s['reflections']:>6}  {s['elapsed_s']:7.1f} s", flush=True)
    finally:
        env.close()
        if store is not None:
            store.close()
    half = samples[len(samples) // 2:]
    slope = 0.0
    if len(half) >= 2 and half[-1]["episodes"] > half[0]["episodes"]:
        slope = (half[-1]["rss_kib"] - half[0]["rss_kib"]) / (half[-1]["episodes"] - half[0]["episodes"]) * 1000
    return {"env": env_id, "episodes": done, "successes": successes, "samples": samples,
            "rss_start_kib": samples[0]["rss_kib"], "rss_end_kib": samples[-1]["rss_kib"],
            "rss_slope_kib_per_1000_episodes": slope,
            "fds_start": samples[0]["open_fds"], "fds_end": samples[-1]["open_fds"],
            "processes_start": samples[0]["host_processes"], "processes_end": samples[-1]["host_processes"],
            "mounts_start": samples[0]["mounts"], "mounts_end": samples[-1]["mounts"],
            "reflections": samples[-1]["reflections"], "wall_s": samples[-1]["elapsed_s"]}


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cmat/DB-v0")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--policy", default="random")
    parser.add_argument("--checker", default="rule", choices=("rule", "none"))
    parser.add_argument("--memory", default="on", choices=("on", "off"), help="reflection memory (off: the baseline)")
    parser.add_argument("--memory-path", type=Path, default=None, help="the store's file (default: a temp file)")
    parser.add_argument("--every", type=int, default=1000, help="episodes between samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.every < 1:
        parser.error("--episodes and --every must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        path = (args.memory_path or Path(tmp) / "soak.sqlite") if args.memory == "on" else None
        print(f"command: python benchmarks/soak.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        summary = soak(args.env, args.episodes, args.policy, args.checker, path, args.every, args.seed)
    print(f"\n{summary['episodes']} episodes of {summary['env']} through the CMAT loop ({args.checker} checker, "
          f"memory {args.memory}, {args.policy} agent) in {summary['wall_s']:.1f} s; {summary['reflections']} reflections written")
    print(f"RSS {summary['rss_start_kib'] / 1024:.1f} -> {summary['rss_end_kib'] / 1024:.1f} MiB "
          f"(after the first {args.every} episodes -> end); slope over the second half "
          f"{summary['rss_slope_kib_per_1000_episodes']:.0f} KiB per 1,000 episodes")
    print(f"open file descriptors {summary['fds_start']} -> {summary['fds_end']}; sandbox processes "
          f"{summary['processes_start']} -> {summary['processes_end']}; mounts {summary['mounts_start']} -> "
          f"{summary['mounts_end']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
