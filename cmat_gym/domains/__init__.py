"""One folder per domain; each exposes its TextEnv subclass."""

from __future__ import annotations

from cmat_gym.core.env import TextEnv


def domain_env_class(domain: str) -> type[TextEnv]:
    """The env class of a domain name (``"db"``, ...)."""
    if domain == "db":
        from cmat_gym.domains.db.env import DBEnv

        return DBEnv
    raise ValueError(f"Expects a known domain ('db'), actual {domain!r}")
