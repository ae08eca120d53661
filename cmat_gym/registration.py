"""Every environment id, registered in one place (Gymnasium's convention)."""

from __future__ import annotations

import gymnasium as gym
import pettingzoo

# (id, entry point, max_episode_steps): the step limit equals the domain's default max_rounds.
GYM_ENVS: tuple[tuple[str, str, int | None], ...] = (
    ("cmat/DB-v0", "cmat_gym.domains.db.env:DBEnv", 20),
)

# The single-agent CMAT loop around a domain env: (id, domain env id). No max_episode_steps: the
# loop truncates after max_cycles Assistant turns itself (default: the domain env's max_rounds).
GYM_CMAT_ENVS: tuple[tuple[str, str], ...] = (
    ("cmat/DB-CMAT-v0", "cmat/DB-v0"),
)

# The PettingZoo CMAT loop (AEC and parallel) has the domain env's id in PettingZoo's registries.
PETTINGZOO_ENVS: tuple[str, ...] = ("cmat/DB-v0",)


def register_envs() -> None:
    """Register every cmat-gym environment with Gymnasium and PettingZoo (idempotent)."""
    for env_id, entry_point, max_steps in GYM_ENVS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
    for env_id, domain_id in GYM_CMAT_ENVS:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="cmat_gym.cmat.wrapper:make_cmat", kwargs={"env_id": domain_id})
    # PettingZoo 1.27 loads no plugins: importing cmat_gym is what makes pettingzoo.make("aec", ...) work.
    for env_id in PETTINGZOO_ENVS:
        for env_type, factory in (("aec", "env"), ("parallel", "parallel_env")):
            registry = pettingzoo.aec_registry if env_type == "aec" else pettingzoo.parallel_registry
            if env_id not in registry:
                pettingzoo.register(env_type, env_id, entry_point=f"cmat_gym.cmat.pettingzoo_env:{factory}",
                                    kwargs={"domain_env_id": env_id})
