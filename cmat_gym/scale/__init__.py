"""Scale-out: the episodes of one evaluation spread over Ray actors (the optional ``[scale]`` extra).

``run_episodes(factory, PolicySpec("oracle", {"domain": "db"}), 100, seed=0, backend="ray", workers=4)``
(or ``cmat-gym eval --ray --workers 4``) plays the same episodes as the local run, with the same reset
seeds and tasks, on ``workers`` Ray actors, and returns the same results in the same order; see
:mod:`cmat_gym.scale.ray_backend` for how, and ``docs/scaling.md`` for the layout of a cluster run.

This package imports Ray only when a Ray run starts, so ``import cmat_gym.scale`` works without it.
"""

from __future__ import annotations

from cmat_gym.scale.specs import PolicySpec, seek_episode

__all__ = ["PolicySpec", "seek_episode"]
