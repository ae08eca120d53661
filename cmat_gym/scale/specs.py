"""What crosses to a remote worker: a policy by name and keyword arguments, never the object.

A worker builds its own replica with :func:`~cmat_gym.agents.policies.make_policy`: a language model is
loaded once per worker instead of being pickled with its weights, and a client of a shared model
server (``PolicySpec("openai", {"base_url": ..., "model": ...})``) opens its own connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cmat_gym.agents.policies import Policy, make_policy


@dataclass(frozen=True)
class PolicySpec:
    """A policy as ``make_policy(name, **kwargs)`` builds it (e.g. ``PolicySpec("random", {"seed": 0,
    "domain": "db"})``); picklable as long as the kwargs are."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Policy:
        """A fresh policy replica."""
        return make_policy(self.name, **dict(self.kwargs))


def seek_episode(policy: Policy, slot: int, episode: int) -> None:
    """Put ``policy``'s ``slot`` where a local sequential run has it before episode ``episode``.

    Some policies draw per-episode randomness from how many episodes a slot has played (the random
    agent's streams). A worker that plays episode ``i`` of a run, without the episodes before it,
    calls the policy's optional ``seek_episode(slot, episode)`` so that episode ``i`` draws exactly
    what it draws locally. Policies whose episodes depend only on the episode (the oracle, greedy
    language models) need no such method.
    """
    seek = getattr(policy, "seek_episode", None)
    if seek is not None:
        seek(slot, episode)
