"""Soak and crash tests: long runs keep memory and file descriptors flat, every registered env
survives a flood of garbage actions, and a PPO run killed with SIGKILL mid-iteration resumes to the
same metrics as an uninterrupted run. The default run keeps short versions; ``-m slow`` runs the
full sizes (10,000 episodes, 10,000 actions per env)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from env_suite import check_garbage_actions

from cmat_gym.core.domain import Domain, registered_domains

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("soak_bench", REPO / "benchmarks" / "soak.py")
soak_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak_bench)


def test_short_soak_keeps_fds_and_rss_flat(tmp_path: Path) -> None:
    off = soak_bench.soak("cmat/DB-v0", 400, "random", "rule", None, every=100)
    assert off["fds_end"] == off["fds_start"]
    assert off["rss_end_kib"] - off["rss_start_kib"] < 8 * 1024  # no leak of envs, results or observations
    on = soak_bench.soak("cmat/DB-v0", 300, "random", "rule", tmp_path / "m.sqlite", every=100)
    assert on["fds_end"] == on["fds_start"] and on["reflections"] > 100


def _children() -> list[int]:
    """Pids of this process's live child processes (a sandbox left running would be one)."""
    mine = str(os.getpid())
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == mine and fields[0] != "Z":
                found.append(int(name))
    return found


@pytest.mark.parametrize("episodes", [pytest.param(40, id="short"),
                                      pytest.param(1000, id="1000", marks=pytest.mark.slow)])
def test_os_soak_leaks_no_process_fd_or_mount(episodes: int, tmp_path: Path) -> None:
    from cmat_gym.domains.os.backend import is_available

    if not is_available():
        pytest.skip("bubblewrap sandbox unavailable")
    from cmat_gym.domains.os.tasks import generate_task

    generate_task(0, "train", 1)  # the generator keeps one sandbox (and its spare) for the process's life
    baseline = len(_children())
    summary = soak_bench.soak("cmat/OS-v0", episodes, "random", "rule", tmp_path / "m.sqlite",
                              every=max(1, episodes // 4))
    # A spare sandbox may be mid-build when a sample is taken (a few fds, a bwrap or two): the bounds
    # allow that, while a leak per episode would add dozens over the run.
    assert summary["fds_end"] - summary["fds_start"] <= 8 and summary["mounts_end"] == summary["mounts_start"]
    assert len(_children()) <= baseline + 2  # the env is closed: none of its sandboxes outlived it


@pytest.mark.slow
def test_ten_thousand_episodes_with_memory_on(tmp_path: Path) -> None:
    summary = soak_bench.soak("cmat/DB-v0", 10_000, "random", "rule", tmp_path / "m.sqlite", every=1000)
    assert summary["fds_end"] == summary["fds_start"]
    # What the run keeps is the store's in-memory BM25 index, a few KiB per reflection (see
    # benchmarks/soak.py); anything far above that is a leak.
    assert summary["rss_slope_kib_per_1000_episodes"] < 12 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("domain", registered_domains(), ids=lambda d: d.title)
def test_ten_thousand_garbage_actions_per_env(domain: Domain) -> None:
    check_garbage_actions(domain, n_random=10_000, seed=7)


def _ppo_command(out: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "algorithms.ppo_train", "--model", "tiny-random", "--device", "cpu",
            "--episodes-per-iteration", "2", "--max-turns", "2", "--max-new-tokens", "8", "--checker", "none",
            "--checker-weight", "0.5", "--max-seq-len", "1024", "--minibatch-size", "2", "--micro-batch-size", "1",
            "--ppo-epochs", "2", "--learning-rate", "1e-3", "--no-progress", "--seed", "3",
            "--iterations", str(iterations), "--output-dir", str(out), *extra]


def _metrics(out: Path) -> list[dict]:
    timing = {"rollout_s", "update_s", "score_s", "tokens_per_s", "eval_s"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in timing} for row in rows]


@pytest.mark.slow
def test_ppo_killed_mid_iteration_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(_ppo_command(tmp_path / "full", 3), check=True, env=env, cwd=REPO, timeout=600,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_ppo_command(killed, 3), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        # Wait until iteration 1 is on disk, then kill the run during iteration 2.
        while not ((killed / "metrics.jsonl").is_file() and (killed / "metrics.jsonl").read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    subprocess.run(_ppo_command(killed, 3, "--resume"), check=True, env=env, cwd=REPO, timeout=600,
                   capture_output=True)
    assert _metrics(killed) == _metrics(tmp_path / "full")
