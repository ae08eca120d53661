"""Every environment id, registered in one place (Gymnasium's convention)."""

from __future__ import annotations

import gymnasium as gym

# (id, entry point, max_episode_steps): the step limit equals the domain's default max_rounds.
GYM_ENVS: tuple[tuple[str, str, int], ...] = (
    ("cmat/DB-v0", "cmat_gym.domains.db.env:DBEnv", 20),
)


def register_envs() -> None:
    """Register every cmat-gym environment with Gymnasium (idempotent)."""
    for env_id, entry_point, max_steps in GYM_ENVS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
