"""cmat/KG-v0: answer a question by querying a knowledge graph with AgentBench's seven KG tools."""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.actions import ANSWER, ActionError, ParsedAction
from cmat_gym.core.env import Evaluation, TextEnv
from cmat_gym.core.task import Task
from cmat_gym.domains.kg import sexpr, tasks
from cmat_gym.domains.kg.backend import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    OxigraphBackend,
    QueryError,
    SPARQLBackend,
    SPARQLEndpoint,
    rows_column,
)
from cmat_gym.domains.kg.grammar import GRAMMAR, VARIABLE

ENDPOINT_ENV = "CMAT_KG_ENDPOINT"
NUMBER_TYPE = "type.int"
INVALID_VARIABLE = "Invalid variable id! Need to recheck the action."
_HIDDEN_PREFIXES = ("type.", "common.", "kg.")
MAX_LISTED = 200  # relations / attributes listed in one observation
# Programs share sub-programs, so intersection(#k, #k) or an argmax of an argmax doubles the SPARQL
# each time: fourteen such calls would make a query of 16k patterns. A cap on the compiled size stops
# that; AgentBench's dev programs need at most a dozen patterns.
MAX_PROGRAM_COST = 64


class NeedsEndpoint(ValueError):
    """AgentBench KG tasks name Freebase entities: they run only against a Freebase SPARQL endpoint."""


@dataclass(frozen=True)
class Variable:
    """A bound variable: AgentBench's (type, program) pair, plus whether it has any member."""

    type: str
    expr: sexpr.SExpr
    empty: bool
    cost: int = 1  # graph patterns its SPARQL holds (see MAX_PROGRAM_COST)

    @property
    def program(self) -> str:
        """The s-expression text."""
        return sexpr.write(self.expr)


@dataclass(frozen=True)
class CallCheck:
    """What a tool call would do, decided before running it: its error (None: it can run), and for
    a valid call the resolved operands."""

    error: str | None
    operands: tuple[Any, ...] = ()
    cost: int = 0


