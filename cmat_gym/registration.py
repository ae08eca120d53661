"""Registering every environment: each domain registers itself (:func:`cmat_gym.core.domain.register_domain`);
this module only makes sure every domain folder has been imported."""

from __future__ import annotations

from cmat_gym.core.domain import registered_domains


def register_envs() -> None:
    """Register every cmat-gym environment with Gymnasium and PettingZoo (idempotent)."""
    registered_domains()  # imports cmat_gym.domains, whose folders register themselves
