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
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cmat_gym.core.task import Task
from cmat_gym.domains import domain_env_class


@runtime_checkable
class Policy(Protocol):
    """The policy contract: batched ``act`` and per-slot ``reset``."""

    def act(
        self, observations: list[str], tasks: list[Task] | None = None, slots: Sequence[int] | None = None
    ) -> list[str]:
        """One action per observation (slot), in order.

        ``tasks`` is privileged information (the gold data of each slot's task): only the oracle
        reads it; every other policy ignores it. ``slots`` names the slot of each observation
        (default ``0 .. n-1``); a batched runner passes it when some slots sit idle.
        """
        ...

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget the episode state of ``slots`` (all slots when None), before they start new episodes."""
        ...


class OraclePolicy:
    """Plays each task's gold action script (``oracle_actions`` of the task's domain env), one action a call.

    The oracle needs the tasks: ``act(observations, tasks)`` raises :class:`ValueError` without them.
    A slot starts its script again after :meth:`reset`, when its task changes, or after it has
    played the whole script (the script ends with the final answer, which ends the episode).

    Args:
        seed: unused (the oracle is deterministic); accepted so every policy is built the same way.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._scripts: dict[int, tuple[str, list[str]]] = {}  # slot -> (task_id, actions)
        self._positions: dict[int, int] = {}

    def act(
        self, observations: list[str], tasks: list[Task] | None = None, slots: Sequence[int] | None = None
    ) -> list[str]:
        """The next gold action of each slot's task."""
        if tasks is None:
            raise ValueError("OraclePolicy needs the tasks: call act(observations, tasks) with one Task per slot")
        if len(tasks) != len(observations):
            raise ValueError(f"Expects one task per observation ({len(observations)}), actual {len(tasks)} tasks")
        actions = []
        for slot, task in zip(resolve_slots(slots, len(observations)), tasks, strict=True):
            script = self._scripts.get(slot)
            if script is None or script[0] != task.task_id or self._positions[slot] >= len(script[1]):
                script = (task.task_id, domain_env_class(task.domain).oracle_actions(task))
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


