"""The SQL database domain: cmat/DB-v0."""

from cmat_gym.domains.db.env import DBEnv

__all__ = ["DBEnv"]
