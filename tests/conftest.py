"""Shared fixtures: where the real AgentBench data lives (skip when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def agentbench_path(*parts: str) -> Path:
    """The path of an AgentBench dev file under ``<repo>/../shared/agentbench``, or skip the test."""
    path = SHARED.joinpath("agentbench", *parts)
    if not path.is_file():
        pytest.skip(f"AgentBench data not found at {path} (needs ../shared next to the repo)")
    return path


@pytest.fixture
def agentbench_db_path() -> Path:
    """The AgentBench dbbench dev file (60 tasks), or skip when ``../shared`` is absent."""
    return agentbench_path("dbbench", "dev.jsonl")
