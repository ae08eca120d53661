"""S-expressions (GrailQA / AgentBench KG logical forms) and their SPARQL.

A KG variable is a *program*: AgentBench's tools never list a set's members, they build an
s-expression, and the final answer executes it. The forms:

* ``m.0abc`` an entity; ``film.film`` (a bare dotted name that is not an entity) a type;
* ``(JOIN r x)``: things with relation ``r`` to a member of ``x``; ``(JOIN (R r) x)`` (or ``r_inv``):
  things a member of ``x`` points to by ``r`` (AgentBench's ``get_neighbors(x, r)``); ``x`` may be
  a number or a date literal;
* ``(AND a b)`` intersection (``a`` may be a type), ``(OR a b)`` union;
* ``(ARGMAX x attr)`` / ``(ARGMIN x attr)``: the members of ``x`` with the largest / smallest value
  of ``attr`` (all ties);
* ``(lt r v)``, ``(le r v)``, ``(gt r v)``, ``(ge r v)``: things whose ``r`` value compares with ``v``;
* ``(COUNT x)``: the number of members (outermost only).

Every name becomes an IRI through :func:`~cmat_gym.domains.kg.backend.iri` and every value through
:func:`~cmat_gym.domains.kg.backend.literal`, so a program from any source (an agent, a task file)
cannot inject SPARQL: a bad symbol raises :class:`SExprError`.
"""

from __future__ import annotations

import re

from cmat_gym.domains.kg.backend import NS, XSD, iri, is_name, literal

SExpr = str | tuple["SExpr", ...]  # a symbol, or a form of s-expressions
ENTITY = re.compile(r"[mgf]\.[A-Za-z0-9_]+")
TYPE_PREDICATE = "type.object.type"
NAME_PREDICATE = "type.object.name"
EXPECTED_TYPE = "type.property.expected_type"
REVERSE_PROPERTY = "type.property.reverse_property"
COMPARISONS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
MAX_DEPTH = 40
NUMERIC_TYPES = ("integer", "int", "decimal", "double", "float", "date", "dateTime", "gYear", "gYearMonth")


class SExprError(ValueError):
    """An s-expression that cannot be parsed or compiled (the message says where)."""


def is_entity(symbol: object) -> bool:
    """Whether ``symbol`` is an entity id (``m.0abc``, ``g.11x``, ``f.x``) rather than a type or relation."""
    return isinstance(symbol, str) and ENTITY.fullmatch(symbol) is not None


# ---------------------------------------------------------------------------- parsing and writing
def parse(text: str) -> SExpr:
    """The nested tuples of an s-expression text; SExprError on unbalanced or empty text."""
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    pos = 0

    def read(depth: int) -> SExpr:
        nonlocal pos
        if depth > MAX_DEPTH:
            raise SExprError(f"Expects at most {MAX_DEPTH} nested forms")
        if pos >= len(tokens):
            raise SExprError("Expects a form, actual end of text")
        token = tokens[pos]
        pos += 1
        if token == ")":
            raise SExprError("Unexpected ')'")
        if token != "(":
            return token
        items: list[SExpr] = []
        while pos < len(tokens) and tokens[pos] != ")":
            items.append(read(depth + 1))
        if pos >= len(tokens):
            raise SExprError("Expects ')', actual end of text")
        pos += 1
        return tuple(items)

    expr = read(0)
    if pos != len(tokens):
        raise SExprError("Expects one form, actual trailing text")
    return expr


def write(expr: SExpr) -> str:
    """The text of an s-expression."""
    return expr if isinstance(expr, str) else "(" + " ".join(write(e) for e in expr) + ")"


def forward(relation: str, expr: SExpr) -> SExpr:
    """``(JOIN (R relation) expr)``: what members of ``expr`` point to (``get_neighbors``)."""
    return ("JOIN", ("R", relation), expr)


