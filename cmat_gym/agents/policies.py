"""Policies: anything that turns a batch of observations into a batch of actions.

A policy is batched: ``act(observations)`` gets one observation per *slot* (an environment in a
vector, an episode in a batch) and returns one action per slot, in the same order. Policies may
keep per-slot episode state (the oracle's position in its script, the random agent's memory of
table names); ``reset(slots)`` forgets it when those slots start new episodes.

Policies are built by name with :func:`make_policy`; :data:`POLICIES` maps each name to its
factory as a ``"module:attribute"`` string, imported only when that policy is made, so that
listing or building the light policies never imports torch.
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cmat_gym.core.actions import Grammar, Tool
from cmat_gym.core.domain import get_domain, registered_domains
from cmat_gym.core.task import Task


@runtime_checkable
class Policy(Protocol):
    """The policy contract: batched ``act`` and per-slot ``reset``. A policy sees only observations."""

    def act(self, observations: list[str], slots: Sequence[int] | None = None) -> list[str]:
        """One action per observation (slot), in order.

        ``slots`` names the slot of each observation (default ``0 .. n-1``); a batched runner passes
        it when some slots sit idle.
        """
        ...

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget the episode state of ``slots`` (all slots when None), before they start new episodes."""
        ...


def is_privileged(policy: Any) -> bool:
    """Whether ``policy`` reads the gold tasks (``privileged = True``: only the oracle). Runners pass
    ``tasks=`` to such a policy's ``act`` and to no other."""
    return bool(getattr(policy, "privileged", False))


