"""KG tasks: procedural questions over generated worlds, and AgentBench's KG files.

**Procedural.** A candidate draws a world key, generates the world (:mod:`~cmat_gym.domains.kg.world`),
picks a question template of the difficulty and compiles it to an s-expression; the gold answer is
what that s-expression returns from the loaded store (SPARQL), never written by hand. Candidates with
an empty answer, a large one (more than :data:`MAX_ANSWERS`), or a superlative over fewer than two
entities are redrawn. Difficulty 1: one hop (JOIN), or its COUNT. 2: two hops, an intersection (AND)
of two hops, ARGMAX/ARGMIN over a hop, or COUNT of two hops. 3: three hops, a hop after an
intersection, a superlative over two hops, COUNT of an intersection. The gold action trace is
derived from the s-expression (:func:`plan_actions`). Comparisons (``lt``/``gt``/``le``/``ge``)
compile (:mod:`~cmat_gym.domains.kg.sexpr`) but make no template: AgentBench's seven tools cannot
filter by value, so no agent could answer such a question.

**AgentBench files** (``dev.json``: ``question``, ``entities``, ``s_expression``, ``actions``,
``answer``) load unchanged; their entities are Freebase ids, so they need a Freebase endpoint.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import pyoxigraph as ox

from cmat_gym.core.procedural import first_in_split, make_task_id, parse_task_id
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import Task
from cmat_gym.core.taskfile import read_records
from cmat_gym.domains.kg import sexpr
from cmat_gym.domains.kg.backend import OxigraphBackend, load_ntriples, rows_column
from cmat_gym.domains.kg.grammar import BINDING_TOOLS, GRAMMAR
from cmat_gym.domains.kg.world import (
    TYPE_NOUNS,
    World,
    attributes_of,
    directed,
    generate_world,
    relation_named,
)

DOMAIN = "kg"
MAX_ANSWERS = 12
CONTEXT = (
    "Answer the question from the knowledge base with these tools, one per turn: get_relations(x), "
    "get_neighbors(x, relation), intersection(#a, #b), get_attributes(#a), argmax(#a, attribute), "
    "argmin(#a, attribute), count(#a). x is an entity of the question (by name) or a variable. Each call "
    "that returns a set binds the next variable: #0, #1, ... Use get_relations before get_neighbors and "
    "get_attributes before argmax/argmin. When a variable holds the answer, reply 'Final Answer: #n'.")


# ---------------------------------------------------------------------------- worlds
@functools.lru_cache(maxsize=32)
def world_of(difficulty: int, world_seed: int) -> tuple[World, ox.Store]:
    """The world of a key and a loaded store of it (cached: the tools only read the store)."""
    world = generate_world(StableRandom(DOMAIN, "world", difficulty, world_seed), difficulty)
    backend = OxigraphBackend()
    load_ntriples(world.ntriples(), backend)
    return world, backend.store


def execute(backend: Any, expr: sexpr.SExpr, limit: int = 1000) -> list[str]:
    """The answer of a program on a backend: member ids, or for COUNT the number (as text)."""
    return rows_column(backend.select(sexpr.members_query(expr, limit), max_rows=limit))


# ---------------------------------------------------------------------------- templates
class _Set:
    """A described set of entities: its program, type and English description."""

    def __init__(self, expr: sexpr.SExpr, type_: str, text: str) -> None:
        self.expr, self.type, self.text = expr, type_, text


def _hop(rng: StableRandom, base: _Set, avoid: str = "") -> _Set | None:
    options = [o for o in directed(base.type) if o[0] != avoid]
    if not options:
        return None
    relation, range_, phrase = rng.choice(options)
    return _Set(sexpr.forward(relation, base.expr), range_, phrase.format(base.text))


def _entity(rng: StableRandom, world: World, used: set[str]) -> _Set:
    entity = rng.choice([e for e in world.entities if e not in used])
    used.add(entity)
    return _Set(entity, world.entities[entity][0], world.name(entity))


def _chain(rng: StableRandom, world: World, used: set[str], hops: int) -> _Set | None:
    current: _Set | None = _entity(rng, world, used)
    last = ""
    for _ in range(hops):
        # Never walk straight back: "the employees of the employers of X" mostly names X again.
        current = _hop(rng, current, last) if current else None
        if current is None:
            return None
        relation = current.expr[1][1]  # type: ignore[index]
        rel, is_inverse = relation_named(relation)
        last = rel.name if is_inverse else rel.inverse
    return current


def _pair(rng: StableRandom, world: World, used: set[str], hops: tuple[int, int]) -> tuple[_Set, _Set] | None:
    first = _chain(rng, world, used, hops[0])
    if first is None:
        return None
    for _ in range(8):
        second = _chain(rng, world, used, hops[1])
        if second is not None and second.type == first.type and second.expr != first.expr:
            return first, second
    return None


def _superlative(rng: StableRandom, base: _Set) -> tuple[sexpr.SExpr, str] | None:
    attributes = attributes_of(base.type)
    if not attributes:
        return None
    attribute = rng.choice(attributes)
    largest = rng.random() < 0.5
    if attribute.kind == "date":
        word = "latest" if largest else "earliest"
    else:
        word = "largest" if largest else "smallest"
    head = "ARGMAX" if largest else "ARGMIN"
    return (head, base.expr, attribute.name), f"Among {base.text}, which one has the {word} {attribute.noun}?"


def _question(rng: StableRandom, world: World, difficulty: int) -> tuple[sexpr.SExpr, str, str] | None:
    """(program, question, kind) for one template of ``difficulty``, or None to redraw."""
    used: set[str] = set()
    if difficulty == 1:
        kind = rng.choice(("hop", "hop", "count"))
        base = _chain(rng, world, used, 1)
        if base is None:
            return None
        if kind == "count":
            return ("COUNT", base.expr), f"How many {TYPE_NOUNS[base.type]} are among {base.text}?", kind
        return base.expr, f"Name {base.text}.", kind
    if difficulty == 2:
        kind = rng.choice(("hop2", "and", "super", "count2"))
        if kind == "and":
            pair = _pair(rng, world, used, (1, 1))
            if pair is None:
                return None
            a, b = pair
            return ("AND", a.expr, b.expr), f"Which {TYPE_NOUNS[a.type]} are both {a.text} and {b.text}?", kind
        base = _chain(rng, world, used, 1 if kind == "super" else 2)
        if base is None:
            return None
        if kind == "super":
            found = _superlative(rng, base)
            return (found[0], found[1], kind) if found else None
        if kind == "count2":
            return ("COUNT", base.expr), f"How many {TYPE_NOUNS[base.type]} are among {base.text}?", kind
        return base.expr, f"Name {base.text}.", kind
    kind = rng.choice(("hop3", "and_hop", "super2", "count_and", "and2"))
    if kind in ("and_hop", "count_and", "and2"):
        pair = _pair(rng, world, used, (1, 2) if kind == "and2" else (1, 1))
        if pair is None:
            return None
        a, b = pair
        both = _Set(("AND", a.expr, b.expr), a.type, f"the {TYPE_NOUNS[a.type]} that are both {a.text} and {b.text}")
        if kind == "count_and":
            return ("COUNT", both.expr), f"How many {TYPE_NOUNS[a.type]} are both {a.text} and {b.text}?", kind
        if kind == "and2":
            return both.expr, f"Which {TYPE_NOUNS[a.type]} are both {a.text} and {b.text}?", kind
        hopped = _hop(rng, both)
        return (hopped.expr, f"Name {hopped.text}.", kind) if hopped else None
    base = _chain(rng, world, used, 2 if kind == "super2" else 3)
    if base is None:
        return None
    if kind == "super2":
        found = _superlative(rng, base)
        return (found[0], found[1], kind) if found else None
    return base.expr, f"Name {base.text}.", kind


# ---------------------------------------------------------------------------- gold action traces
def plan_actions(expr: sexpr.SExpr, names: dict[str, str]) -> list[str]:
    """The tool calls that build ``expr`` (entities referred to by their names in ``names``), ending
    with the final answer naming the last variable."""
    actions: list[str] = []
    bound = 0

    def build(node: sexpr.SExpr) -> str:
        nonlocal bound
        if isinstance(node, str):
            return names.get(node, node)
        head = node[0]
        if head == "JOIN" and isinstance(node[1], tuple) and node[1][0] == "R":
            ref = build(node[2])
            actions.extend([GRAMMAR.call("get_relations", ref), GRAMMAR.call("get_neighbors", ref, node[1][1])])
        elif head == "AND":
            left, right = build(node[1]), build(node[2])
            actions.append(GRAMMAR.call("intersection", left, right))
        elif head in ("ARGMAX", "ARGMIN"):
            ref = build(node[1])
            actions.extend([GRAMMAR.call("get_attributes", ref), GRAMMAR.call(str(head).lower(), ref, node[2])])
        elif head == "COUNT":
            actions.append(GRAMMAR.call("count", build(node[1])))
        else:
            raise ValueError(f"Expects a program the tools can build, actual {sexpr.write(node)[:80]}")
        bound += 1
        return f"#{bound - 1}"

    final = build(expr)
    return [*actions, GRAMMAR.answer([final])]


# ---------------------------------------------------------------------------- procedural tasks
def generate_task(seed: int, split: str, difficulty: int) -> Task:
    """The procedural task named by (seed, split, difficulty) (see the module docstring)."""

    def draw(rng: StableRandom) -> dict[str, Any] | None:
        world_seed = rng.randbelow(2**48)
        world, store = world_of(difficulty, world_seed)
        backend = OxigraphBackend(store)
        for _ in range(6):
            found = _question(rng, world, difficulty)
            if found is None:
                continue
            expr, question, kind = found
            answer = execute(backend, expr, MAX_ANSWERS + 1)
            if not answer or len(answer) > MAX_ANSWERS or (kind.startswith("count") and answer == ["0"]):
                continue
            if kind.startswith("super") and len(execute(backend, expr[1], 3)) < 2:  # type: ignore[index]
                continue
            mentioned = sorted({e for e in _entities_in(expr)}, key=lambda e: world.name(e))
            return {"world_seed": world_seed, "expr": expr, "question": question, "kind": kind,
                    "answer": sorted(answer), "entities": {world.name(e): e for e in mentioned}}
        return None

    found = first_in_split(DOMAIN, seed, split, difficulty, draw, lambda c: instruction_of(c["question"], c["entities"]))
    entities = found["entities"]
    instruction = instruction_of(found["question"], entities)
    ids_to_names = {v: k for k, v in entities.items()}
    payload = {
        "source": "procedural",
        "world": {"difficulty": difficulty, "world_seed": found["world_seed"]},
        "entities": entities,
        "s_expression": sexpr.write(found["expr"]),
        "actions": plan_actions(found["expr"], ids_to_names)[:-1],
        "answer": found["answer"],
        "kind": found["kind"],
    }
    return Task(DOMAIN, make_task_id(DOMAIN, seed, split, difficulty), instruction, CONTEXT, payload, split,
                difficulty)


def instruction_of(question: str, entities: Sequence[str]) -> str:
    """What the User says: the question and its entities' names, as AgentBench writes them."""
    return f"Question: {question}\nEntities: [{', '.join(entities)}]"


