"""The knowledge-graph domain: ``cmat/KG-v0`` (and ``cmat/KG-CMAT-v0``, PettingZoo ``cmat/KG-v0``).

AgentBench's KG tools over a real RDF store (pyoxigraph, SPARQL 1.1) holding procedural worlds, or
over a SPARQL endpoint for AgentBench's Freebase tasks (see :mod:`cmat_gym.domains.kg.env`).
"""

from __future__ import annotations

import random
import re

from cmat_gym.core.domain import AgentBenchSplit, Domain, register_domain
from cmat_gym.core.task import Task
from cmat_gym.domains.kg.checker import KGHooks
from cmat_gym.domains.kg.env import KGEnv, NeedsEndpoint
from cmat_gym.domains.kg.grammar import GRAMMAR

_ENTITIES = re.compile(r"Entities: \[(.*)\]")
_RELATION = re.compile(r"[a-z_0-9]+\.[a-z_0-9]+\.[a-z_0-9]+")
_VARIABLE = re.compile(r"#\d+")


def random_kg_action(rng: random.Random, words: list[str], first_observation: str) -> str:
    """A random tool call on an entity of the question, a variable or a relation seen so far (as an
    ``Action:`` line or a JSON tool call), or now and then a final answer naming a variable."""
    match = _ENTITIES.search(first_observation)
    entities = [e.strip() for e in match.group(1).split(", ")] if match else []
    seen = " ".join(words)
    relations = sorted(set(_RELATION.findall(seen))) or ["people.person.employer"]
    variables = sorted(set(_VARIABLE.findall(seen))) or ["#0"]
    operand = rng.choice(entities + variables) if entities else rng.choice(variables)
    tool = rng.choice(("get_relations", "get_relations", "get_neighbors", "get_neighbors", "intersection",
                       "get_attributes", "argmax", "count", "final_answer"))
    if tool == "final_answer":
        return GRAMMAR.answer([rng.choice(variables)])
    if tool == "get_relations":
        args: tuple[str, ...] = (operand,)
    elif tool == "get_neighbors":
        args = (operand, rng.choice(relations))
    elif tool == "intersection":
        args = (rng.choice(variables), rng.choice(variables))
    elif tool == "argmax":
        args = (rng.choice(variables), rng.choice(relations))
    else:
        args = (rng.choice(variables),)
    if rng.random() < 0.5:
        return GRAMMAR.call(tool, *args)
    names = [a.name for a in GRAMMAR.tool(tool).args]
    return GRAMMAR.call_json(tool, **dict(zip(names, args, strict=True)))


def flawed_kg_action(task: Task, next_action: str, rng: random.Random, *, near_miss: bool = True
                     ) -> tuple[str, str] | None:
    """``(kind, action)``: a plausible wrong action before ``next_action`` (the oracle's): with
    ``near_miss``, its relation or attribute misspelled (``relation``: the checker answers with the
    closest names) or its entity misnamed (``entity``), or a final answer naming a variable never bound
    (``variable``). None when the next action offers none of these (the generic flaw applies)."""
    parsed = GRAMMAR.parse(next_action) if near_miss else None
    if parsed is None or isinstance(parsed, Exception) or not hasattr(parsed, "tool"):
        return None
    if parsed.tool == "final_answer":
        return "variable", GRAMMAR.answer(["#99"])
    args = dict(parsed.args)
    if parsed.tool in ("get_neighbors", "argmax", "argmin"):
        key = "relation" if "relation" in args else "attribute"
        parts = args[key].split(".")
        parts[-1] = parts[-1][:-1] if len(parts[-1]) > 3 and rng.random() < 0.5 else parts[-1] + "s"
        args[key] = ".".join(parts)
        return "relation", GRAMMAR.call(parsed.tool, **args)
    if parsed.tool == "get_relations" and not args["variable"].startswith("#"):
        return "entity", GRAMMAR.call("get_relations", args["variable"] + " Jr")
    return None


DOMAIN = register_domain(Domain(
    name="kg",
    title="KG",
    env_class=KGEnv,
    hooks=KGHooks,
    random_action=random_kg_action,
    flawed_action=flawed_kg_action,
    user_reply="Please proceed with the task using the knowledge graph tools.",
    agentbench=AgentBenchSplit("knowledgegraph/dev.json", "kg dev"),
    tags=("pyoxigraph", "sparql"),
))

__all__ = ["DOMAIN", "GRAMMAR", "KGEnv", "NeedsEndpoint", "flawed_kg_action", "random_kg_action"]
