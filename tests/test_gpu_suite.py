"""benchmarks/gpu_suite.sh: part selection, and every command it runs names a script that exists.

The GPU itself is not needed: ``python3`` and ``nvidia-smi`` are replaced on PATH by stubs that record
their arguments, so this checks the shell script's own logic only.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_suite(tmp_path: Path, *parts: str) -> list[list[str]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python3", "nvidia-smi"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(tmp_path / "out"))
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), *parts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in log.read_text().splitlines() if line.startswith("python3 ")]


@pytest.mark.parametrize("parts, expected", [
    ((), ["benchmarks/rollout_throughput.py", "benchmarks/agentbench_table.py", "benchmarks/train_throughput.py",
          "algorithms.ppo_train"]),
    (("demo",), ["benchmarks/train_demo.py"]),
    (("cmat_loop", "rollout"), ["benchmarks/rollout_throughput.py", "benchmarks/agentbench_table.py"]),
])
def test_runs_the_chosen_parts_and_their_scripts_exist(tmp_path: Path, parts: tuple[str, ...],
                                                       expected: list[str]) -> None:
    calls = [c for c in run_suite(tmp_path, *parts) if c[1] != "-c"]  # the version print
    targets = [c[2] if c[1] == "-m" else c[1] for c in calls]
    assert targets == expected
    for target in targets:
        path = ROOT / (target.replace(".", "/") + ".py" if not target.endswith(".py") else target)
        assert path.is_file(), target


def test_the_demo_runs_the_gpu_preset_inside_its_time_limit(tmp_path: Path) -> None:
    """The demo part calls the GPU preset (3 seeds, the ablations, 200 held-out tasks) and stops itself before
    the suite's own kill at 570 s, so that its tables are still written."""
    (call,) = [c for c in run_suite(tmp_path, "demo") if c[1] != "-c"]
    assert call[1:] == ["benchmarks/train_demo.py", "--preset", "gpu", "--output-dir", "/tmp/demo",
                        "--time-limit", call[-1]]
    assert 0 < float(call[-1]) <= 570 - 30
    script = (ROOT / "benchmarks" / "gpu_suite.sh").read_text()
    assert "run demo 570 " in script