def _entities_in(expr: sexpr.SExpr) -> list[str]:
    if isinstance(expr, str):
        return [expr] if sexpr.is_entity(expr) else []
    return [e for item in expr for e in _entities_in(item)]


def task_from_id(task_id: str) -> Task:
    """Rebuild a procedural task from its id ``kg/<split>/d<difficulty>/<seed>``."""
    seed, split, difficulty = parse_task_id(DOMAIN, task_id)
    return generate_task(seed, split, difficulty)


# ---------------------------------------------------------------------------- AgentBench files
def load_agentbench(path: str) -> list[Task]:
    """AgentBench KG tasks (``question``, ``entities``, ``s_expression``, ``actions``, ``answer``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    tasks = []
    for i, record in enumerate(read_records(path)):
        missing = [k for k in ("question", "entities", "answer") if k not in record]
        if missing:
            raise ValueError(f"Expects AgentBench KG records with {missing} in {path} (record {i})")
        entities = {str(k): str(v) for k, v in dict(record["entities"]).items()}
        answers = record["answer"]
        payload = {
            "source": "agentbench",
            "qid": record.get("qid", ""),
            "entities": entities,
            "s_expression": record.get("s_expression", ""),
            "actions": [f"Action: {a}" for a in record.get("actions", [])],
            "answer": [str(a["answer_argument"]) for a in answers],
            "answer_names": [str(a.get("entity_name", a["answer_argument"])) for a in answers],
        }
        instruction = instruction_of(record["question"], entities)
        tasks.append(Task(DOMAIN, f"agentbench/{stem}/{i}", instruction, CONTEXT, payload, "test", 0))
    return tasks


def oracle_actions(task: Task) -> list[str]:
    """The task's gold action trace, then the final answer naming the last variable it binds."""
    actions = list(task.payload.get("actions", []))
    bound = sum(1 for a in actions if _tool_of(a) in BINDING_TOOLS)
    return [*actions, GRAMMAR.answer([f"#{max(bound - 1, 0)}"])]


def _tool_of(action: str) -> str:
    parsed = GRAMMAR.parse(action)
    return getattr(parsed, "tool", "")