class OraclePolicy:
    """Plays each task's gold action script (``oracle_actions`` of the task's domain env), one action a call.

    **Privileged**: the oracle reads the gold task of each slot (``privileged = True``), so runners
    call ``act(observations, slots, tasks=...)``; it raises :class:`ValueError` without them. No other
    policy ever receives a task. A slot starts its script again after :meth:`reset`, when its task
    changes, or after it has played the whole script (the script ends with the final answer, which
    ends the episode).

    Args:
        seed: unused (the oracle is deterministic); accepted so every policy is built the same way.
        domain: unused (the script comes from each task's own domain); accepted likewise.
    """

    privileged = True

    def __init__(self, seed: int | None = None, domain: str | None = None) -> None:
        self._scripts: dict[int, tuple[str, list[str]]] = {}  # slot -> (task_id, actions)
        self._positions: dict[int, int] = {}

    def act(
        self, observations: list[str], slots: Sequence[int] | None = None, *, tasks: Sequence[Task] | None = None
    ) -> list[str]:
        """The next gold action of each slot's task."""
        if tasks is None:
            raise ValueError("OraclePolicy needs the tasks: call act(observations, tasks=[...]) with one Task per slot")
        if len(tasks) != len(observations):
            raise ValueError(f"Expects one task per observation ({len(observations)}), actual {len(tasks)} tasks")
        actions = []
        for slot, task in zip(resolve_slots(slots, len(observations)), tasks, strict=True):
            script = self._scripts.get(slot)
            if script is None or script[0] != task.task_id or self._positions[slot] >= len(script[1]):
                script = (task.task_id, get_domain(task.domain).env_class.oracle_actions(task))
                self._scripts[slot] = script
                self._positions[slot] = 0
            actions.append(script[1][self._positions[slot]])
            self._positions[slot] += 1
        return actions

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Restart the scripts of ``slots`` (all when None)."""
        for slot in list(self._scripts) if slots is None else slots:
            self._scripts.pop(slot, None)
            self._positions.pop(slot, None)


_WORD = re.compile(r"[A-Za-z0-9#][A-Za-z0-9_.'#-]*")
_JUNK = (
    "I think I should look at the data first.",
    "SELECT",
    "Action: Operation\nI will query the table.",
    "```sql\n```",
    '{"tool": "run_query", "args": {}}',
    "Action: Dance",
)


class RandomPolicy:
    """A seeded random agent that speaks its domain's action grammar (a baseline and a fuzzer).

    Each call it picks, at random: an operation (the domain record's ``random_action``, e.g. a query
    on a table the DB observation names; for a domain without one, a random call of one of the
    grammar's operation tools with words seen in the observations), malformed text, or a final
    answer made of one or two words seen in the observations, which becomes likelier with every
    step. Each slot draws from its own stream, derived from ``(seed, slot, episode number of that
    slot)``, so the actions are a deterministic function of the seed and of what the policy was
    shown, whatever the batch size.

    Args:
        seed: the seed of every stream.
        answer_prob: the probability of answering at the first step; it grows by the same amount
            each step.
        domain: the domain whose grammar it speaks (``"db"``, ...; see ``cmat-gym list``); runners
            take it from the env (``env.unwrapped.domain``).
    """

    def __init__(self, seed: int = 0, answer_prob: float = 0.1, domain: str | None = None) -> None:
        if domain is None:
            raise ValueError("RandomPolicy needs domain=<the env's domain> (env.unwrapped.domain), "
                             f"one of {[d.name for d in registered_domains()]}")
        self.domain = get_domain(domain)
        self.seed = seed
        self.answer_prob = answer_prob
        self._rngs: dict[int, random.Random] = {}
        self._episodes: dict[int, int] = {}
        self._steps: dict[int, int] = {}
        self._first: dict[int, str] = {}
        self._words: dict[int, list[str]] = {}

    def act(self, observations: list[str], slots: Sequence[int] | None = None) -> list[str]:
        """One random action per slot."""
        return [self._act_slot(slot, obs)
                for slot, obs in zip(resolve_slots(slots, len(observations)), observations, strict=True)]

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget what ``slots`` (all when None) saw; their next episode draws from a fresh stream."""
        for slot in list(self._rngs) if slots is None else slots:
            if slot in self._rngs:
                self._episodes[slot] = self._episodes.get(slot, 0) + 1
            for state in (self._rngs, self._steps, self._first, self._words):
                state.pop(slot, None)

    def seek_episode(self, slot: int, episode: int) -> None:
        """Make ``slot``'s next episode draw the stream of its ``episode``-th one (counting from 0), as if
        it had played the episodes before: a remote worker playing episode ``i`` of a sequential run alone
        (:mod:`cmat_gym.scale`) then acts as the local run does."""
        for state in (self._rngs, self._steps, self._first, self._words):
            state.pop(slot, None)
        self._episodes[slot] = episode

    # ---------------------------------------------------------------- internals
    def _act_slot(self, slot: int, observation: str) -> str:
        if slot not in self._rngs:
            self._rngs[slot] = random.Random(f"{self.seed}/{slot}/{self._episodes.get(slot, 0)}")
            self._steps[slot] = 0
            self._first[slot] = observation
            self._words[slot] = []
        rng = self._rngs[slot]
        words = self._words[slot]
        words.extend(w.strip(".'") for w in _WORD.findall(observation) if len(w) > 1)
        del words[:-2000]  # keep memory bounded on long episodes
        self._steps[slot] += 1
        grammar = self.domain.grammar
        if rng.random() < self.answer_prob * self._steps[slot]:
            picks = [rng.choice(words) for _ in range(rng.randint(1, 2))] if words else []
            if rng.random() < 0.5:
                return grammar.answer(picks)
            return grammar.call_json(grammar.answer_tool.name, **_answer_args(grammar.answer_tool, picks))
        if rng.random() < 0.15:
            return rng.choice(_JUNK)
        if self.domain.random_action is not None:
            return self.domain.random_action(rng, words, self._first[slot])
        return random_tool_call(rng, grammar, words)


def random_tool_call(rng: random.Random, grammar: Grammar, words: Sequence[str]) -> str:
    """A call of a random operation tool of ``grammar`` whose arguments are words from ``words``
    (numbers for numeric arguments), as text or JSON at random."""
    tool = rng.choice(grammar.operation_tools or grammar.tools)
    args: dict[str, Any] = {}
    for arg in tool.args:
        if not arg.required and rng.random() < 0.5:
            continue
        word = rng.choice(words) if words else "x"
        args[arg.name] = {"integer": rng.randint(0, 9), "number": rng.randint(0, 9), "boolean": rng.random() < 0.5,
                          "array": [word]}.get(arg.type, word)
    if rng.random() < 0.5:
        return grammar.call(tool.name, **args)
    return grammar.call_json(tool.name, **args)


def _answer_args(tool: Tool, picks: list[str]) -> dict[str, Any]:
    if not tool.args:
        return {}
    arg = tool.args[0]
    return {arg.name: picks if arg.type == "array" else (picks[0] if picks else "")}


def resolve_slots(slots: Sequence[int] | None, n: int) -> list[int]:
    """The slot of each of ``n`` observations: ``slots``, or ``0 .. n-1`` when None."""
    if slots is None:
        return list(range(n))
    if len(slots) != n:
        raise ValueError(f"Expects one slot per observation ({n}), actual {len(slots)}")
    return list(slots)


# ------------------------------------------------------------------------------- the registry
# name -> factory ("module:attribute", imported on use). Adding a policy is one line here.
POLICIES: dict[str, str] = {
    "oracle": "cmat_gym.agents.policies:OraclePolicy",
    "random": "cmat_gym.agents.policies:RandomPolicy",
    "smollm2": "cmat_gym.agents.chat_agent:smollm2",
    "smollm2-135m-instruct": "cmat_gym.agents.chat_agent:smollm2",  # the model's name works too
    "tiny-random": "cmat_gym.agents.chat_agent:tiny_random",
    # Any OpenAI-compatible chat-completions server (base_url=..., model=...); needs no torch.
    "openai": "cmat_gym.agents.openai_policy:OpenAIPolicy",
}
# The language-model policies among them (a local model folder is one too): they take model options
# (adapter, max_new_tokens, max_batch, device, ...; see cmat_gym.agents.chat_agent.make_chat_agent).
MODEL_POLICIES = frozenset({"smollm2", "smollm2-135m-instruct", "tiny-random"})
_MODEL_FOLDER_FACTORY = "cmat_gym.agents.chat_agent:make_chat_agent"
# Top-level modules of the [train] extra that the language-model policies import.
TRAIN_EXTRA_MODULES = frozenset({"torch", "transformers", "peft", "accelerate", "safetensors", "gguf"})


# The adapters that ship inside the package (cmat_gym/data/adapters/<folder>, each with its README.md and
# training.json: the command that trained it, the commit, the data and its measured figures), by the name
# ``make_policy(..., adapter=NAME)`` and ``--adapter NAME`` accept in place of a folder.
BUNDLED_ADAPTERS: dict[str, str] = {"bundled": "db-sft"}
BUNDLED_ADAPTER_DIR = Path(__file__).resolve().parents[1] / "data" / "adapters"


def resolve_adapter(adapter: str | Path | None) -> str | Path | None:
    """The folder of ``adapter``: a bundled adapter's name (``"bundled"``, see :data:`BUNDLED_ADAPTERS`)
    becomes its folder inside the package; a path (or None) is returned unchanged.

    Raises:
        FileNotFoundError: for a bundled name whose folder is missing from this install.
    """
    if not isinstance(adapter, str) or adapter not in BUNDLED_ADAPTERS:
        return adapter
    folder = BUNDLED_ADAPTER_DIR / BUNDLED_ADAPTERS[adapter]
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"the bundled adapter {adapter!r} is missing from this install (expected {folder})")
    return folder


