"""The AgentBench dev splits bundled in ``cmat_gym/data`` and the ``agentbench:`` task-file scheme."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import pytest

import cmat_gym
from cmat_gym import cli
from cmat_gym.data import AGENTBENCH_DIR, agentbench_file, agentbench_splits, resolve_task_file

REPO = Path(__file__).resolve().parents[1]
# (spec, file, tasks in it): the counts are AgentBench's published dev sizes.
SPLITS = [("dbbench/dev", "dbbench/dev.jsonl", 60), ("os_interaction/dev", "os_interaction/dev.json", 26),
          ("knowledgegraph/dev", "knowledgegraph/dev.json", 20)]


def count_records(path: Path) -> int:
    text = path.read_text(encoding="utf-8")
    return len(json.loads(text)) if text.lstrip().startswith("[") else sum(1 for line in text.splitlines() if line.strip())


@pytest.mark.parametrize(("spec", "file", "count"), SPLITS)
def test_every_split_resolves_with_or_without_extension(spec: str, file: str, count: int) -> None:
    path = agentbench_file(spec)
    assert path == AGENTBENCH_DIR / file and agentbench_file(file) == path
    assert resolve_task_file(f"agentbench:{spec}") == str(path)
    assert count_records(path) == count
    assert spec in agentbench_splits()


def test_plain_paths_pass_through_and_unknown_splits_list_the_bundled_ones(tmp_path: Path) -> None:
    assert resolve_task_file(tmp_path / "x.json") == str(tmp_path / "x.json")
    for bad in ("agentbench:nope/dev", "agentbench:../../core/env.py", "agentbench:/etc/passwd", "agentbench:"):
        with pytest.raises(FileNotFoundError, match="agentbench:dbbench/dev"):
            resolve_task_file(bad)


def test_the_license_notice_ships_with_the_data() -> None:
    notice = (AGENTBENCH_DIR / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "github.com/THUDM/AgentBench" in notice
    assert "Apache License" in (AGENTBENCH_DIR / "LICENSE").read_text()
    assert "cmat_gym/data/agentbench" in (REPO / "NOTICE").read_text()


@pytest.mark.parametrize(("env_id", "spec", "count"), [("cmat/DB-v0", "agentbench:dbbench/dev", 60),
                                                       ("cmat/OS-v0", "agentbench:os_interaction/dev", 26)])
def test_gym_make_takes_the_scheme(env_id: str, spec: str, count: int) -> None:
    cmat_gym.register_envs()
    env = gym.make(env_id, tasks=spec)
    try:
        assert env.unwrapped.num_tasks == count
        obs, info = env.reset(seed=0, options={"task_index": 0})
        assert obs and info["task_id"].endswith("/0")
    finally:
        env.close()


def test_cli_eval_oracle_on_the_bundled_dbbench_split(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["eval", "--env", "cmat/DB-v0", "--tasks", "agentbench:dbbench/dev", "--policy", "oracle",
                       "--episodes", "6", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 6 and report["success_rate"] == 1.0
    assert [r["task_id"] for r in report["results"]][:2] == ["dbbench/dev.jsonl/0", "dbbench/dev.jsonl/1"]
    assert cli.main(["eval", "--tasks", "agentbench:dbbench/test", "--policy", "oracle"]) == 2
    assert "no bundled AgentBench split" in capsys.readouterr().err


def test_the_wheel_carries_the_data(tmp_path: Path) -> None:
    """A built wheel holds the three splits, their NOTICE and LICENSE, and py.typed (package-data)."""
    pytest.importorskip("setuptools")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and others share the tree.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("cmat_gym", "algorithms"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("cmat_gym-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for _, file, _ in SPLITS:
        member = f"cmat_gym/data/agentbench/{file}"
        assert member in names
        digest = hashlib.sha256(zipfile.ZipFile(wheel).read(member)).hexdigest()
        assert digest == hashlib.sha256((AGENTBENCH_DIR / file).read_bytes()).hexdigest()
    assert {"cmat_gym/data/agentbench/NOTICE", "cmat_gym/data/agentbench/LICENSE", "cmat_gym/py.typed"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