# ---------------------------------------------------------------------------- compiling
class _Compiler:
    def __init__(self) -> None:
        self.n = 0

    def fresh(self) -> str:
        self.n += 1
        return f"?v{self.n}"

    def node(self, expr: SExpr, var: str, depth: int = 0) -> list[str]:
        """Graph patterns that bind ``var`` to the members of ``expr``."""
        if depth > MAX_DEPTH:
            raise SExprError("program nested too deeply")
        if isinstance(expr, str):
            if is_entity(expr):
                return [f"VALUES {var} {{ {iri(expr)} }}"]
            if is_name(expr) and "." in expr:
                return [f"{var} {iri(TYPE_PREDICATE)} {iri(expr)} ."]
            return [f"VALUES {var} {{ {self.value(expr)} }}"]
        if not expr:
            raise SExprError("empty form ()")
        head, args = expr[0], expr[1:]
        if head == "JOIN" and len(args) == 2:
            return self.join(args[0], args[1], var, depth)
        if head == "AND" and len(args) == 2:
            return self.node(args[0], var, depth + 1) + self.node(args[1], var, depth + 1)
        if head == "OR" and len(args) == 2:
            left = " ".join(self.node(args[0], var, depth + 1))
            right = " ".join(self.node(args[1], var, depth + 1))
            return [f"{{ {left} }} UNION {{ {right} }}"]
        if head in ("ARGMAX", "ARGMIN") and len(args) == 2:
            return self.arg_best(head, args[0], args[1], var, depth)
        if head in COMPARISONS and len(args) == 2:
            relation, value = args
            v = self.fresh()
            return [f"{var} {iri(self.relation(relation))} {v} .",
                    f"FILTER({v} {COMPARISONS[str(head)]} {self.value(value)})"]
        if head == "COUNT":
            raise SExprError("COUNT is only allowed outermost")
        raise SExprError(f"unknown form {write(expr)[:80]!r}")

    @staticmethod
    def relation(symbol: SExpr) -> str:
        if not isinstance(symbol, str) or not is_name(symbol):
            raise SExprError(f"Expects a relation name, actual {write(symbol)[:80]!r}")
        return symbol

    @staticmethod
    def value(symbol: SExpr) -> str:
        if not isinstance(symbol, str):
            raise SExprError(f"Expects a value, actual {write(symbol)[:80]!r}")
        try:
            return literal(symbol)
        except ValueError as exc:
            raise SExprError(str(exc)) from None

    def join(self, rel: SExpr, sub: SExpr, var: str, depth: int) -> list[str]:
        reverse = False
        if isinstance(rel, tuple) and len(rel) == 2 and rel[0] == "R":
            rel, reverse = rel[1], True
        relation = self.relation(rel)
        if relation.endswith("_inv"):
            relation, reverse = relation[: -len("_inv")], not reverse
        predicate = iri(relation)
        if isinstance(sub, str) and is_entity(sub):
            other, patterns = iri(sub), []
        elif isinstance(sub, str) and not (is_name(sub) and "." in sub):
            other, patterns = self.value(sub), []
        else:
            other = self.fresh()
            patterns = self.node(sub, other, depth + 1)
        triple = f"{other} {predicate} {var} ." if reverse else f"{var} {predicate} {other} ."
        return patterns + [triple]

    def arg_best(self, head: SExpr, sub: SExpr, attribute: SExpr, var: str, depth: int) -> list[str]:
        attr = iri(self.relation(attribute))
        value, inner, inner_value, best = self.fresh(), self.fresh(), self.fresh(), self.fresh()
        aggregate = "MAX" if head == "ARGMAX" else "MIN"
        inner_patterns = " ".join(self.node(sub, inner, depth + 1))
        return self.node(sub, var, depth + 1) + [
            f"{var} {attr} {value} .",
            f"{{ SELECT ({aggregate}({inner_value}) AS {best}) WHERE {{ {inner_patterns} {inner} {attr} {inner_value} . }} }}",
            f"FILTER({value} = {best})",
        ]


def _body(expr: SExpr, var: str = "?x") -> str:
    return " ".join(_Compiler().node(expr, var))


def is_count(expr: SExpr) -> bool:
    """Whether the program is ``(COUNT x)`` (its answer is a number)."""
    return isinstance(expr, tuple) and len(expr) == 2 and expr[0] == "COUNT"


def members_query(expr: SExpr, limit: int) -> str:
    """The SPARQL listing the program's answer: its members, or for ``(COUNT x)`` one number."""
    if is_count(expr):
        return f"SELECT (COUNT(DISTINCT ?x) AS ?count) WHERE {{ {_body(expr[1])} }}"
    return f"SELECT DISTINCT ?x WHERE {{ {_body(expr)} }} LIMIT {int(limit)}"


def exists_query(expr: SExpr) -> str:
    """The SPARQL returning one row when the program has a member (COUNT: always)."""
    if is_count(expr):
        return "SELECT ?x WHERE { VALUES ?x { 0 } }"
    return f"SELECT ?x WHERE {{ {_body(expr)} }} LIMIT 1"


def relations_query(expr: SExpr, limit: int) -> str:
    """The relations leaving the program's members towards other entities (``get_relations``)."""
    return (f"SELECT DISTINCT ?r WHERE {{ {_body(expr)} ?x ?r ?o . FILTER(isIRI(?o) && "
            f'STRSTARTS(STR(?r), "{NS}")) }} LIMIT {int(limit)}')


def attributes_query(expr: SExpr, limit: int) -> str:
    """The numeric and date attributes of the program's members (``get_attributes``)."""
    types = ", ".join(f"<{XSD}{t}>" for t in NUMERIC_TYPES)
    return (f"SELECT DISTINCT ?r WHERE {{ {_body(expr)} ?x ?r ?o . FILTER(isLiteral(?o) && "
            f'DATATYPE(?o) IN ({types}) && STRSTARTS(STR(?r), "{NS}")) }} LIMIT {int(limit)}')


def expected_type_query(relation: str) -> str:
    """The relation's declared range (Freebase ``type.property.expected_type``)."""
    return f"SELECT ?t WHERE {{ {iri(relation)} {iri(EXPECTED_TYPE)} ?t }} LIMIT 1"


def member_types_query(expr: SExpr, limit: int = 200) -> str:
    """The types of the program's first members (the fallback when a relation declares no range)."""
    return (f"SELECT ?t WHERE {{ {{ SELECT DISTINCT ?x WHERE {{ {_body(expr)} }} LIMIT {int(limit)} }} "
            f"?x {iri(TYPE_PREDICATE)} ?t . }}")


def names_query(ids: list[str]) -> str:
    """The ``type.object.name`` of each id."""
    values = " ".join(iri(i) for i in ids)
    return f"SELECT ?x ?name WHERE {{ VALUES ?x {{ {values} }} ?x {iri(NAME_PREDICATE)} ?name . }}"
