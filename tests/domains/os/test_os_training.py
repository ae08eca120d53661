"""OS-v0 through the training paths the kit gives every domain: checker-aware SFT data from oracle
episodes in the CMAT loop, and one PPO iteration of the tiny model (the sandbox runs its commands)."""

from __future__ import annotations

from pathlib import Path

import pytest
from env_suite import check_tiny_ppo_iteration

from cmat_gym.core.domain import get_domain
from cmat_gym.domains.os.backend import is_available

pytestmark = pytest.mark.skipif(not is_available(), reason="bubblewrap sandbox unavailable")


def test_sft_data_from_oracle_episodes_with_recovery_turns() -> None:
    pytest.importorskip("trl")
    from algorithms.sft_train import Args, collect

    records, stats = collect(Args(env="cmat/OS-v0", model="tiny-random", progress=False, episodes=4,
                                  recovery_fraction=1.0, reflection_fraction=0.0, reflection_sources=0))
    assert records, stats
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles[0] == "system" and "Act: bash" in record["messages"][0]["content"]
        assert "assistant" in roles
    # OS has no flawed-action generator of its own: the generic one (a malformed action) is played,
    # kept out of the loss (flawed_turns), and the oracle's action follows it
    flawed = [r for r in records if r["flawed_turns"]]
    assert flawed and all(r["flaw"] == "malformed" for r in flawed)
    for record in flawed:
        index = record["flawed_turns"][0]
        assert record["messages"][index]["role"] == "assistant"
        assert record["messages"][index + 1]["content"].startswith("Error")  # the rejection or parse error


def test_one_tiny_model_ppo_iteration_on_os(tmp_path: Path) -> None:
    check_tiny_ppo_iteration(get_domain("os"), tmp_path / "ppo")
