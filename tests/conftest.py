"""Shared fixtures: the real AgentBench dev files, bundled with the package (``cmat_gym/data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmat_gym.data import agentbench_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def agentbench_path(*parts: str) -> Path:
    """The bundled AgentBench dev file ``parts`` names (``"dbbench", "dev.jsonl"``): always present,
    so no test skips for missing data."""
    return agentbench_file("/".join(parts))


@pytest.fixture
def agentbench_db_path() -> Path:
    """The AgentBench dbbench dev file (60 tasks), bundled with the package."""
    return agentbench_path("dbbench", "dev.jsonl")