# Table names as the DB observations state them: AgentBench's sentence, a CREATE TABLE, or "Table x".
_TABLE_PATTERNS = (
    re.compile(r"The name of this table is (.+?), and the headers of this table are (.+?)\.?$", re.MULTILINE),
    re.compile(r"CREATE TABLE\s+[`\"]?([^`\"(\s]+)[`\"]?\s*\((.*?)\)", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*[-*]?\s*[Tt]able\s+[`\"']?([^`\"'\s:(]+)[`\"']?\s*[:(]\s*(.*?)\)?$", re.MULTILINE),
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.'-]*")
_JUNK = (
    "I think I should look at the data first.",
    "SELECT",
    "Action: Operation\nI will query the table.",
    "```sql\n```",
    '{"tool": "run_query", "args": {}}',
    "Action: Dance",
)


class RandomPolicy:
    """A seeded random agent that speaks the DB action grammar (a baseline and a fuzzer).

    Each call it picks, at random: a query on a table named in the episode's first observation
    (``SELECT *``, one random column, a count, a random filter), in either grammar (AgentBench text
    or JSON tool call); malformed text; or a final answer made of one or two words seen in the
    observations, which becomes likelier with every step. Each slot draws from its own stream,
    derived from ``(seed, slot, episode number of that slot)``, so the actions are a deterministic
    function of the seed and of what the policy was shown, whatever the batch size.

    Args:
        seed: the seed of every stream.
        answer_prob: the probability of answering at the first step; it grows by the same amount
            each step.
    """

    def __init__(self, seed: int = 0, answer_prob: float = 0.1) -> None:
        self.seed = seed
        self.answer_prob = answer_prob
        self._rngs: dict[int, random.Random] = {}
        self._episodes: dict[int, int] = {}
        self._steps: dict[int, int] = {}
        self._tables: dict[int, list[tuple[str, list[str]]]] = {}
        self._words: dict[int, list[str]] = {}

    def act(
        self, observations: list[str], tasks: list[Task] | None = None, slots: Sequence[int] | None = None
    ) -> list[str]:
        """One random action per slot (``tasks`` is ignored: this policy sees only observations)."""
        return [self._act_slot(slot, obs)
                for slot, obs in zip(resolve_slots(slots, len(observations)), observations, strict=True)]

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget what ``slots`` (all when None) saw; their next episode draws from a fresh stream."""
        for slot in list(self._rngs) if slots is None else slots:
            if slot in self._rngs:
                self._episodes[slot] = self._episodes.get(slot, 0) + 1
            for state in (self._rngs, self._steps, self._tables, self._words):
                state.pop(slot, None)

    # ---------------------------------------------------------------- internals
    def _act_slot(self, slot: int, observation: str) -> str:
        if slot not in self._rngs:
            self._rngs[slot] = random.Random(f"{self.seed}/{slot}/{self._episodes.get(slot, 0)}")
            self._steps[slot] = 0
            self._tables[slot] = _find_tables(observation)
            self._words[slot] = []
        rng = self._rngs[slot]
        words = self._words[slot]
        words.extend(w.strip(".'") for w in _WORD.findall(observation) if len(w) > 1)
        del words[:-2000]  # keep memory bounded on long episodes
        self._steps[slot] += 1
        if rng.random() < self.answer_prob * self._steps[slot]:
            return self._answer(rng, words)
        if rng.random() < 0.15:
            return rng.choice(_JUNK)
        return self._query(rng, self._tables[slot], words)

    @staticmethod
    def _answer(rng: random.Random, words: list[str]) -> str:
        picks = [rng.choice(words) for _ in range(rng.randint(1, 2))] if words else []
        if rng.random() < 0.5:
            return "Action: Answer\nFinal Answer: " + json.dumps(picks)
        return json.dumps({"tool": "commit_final_answer", "args": {"answers": picks}})

    @staticmethod
    def _query(rng: random.Random, tables: list[tuple[str, list[str]]], words: list[str]) -> str:
        name, columns = rng.choice(tables) if tables else (rng.choice(words) if words else "t", [])
        table = _quote(name)
        column = _quote(rng.choice(columns)) if columns else "*"
        templates = [
            f"SELECT * FROM {table}",
            f"SELECT * FROM {table} LIMIT {rng.randint(1, 5)}",
            f"SELECT {column} FROM {table}",
            f"SELECT COUNT(*) FROM {table}",
            f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}",
        ]
        if words:
            value = rng.choice(words).replace("'", "''")
            templates.append(f"SELECT * FROM {table} WHERE {column if columns else 'rowid'} = '{value}'")
        sql = rng.choice(templates)
        if rng.random() < 0.5:
            return f"Action: Operation\n```sql\n{sql};\n```"
        return json.dumps({"tool": "execute_sql", "args": {"sql": sql}})


def resolve_slots(slots: Sequence[int] | None, n: int) -> list[int]:
    """The slot of each of ``n`` observations: ``slots``, or ``0 .. n-1`` when None."""
    if slots is None:
        return list(range(n))
    if len(slots) != n:
        raise ValueError(f"Expects one slot per observation ({n}), actual {len(slots)}")
    return list(slots)


def _find_tables(observation: str) -> list[tuple[str, list[str]]]:
    """(table, columns) pairs named in a DB observation; empty when none is recognised."""
    for pattern in _TABLE_PATTERNS:
        typed = pattern is _TABLE_PATTERNS[1]  # CREATE TABLE bodies hold "name TYPE" column definitions
        found = [(m.group(1).strip(), _split_columns(m.group(2), typed)) for m in pattern.finditer(observation)]
        if found:
            return found
    return []


def _split_columns(text: str, typed: bool) -> list[str]:
    columns = []
    for part in text.split(","):
        name = part.strip().split(" ")[0] if typed else part.strip()
        name = name.strip("`\"'")
        if name and name.upper() not in ("PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "CONSTRAINT"):
            columns.append(name)
    return columns


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------- the registry
# name -> factory ("module:attribute", imported on use). Adding a policy is one line here.
POLICIES: dict[str, str] = {
    "oracle": "cmat_gym.agents.policies:OraclePolicy",
    "random": "cmat_gym.agents.policies:RandomPolicy",
    "smollm2": "cmat_gym.agents.chat_agent:smollm2",
    "tiny-random": "cmat_gym.agents.chat_agent:tiny_random",
}
# The language-model policies among them (a local model folder is one too): they take model options
# (adapter, max_new_tokens, max_batch, device, ...; see cmat_gym.agents.chat_agent.make_chat_agent).
MODEL_POLICIES = frozenset({"smollm2", "tiny-random"})
_MODEL_FOLDER_FACTORY = "cmat_gym.agents.chat_agent:make_chat_agent"


def is_model_policy(name: str) -> bool:
    """Whether ``name`` makes a language-model policy: a registered one, or a local model folder."""
    return name in MODEL_POLICIES or (name not in POLICIES and Path(name).expanduser().is_dir())


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered as ``name`` in :data:`POLICIES`, passing ``kwargs`` to its factory.

    A ``name`` that is a local folder holding a HF causal LM builds a
    :class:`~cmat_gym.agents.chat_agent.ChatAgent` over it.

    Raises:
        ValueError: for a name that is neither registered nor a folder (the message lists the known ones).
    """
    target = POLICIES.get(name)
    if target is None and is_model_policy(name):
        target, kwargs = _MODEL_FOLDER_FACTORY, {"model": name, **kwargs}
    if target is None:
        raise ValueError(f"Expects a policy in {sorted(POLICIES)} or a model folder, actual {name!r}")
    module_name, _, attribute = target.partition(":")
    factory: Callable[..., Policy] = getattr(importlib.import_module(module_name), attribute)
    return factory(**kwargs)