def is_model_policy(name: str) -> bool:
    """Whether ``name`` makes a language-model policy: a registered one, or a local model folder."""
    return name in MODEL_POLICIES or (name not in POLICIES and Path(name).expanduser().is_dir())


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered as ``name`` in :data:`POLICIES`, passing ``kwargs`` to its factory.

    A ``name`` that is a local folder holding a HF causal LM builds a
    :class:`~cmat_gym.agents.chat_agent.ChatAgent` over it. ``adapter="bundled"`` loads the tuned
    SmolLM2 adapter that ships with the package (:func:`resolve_adapter`). Every policy takes ``domain=`` (the env's
    domain, ``env.unwrapped.domain``): the random agent and the language models speak its grammar.

    Raises:
        ValueError: for a name that is neither registered nor a folder (the message lists the known ones).
        ImportError: for a language model when the ``[train]`` extra is missing (one line saying so).
    """
    target = POLICIES.get(name)
    if target is None and is_model_policy(name):
        target, kwargs = _MODEL_FOLDER_FACTORY, {"model": name, **kwargs}
    if target is None:
        raise ValueError(f"Expects a policy in {sorted(POLICIES)} or a model folder, actual {name!r}")
    if "adapter" in kwargs:
        kwargs = {**kwargs, "adapter": resolve_adapter(kwargs["adapter"])}
    module_name, _, attribute = target.partition(":")
    try:
        factory: Callable[..., Policy] = getattr(importlib.import_module(module_name), attribute)
        return factory(**kwargs)
    except ModuleNotFoundError as exc:
        # The language models need the [train] extra (torch, transformers, peft): say so in one line.
        if (exc.name or "").partition(".")[0] in TRAIN_EXTRA_MODULES:
            raise ImportError(f"policy {name!r} needs {exc.name}, which is not installed: "
                              "pip install 'cmat-gym[train]'") from exc
        raise
