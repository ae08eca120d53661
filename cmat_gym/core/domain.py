"""The domain record and its registry: a new domain is one folder and one :func:`register_domain` call.

A domain's ``__init__.py`` declares one :class:`Domain` (its env class, hooks, random-action
generator, the scripted user's fallback reply, ...) and calls ``register_domain(DOMAIN)``, which
fills every registry at once:

* Gymnasium: ``cmat/<Title>-v0`` (the bare domain env) and ``cmat/<Title>-CMAT-v0`` (the
  single-agent CMAT loop around it);
* PettingZoo (AEC and parallel): ``cmat/<Title>-v0`` (the CMAT loop with every role an agent);
* this module's own table, through which generic code finds a domain's facts
  (:func:`get_domain`, :func:`domain_of_env`): no generic module ever names a domain.

``cmat_gym.domains`` imports every subpackage of its folder, so dropping a folder in is enough; a
domain defined elsewhere (a test, a user's package) calls :func:`register_domain` itself.

The episode step limit has one definition, the env class's ``default_max_rounds``: it is the
``max_rounds`` default in the Gymnasium spec's kwargs, and the env truncates itself when it is
reached. No ``TimeLimit`` is registered, so ``gym.make(id, max_rounds=50)`` really allows 50.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import pettingzoo

from cmat_gym.core.checking import DomainHooks

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv
    from cmat_gym.core.task import Task

ENV_NAMESPACE = "cmat"
DEFAULT_USER_REPLY = "Please proceed with the task."

# (rng, observations seen this episode, first observation) -> an action text, for RandomPolicy.
RandomAction = Callable[[random.Random, list[str], str], str]
# (task, the oracle's next action, rng) -> (kind, a plausible wrong action), for SFT data; None: none.
FlawedAction = Callable[..., "tuple[str, str] | None"]
# (the tasks played, whether each was solved) -> {"headline": float, "accuracy": {...}, "counts": {...}}.
Headline = Callable[[Sequence["Task"], Sequence[bool]], dict[str, Any]]


@dataclass(frozen=True)
class AgentBenchSplit:
    """Where a domain's AgentBench dev split lives and how AgentBench summarises it.

    Attributes:
        path: the file, relative to an AgentBench data folder (``"dbbench/dev.jsonl"``).
        name: the source's name in tables (``"dbbench dev"``).
        headline: AgentBench's own metric for the domain (None: the success rate is the metric).
        headline_doc: one line saying what the headline is.
    """

    path: str
    name: str
    headline: Headline | None = None
    headline_doc: str = ""


@dataclass(frozen=True)
class Domain:
    """Everything generic code needs to know about one domain.

    Attributes:
        name: the domain's name, as in ``Task.domain`` (``"db"``).
        title: the name in env ids: ``cmat/<title>-v0`` (``"DB"``).
        env_class: the :class:`~cmat_gym.core.env.TextEnv` subclass (its ``domain`` must equal ``name``).
        hooks: builds the domain's :class:`~cmat_gym.core.checking.DomainHooks` (rule checker, hindsight).
        random_action: a random action for :class:`~cmat_gym.agents.policies.RandomPolicy` (None: random
            calls of the grammar's tools with words from the observations).
        flawed_action: a plausible wrong action, for checker-aware SFT data (None: the generic one).
        user_reply: what the scripted user says to a question it cannot answer from the context.
        nondeterministic: whether the env's outcomes can differ for equal seeds (a live backend).
        agentbench: the domain's AgentBench dev split, for the AgentBench-style table (None: none).
        tags: free-form labels, shown by ``cmat-gym list``.
    """

    name: str
    title: str
    env_class: type[TextEnv]
    hooks: Callable[[], DomainHooks] = DomainHooks
    random_action: RandomAction | None = None
    flawed_action: FlawedAction | None = None
    user_reply: str = DEFAULT_USER_REPLY
    nondeterministic: bool = False
    agentbench: AgentBenchSplit | None = None
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if getattr(self.env_class, "domain", None) != self.name:
            raise ValueError(f"Expects {self.env_class.__name__}.domain == {self.name!r}, "
                             f"actual {getattr(self.env_class, 'domain', None)!r}")
        if not self.title.isidentifier():
            raise ValueError(f"Expects a title usable in an env id (letters, digits, _), actual {self.title!r}")

    @property
    def env_id(self) -> str:
        """The Gymnasium (and PettingZoo) id of the bare env: ``cmat/<title>-v0``."""
        return f"{ENV_NAMESPACE}/{self.title}-v0"

    @property
    def cmat_env_id(self) -> str:
        """The Gymnasium id of the single-agent CMAT loop: ``cmat/<title>-CMAT-v0``."""
        return f"{ENV_NAMESPACE}/{self.title}-CMAT-v0"

    @property
    def max_rounds(self) -> int:
        """The default step limit (the env class's ``default_max_rounds``)."""
        return int(self.env_class.default_max_rounds)

    @property
    def grammar(self) -> Any:
        """The domain's action :class:`~cmat_gym.core.actions.Grammar`."""
        return self.env_class.grammar

    def describe(self) -> str:
        """The first line of the env class's docstring."""
        doc = (self.env_class.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_DOMAINS: dict[str, Domain] = {}
_ENV_DOMAINS: dict[str, str] = {}  # every registered env id -> its domain's name


def register_domain(domain: Domain, *, replace: bool = False) -> Domain:
    """Register ``domain`` in cmat-gym's, Gymnasium's and PettingZoo's registries (see the module
    docstring). Registering the same record again does nothing; another record under a taken name
    raises ValueError unless ``replace``. Returns ``domain``."""
    known = _DOMAINS.get(domain.name)
    if known is domain:
        return domain
    if known is not None and not replace:
        raise ValueError(f"Expects a new domain name, actual {domain.name!r} (already registered by "
                         f"{known.env_class.__module__}); pass replace=True to override it")
    taken = {d.title: d.name for d in _DOMAINS.values() if d.name != domain.name}
    if domain.title in taken:
        raise ValueError(f"Expects a new title, actual {domain.title!r} (used by domain {taken[domain.title]!r})")
    _DOMAINS[domain.name] = domain
    kwargs = {"max_rounds": domain.max_rounds}
    for env_id in (domain.env_id, domain.cmat_env_id):
        gym.registry.pop(env_id, None)  # a replaced domain must not keep its old spec
    gym.register(id=domain.env_id, entry_point=domain.env_class, kwargs=kwargs,
                 nondeterministic=domain.nondeterministic)
    gym.register(id=domain.cmat_env_id, entry_point="cmat_gym.cmat.wrapper:make_cmat",
                 kwargs={"env_id": domain.env_id}, nondeterministic=domain.nondeterministic)
    # PettingZoo 1.27 loads no plugins: importing cmat_gym is what makes pettingzoo.make("aec", ...) work.
    for env_type, factory in (("aec", "env"), ("parallel", "parallel_env")):
        registry = pettingzoo.aec_registry if env_type == "aec" else pettingzoo.parallel_registry
        registry.pop(domain.env_id, None)
        pettingzoo.register(env_type, domain.env_id, entry_point=f"cmat_gym.cmat.pettingzoo_env:{factory}",
                            kwargs={"domain_env_id": domain.env_id})
    _ENV_DOMAINS[domain.env_id] = _ENV_DOMAINS[domain.cmat_env_id] = domain.name
    return domain


def unregister_domain(name: str) -> None:
    """Remove a domain and its env ids from every registry (tests that register a fake domain)."""
    domain = _DOMAINS.pop(name, None)
    if domain is None:
        return
    for env_id in (domain.env_id, domain.cmat_env_id):
        gym.registry.pop(env_id, None)
        _ENV_DOMAINS.pop(env_id, None)
    pettingzoo.aec_registry.pop(domain.env_id, None)
    pettingzoo.parallel_registry.pop(domain.env_id, None)


def get_domain(name: str) -> Domain:
    """The registered domain called ``name`` (ValueError listing the known ones otherwise)."""
    _load_builtin_domains()
    try:
        return _DOMAINS[name]
    except KeyError:
        raise ValueError(f"Expects a registered domain in {sorted(_DOMAINS)}, actual {name!r}") from None


def registered_domains() -> list[Domain]:
    """Every registered domain, by name."""
    _load_builtin_domains()
    return [_DOMAINS[name] for name in sorted(_DOMAINS)]


def domain_of_env(env: str | gym.Env | Any) -> Domain:
    """The domain of an env id (``"cmat/DB-v0"``, ``"cmat/DB-CMAT-v0"``, or any id whose entry point
    is a TextEnv class) or of an env instance (wrapped or not: its ``unwrapped.domain``)."""
    _load_builtin_domains()
    if not isinstance(env, str):
        return get_domain(getattr(getattr(env, "unwrapped", env), "domain", None))
    if env in _ENV_DOMAINS:
        return _DOMAINS[_ENV_DOMAINS[env]]
    try:
        spec = gym.spec(env)
    except gym.error.Error as exc:
        raise ValueError(f"Expects a registered env id, actual {env!r} ({exc})") from None
    inner = spec.kwargs.get("env_id")
    if isinstance(inner, str) and inner != env:
        return domain_of_env(inner)
    entry = spec.entry_point
    if isinstance(entry, str):
        from gymnasium.envs.registration import load_env_creator

        entry = load_env_creator(entry)
    name = getattr(entry, "domain", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expects {env!r} to be a cmat-gym env (a TextEnv with a domain), actual {entry!r}")
    return get_domain(name)


def _load_builtin_domains() -> None:
    # The built-in domains register when cmat_gym.domains is imported; a lookup may come first
    # (e.g. from a module imported before cmat_gym finished importing).
    import cmat_gym.domains  # noqa: F401
