"""Install polish: licence files, package metadata, and one clear line when the [train] extra is missing."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Runs the CLI with the named modules made unimportable, as on an install without the [train] extra.
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from cmat_gym.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *argv], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.mark.parametrize("argv", [
    ("eval", "--policy", "tiny-random", "--episodes", "1"),
    ("eval", "--policy", "random", "--episodes", "1", "--cmat", "--checker", "llm"),
    ("serve", "--model", "tiny-random"),
])
def test_a_missing_train_extra_is_one_line_not_a_traceback(argv: tuple[str, ...]) -> None:
    result = run_without("torch", *argv)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "pip install 'cmat-gym[train]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_light_policies_need_no_torch() -> None:
    result = run_without("torch,transformers", "eval", "--policy", "oracle", "--tasks", "agentbench:dbbench/dev",
                         "--episodes", "2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"success_rate": 1.0' in result.stdout


def test_licence_files_and_typing_marker() -> None:
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    assert "AgentBench" in (REPO / "NOTICE").read_text()
    assert (REPO / "cmat_gym" / "py.typed").is_file()
    project = PYPROJECT["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Typing :: Typed" in project["classifiers"]
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]


def test_the_installed_trl_meets_the_floor() -> None:
    """The [train] floor of trl is a release this environment really has (the one the tests run with)."""
    (spec,) = [s for s in PYPROJECT["project"]["optional-dependencies"]["train"] if s.startswith("trl")]
    floor = tuple(int(p) for p in spec.split(">=")[1].split("."))
    try:
        installed = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("trl is not installed (the [train] extra)")
    assert tuple(int(p) for p in installed.split(".")[:len(floor)]) >= floor