class KGEnv(TextEnv):
    """Answer a question from a knowledge graph (RDF, SPARQL 1.1) with AgentBench's KG tools.

    ## Description
    Each episode is a question and the entities it names. The Assistant explores the graph with
    ``get_relations``, ``get_neighbors``, ``intersection``, ``get_attributes``, ``argmax``, ``argmin``
    and ``count``; each call that yields a set binds the next variable ``#0, #1, ...`` (a program,
    as in AgentBench: sets are never listed), and ``Final Answer: #n`` ends the episode. Every call
    is one SPARQL query with a time limit and a row cap, on an embedded pyoxigraph store
    (procedural worlds, or ``graph=`` an RDF file) or on ``endpoint=`` a SPARQL URL (e.g. a Virtuoso
    with Freebase, as AgentBench uses; default: the ``CMAT_KG_ENDPOINT`` environment variable).

    ## Action Space
    ``Action: get_relations(Barack Obama)`` lines and ``Final Answer: #3`` (AgentBench's format), or
    JSON tool calls (``{"tool": "get_neighbors", "args": {"variable": "#0", "relation": "..."}}``).
    Errors (an unknown relation for this entity, with the closest valid names; an unbound variable;
    operands of different types) are observations in AgentBench's wording plus the reason.

    ## Observation Space
    Text: the question, then AgentBench's observations (``Observation: [rel1, rel2]``,
    ``Observation: variable #0, which are instances of people.person``).

    ## Rewards
    At the final answer, AgentBench's F1 of the answer set against the gold set (entity ids, or a
    number for a count); ``success`` is exact match. ``info["evaluation"]`` has both.

    ## Episode End
    ``terminated`` on a final answer naming bound variables or entities (one naming an unbound
    variable is refused, as AgentBench refuses it, and costs a round); ``truncated`` after
    ``max_rounds`` (15, as AgentBench).

    ## Arguments
    ``endpoint``: a SPARQL endpoint URL for task files (AgentBench's need Freebase); ``graph``: an
    RDF file (``.ttl``/``.nt``) to load into an embedded store for task files instead;
    ``timeout_s``: per query; ``max_rows``: rows per query.

    ## Version History
    * v0: initial version.
    """

    domain = "kg"
    grammar = GRAMMAR
    default_max_rounds = 15

    def __init__(self, *args: Any, endpoint: str | None = None, graph: str | os.PathLike[str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_rows: int = DEFAULT_MAX_ROWS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_s, self.max_rows = float(timeout_s), int(max_rows)
        endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV) or None
        self.file_backend: SPARQLBackend | None = None
        if graph is not None:
            self.file_backend = OxigraphBackend.from_file(os.fspath(graph), timeout_s=timeout_s, max_rows=max_rows)
        elif endpoint:
            self.file_backend = SPARQLEndpoint(endpoint, timeout_s=timeout_s, max_rows=max_rows)
        if self._tasks is not None and self.file_backend is None and any(
                t.payload.get("source") != "procedural" for t in self._tasks):
            raise NeedsEndpoint(
                "needs endpoint: these KG tasks name Freebase entities, so they run only against a Freebase "
                f"SPARQL endpoint: pass endpoint='http://host:port/sparql' (or set {ENDPOINT_ENV}), or graph= "
                "an RDF file holding their entities")
        self.backend: SPARQLBackend = OxigraphBackend(timeout_s=timeout_s, max_rows=max_rows)
        self.variables: list[Variable] = []
        self.entities: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        self._relations: dict[str, list[str]] = {}
        self._attributes: dict[str, list[str]] = {}
        self._types: dict[str, str] = {}
        self.last_bound: Variable | None = None  # the variable the last call bound (None: it bound none)

    # ----------------------------------------------------------------- tasks
    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        return tasks.generate_task(seed, split, difficulty)

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        return tasks.task_from_id(task_id)

    @classmethod
    def load_tasks(cls, path: str) -> list[Task]:
        return tasks.load_agentbench(path)

    @classmethod
    def oracle_actions(cls, task: Task) -> list[str]:
        return tasks.oracle_actions(task)

    # ----------------------------------------------------------------- episode
    def _setup(self, task: Task) -> None:
        if task.payload.get("source") == "procedural":
            world = task.payload["world"]
            _, store = tasks.world_of(int(world["difficulty"]), int(world["world_seed"]))
            self.backend = OxigraphBackend(store, self.timeout_s, self.max_rows)
        elif self.file_backend is None:
            raise NeedsEndpoint(f"needs endpoint: task {task.task_id} names Freebase entities; pass endpoint=... "
                                f"(or set {ENDPOINT_ENV}) or graph=...")
        else:
            self.backend = self.file_backend
        self.entities = dict(task.payload.get("entities", {}))
        self._folded = {name.casefold(): eid for name, eid in self.entities.items()}
        self.variables = []
        self._relations, self._attributes, self._types = {}, {}, {}
        self.last_bound = None

    def step_parsed(self, action: str, parsed: ParsedAction | ActionError) -> tuple[str, float, bool, bool, dict[str, Any]]:
        # AgentBench refuses a final answer naming an unbound variable and lets the agent go on.
        if not isinstance(parsed, ActionError) and parsed.kind == ANSWER and not self._done and self.unbound(parsed.value):
            self.rounds += 1
            return self._finish_step(action, INVALID_VARIABLE, parsed=parsed, error="invalid_variable",
                                     truncated=self.rounds >= self.max_rounds)
        return super().step_parsed(action, parsed)

    def unbound(self, answers: list[str]) -> list[str]:
        """The answer items that name a variable not bound in this episode."""
        return [a for a in answers if (m := VARIABLE.fullmatch(a.strip())) and int(m.group(1)) >= len(self.variables)]

    def _execute(self, action: ParsedAction) -> str:
        self.last_bound = None
        check = self.check_call(action)
        if check.error is not None:
            return check.error
        try:
            return self._run(action, check)
        except QueryError as exc:
            return self._cannot(action, f"The query failed: {exc}")
        except ValueError as exc:
            return self._cannot(action, f"Cannot compile: {exc}")

    # ----------------------------------------------------------------- checking a call (also the checker's dry run)
    def check_call(self, action: ParsedAction) -> CallCheck:
        """Whether ``action`` can run now, without running it: unknown variables or entities, a
        relation or attribute the operand does not have (with the closest names), operands of
        different types. May query the store (relations of a set); never changes the episode."""
        tool, args = action.tool, action.args
        try:
            if tool in ("get_relations", "get_neighbors"):
                expr, type_, cost = self.resolve(args["variable"], entities=True)
            else:
                expr, type_, cost = self.resolve(args["variable" if "variable" in args else "variable1"],
                                                 entities=False)
            if type_ == NUMBER_TYPE:
                return CallCheck(self._cannot(action, "That variable is a number (from count); it has no "
                                                      "relations, attributes or members to combine."))
            if tool == "get_neighbors":
                return self._check_name(action, expr, args["relation"], self.relations_of(expr), "relation",
                                        "get_relations", type_, cost + 1)
            if tool in ("argmax", "argmin"):  # the set is compiled twice: once for its members, once for the best
                return self._check_name(action, expr, args["attribute"], self.attributes_of(expr), "attribute",
                                        "get_attributes", type_, 2 * cost + 2)
            if tool == "intersection":
                other, other_type, other_cost = self.resolve(args["variable2"], entities=False)
                if other_type != type_:
                    return CallCheck(
                        f"intersection({args['variable1']}, {args['variable2']}) cannot be executed. The two "
                        f"variables are not of the same type. You may further explore them by call get_relations "
                        f"({args['variable1']} are instances of {type_}, {args['variable2']} of {other_type}).")
                return self._checked(action, (expr, type_, other), cost + other_cost)
            return self._checked(action, (expr, type_), cost)
        except _Unresolved as exc:
            return CallCheck(self._cannot(action, str(exc)))
        except QueryError as exc:
            return CallCheck(self._cannot(action, f"The query failed: {exc}"))
        except ValueError as exc:  # a task file's name that is no Freebase name, a bad program: never queried
            return CallCheck(self._cannot(action, f"Cannot compile: {exc}"))

    def _checked(self, action: ParsedAction, operands: tuple[Any, ...], cost: int) -> CallCheck:
        if cost > MAX_PROGRAM_COST:
            return CallCheck(self._cannot(action, f"The new variable's query would be too large ({cost} patterns, "
                                                  f"at most {MAX_PROGRAM_COST}): build it from smaller variables."))
        return CallCheck(None, operands, cost)

    def _check_name(self, action: ParsedAction, expr: sexpr.SExpr, name: str, valid: list[str], what: str,
                    lister: str, type_: str, cost: int) -> CallCheck:
        if name in valid:
            return self._checked(action, (expr, type_, name), cost)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        listed = "" if valid else f" It has no {what}s."
        return CallCheck(self._cannot(action, f"'{name}' is not a {what} of {action.args['variable']}; call "
                                              f"{lister}({action.args['variable']}) to list them.{hint}{listed}"))

    @staticmethod
    def _cannot(action: ParsedAction, why: str) -> str:
        args = ", ".join(str(v) for v in action.args.values())
        return f"{action.tool}({args}) cannot be executed. You may make a mistake and need to fix it. {why}"

    def resolve(self, text: str, *, entities: bool) -> tuple[sexpr.SExpr, str, int]:
        """(program, type, cost) of a tool argument: ``#n`` (also ``variable #n``), or with ``entities``
        an entity of the question by name (any case) or a Freebase id. Raises _Unresolved."""
        text = text.strip()
        for prefix in ("variable ", "Variable "):
            text = text.removeprefix(prefix)
        match = VARIABLE.fullmatch(text)
        if match:
            index = int(match.group(1))
            if index >= len(self.variables):
                bound = f"#0 to #{len(self.variables) - 1}" if self.variables else "none yet"
                raise _Unresolved(f"Variable {text} is not bound (bound: {bound}).")
            var = self.variables[index]
            return var.expr, var.type, var.cost
        if not entities:
            raise _Unresolved(f"'{text[:80]}' is not a variable: this tool takes a variable such as #0.")
        entity = self.entities.get(text) or self._folded.get(text.casefold())
        if entity is None and sexpr.is_entity(text):
            entity = text
        if entity is None:
            names = ", ".join(self.entities) or "none"
            arity = " If you meant several arguments: this tool takes one." if "," in text else ""
            raise _Unresolved(f"'{text[:80]}' is neither a variable nor an entity of the question "
                              f"(entities: {names}).{arity}")
        return entity, "entity", 1

    # ----------------------------------------------------------------- store look-ups (cached per program)
    def relations_of(self, expr: sexpr.SExpr) -> list[str]:
        """The relations from the program's members to other entities (schema relations hidden)."""
        key = sexpr.write(expr)
        if key not in self._relations:
            rows = self.backend.select(sexpr.relations_query(expr, 5000), max_rows=5000)
            self._relations[key] = sorted(r for r in rows_column(rows) if _visible(r))
        return self._relations[key]

    def attributes_of(self, expr: sexpr.SExpr) -> list[str]:
        """The numeric and date attributes of the program's members."""
        key = sexpr.write(expr)
        if key not in self._attributes:
            rows = self.backend.select(sexpr.attributes_query(expr, 5000), max_rows=5000)
            self._attributes[key] = sorted(r for r in rows_column(rows) if _visible(r))
        return self._attributes[key]

    def range_of(self, relation: str, expr: sexpr.SExpr) -> str:
        """The type of what ``relation`` leads to: its declared range, else the commonest type of the
        targets (``expr`` is the new variable's program)."""
        if relation not in self._types:
            declared = rows_column(self.backend.select(sexpr.expected_type_query(relation), max_rows=1))
            if not declared:
                types = [t for t in rows_column(self.backend.select(sexpr.member_types_query(expr), max_rows=2000))
                         if not t.startswith(_HIDDEN_PREFIXES)]
                declared = [Counter(types).most_common(1)[0][0]] if types else ["common.topic"]
            self._types[relation] = declared[0]
        return self._types[relation]

    # ----------------------------------------------------------------- running a checked call
    def _run(self, action: ParsedAction, check: CallCheck) -> str:
        tool, operands, cost = action.tool, check.operands, check.cost
        if tool == "get_relations":
            return f"Observation: [{', '.join(self.relations_of(operands[0])[:MAX_LISTED])}]"
        if tool == "get_attributes":
            return f"Observation: [{', '.join(self.attributes_of(operands[0])[:MAX_LISTED])}]"
        if tool == "get_neighbors":
            expr, _, relation = operands
            new = sexpr.forward(relation, expr)
            return self._bind(new, self.range_of(relation, new), cost)
        if tool == "intersection":
            return self._bind(("AND", operands[0], operands[2]), operands[1], cost)
        if tool in ("argmax", "argmin"):
            expr, type_, attribute = operands
            return self._bind((tool.upper(), expr, attribute), type_, cost)
        return self._bind(("COUNT", operands[0]), NUMBER_TYPE, cost)

    def _bind(self, expr: sexpr.SExpr, type_: str, cost: int) -> str:
        empty = not self.backend.select(sexpr.exists_query(expr), max_rows=1)
        variable = Variable(type_, expr, empty, cost)
        self.variables.append(variable)
        self.last_bound = variable
        n = len(self.variables) - 1
        if type_ == NUMBER_TYPE:
            return f"Observation: variable #{n}, which is a number"
        return f"Observation: variable #{n}, which are instances of {type_}"

    def dry_run(self, action: ParsedAction) -> tuple[bool, str]:
        """(fine, what it shows) for an operation, without binding anything: an error is not fine, nor is
        an empty relation/attribute list or a call that would bind an empty set."""
        check = self.check_call(action)
        if check.error is not None:
            return False, check.error
        try:
            if action.tool in ("get_relations", "get_attributes"):
                text = self._run(action, check)
                return not text.endswith("[]"), text
            saved = list(self.variables), self.last_bound
            try:
                text = self._run(action, check)
                fine = self.last_bound is not None and not self.last_bound.empty
            finally:
                self.variables, self.last_bound = saved
            return fine, text
        except QueryError as exc:
            return False, self._cannot(action, f"The query failed: {exc}")

    # ----------------------------------------------------------------- grading
    def answer_set(self, answers: list[str]) -> set[str]:
        """The answer as a set: a variable's members (or its number), an entity name's id, or the text."""
        found: set[str] = set()
        for item in answers:
            item = item.strip()
            match = VARIABLE.fullmatch(item)
            if match and int(match.group(1)) < len(self.variables):
                found.update(tasks.execute(self.backend, self.variables[int(match.group(1))].expr, self.max_rows))
            elif item:
                found.add(self.entities.get(item) or self._folded.get(item.casefold()) or item)
        return found

    def _evaluate(self, answers: list[str]) -> Evaluation:
        predicted = self.answer_set(answers)
        gold = set(self.task.payload["answer"])
        f1 = answer_f1(predicted, gold)
        exact = predicted == gold and bool(gold)
        return Evaluation(f1, exact, f1, {"f1": f1, "exact_match": exact, "predicted": sorted(predicted)[:50],
                                          "gold": sorted(gold)[:50]})

    def _teardown(self) -> None:
        if self.file_backend is not None:
            self.file_backend.close()


class _Unresolved(Exception):
    """A tool argument that names no bound variable or question entity."""


def _visible(name: str) -> bool:
    return not name.startswith(_HIDDEN_PREFIXES) and name.count(".") >= 2


def answer_f1(predicted: set[str], gold: set[str]) -> float:
    """AgentBench's KG F1 of an answer set (0 when nothing overlaps)."""
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)
