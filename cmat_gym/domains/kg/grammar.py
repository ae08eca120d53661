"""The KG action grammar: AgentBench's seven tools, its ``Action: get_relations(...)`` lines and its
``Final Answer: #3``, plus JSON tool calls (from the kit's grammar)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.actions import (
    ANSWER,
    ActionError,
    Arg,
    CallProtocol,
    Grammar,
    ParsedAction,
    Tool,
    parse_answer_list,
)

VARIABLE = re.compile(r"#(\d{1,6})")
_FINAL = re.compile(r"(?:Final|Find)\s*+Answer\s*+\**+\s*+[:：]\s*+(.*)", re.IGNORECASE | re.DOTALL)
_PLAIN_CALL = re.compile(r"^[^\S\n]*+(?:Action[^\S\n]*+:[^\S\n]*+)?([A-Za-z_]\w*)[^\S\n]*+\(([^()\[\]\"'\n]*)\)",
                         re.MULTILINE)
_TWO_ARG_CALL = re.compile(r"\b(get_neighbors|argmax|argmin)[^\S\n]*+\(([^\n]*)\)")


@dataclass(frozen=True)
class FinalAnswerProtocol:
    """AgentBench's ``Final Answer: #3`` (a variable), or ``Final Answer: ["m.0abc", ...]`` (entities
    or values). As AgentBench does, text after ``Observation:`` (a hallucinated observation) is ignored."""

    def parse(self, text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
        if "nswer" not in text and "NSWER" not in text:  # most steps are tool calls: skip the regex scan
            return None
        match = _FINAL.search(text.split("Observation:", 1)[0])
        if match is None:
            return None
        body = match.group(1).strip()
        # "#3", and leniently "variable #3" or "the answer is #3"; a list ["m.0a", ...] names entities.
        variable = VARIABLE.search(body.splitlines()[0]) if body and not body.startswith("[") else None
        answers = [variable.group(0)] if variable else parse_answer_list(body)
        return grammar.bind(grammar.answer_tool.name, [answers], "text")

    def write(self, grammar: Grammar, tool: Tool, args: Mapping[str, Any]) -> str | None:
        if tool.kind != ANSWER:
            return None
        values = list(args.get(tool.args[0].name, []))
        if len(values) == 1 and VARIABLE.fullmatch(values[0]):
            return f"Final Answer: {values[0]}"
        return f"Final Answer: {json.dumps(values, ensure_ascii=False)}"

    def example(self, grammar: Grammar) -> str:
        return "Final Answer: #3"


@dataclass(frozen=True)
class KGCallProtocol:
    """:class:`CallProtocol` lines (``Action: get_neighbors(Barack Obama, people.person.profession)``),
    where a two-argument call whose first argument holds commas (entity names such as "Hello, World")
    is split at its last comma, since relation and attribute names never hold one."""

    inner: CallProtocol = CallProtocol("Action")

    def parse(self, text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
        # The common case, one plain call (a single "(" and no quotes or brackets inside), is split
        # here with str methods: the general splitter walks the text a character at a time, and that
        # showed as a fifth of a KG step in the profile.
        if text.count("(") == 1:
            match = _PLAIN_CALL.search(text)
            if match and grammar.has_tool(match.group(1)):
                tool = grammar.tool(match.group(1))
                body = match.group(2).strip()
                if tool.kind != ANSWER and (len(tool.args) == 1 or body.count(",") == 1):
                    values = [body] if len(tool.args) == 1 else [v.strip() for v in body.split(",")]
                    return grammar.bind(tool.name, values if body else [], "text")
        parsed = self.inner.parse(text, grammar)
        if isinstance(parsed, ActionError) and "argument(s), actual" in parsed.message:
            match = _TWO_ARG_CALL.search(text)
            if match and "," in match.group(2):
                head, _, tail = match.group(2).rpartition(",")
                return grammar.bind(match.group(1), [head.strip(), tail.strip()], "text")
        return parsed

    def write(self, grammar: Grammar, tool: Tool, args: Mapping[str, Any]) -> str | None:
        return self.inner.write(grammar, tool, args)

    def example(self, grammar: Grammar) -> str:
        return "Action: get_relations(Barack Obama)\nAction: get_neighbors(#0, people.person.profession)"


_VAR_DOC = "a variable (#0) or an entity of the question"
GRAMMAR = Grammar(
    tools=(
        Tool("get_relations", (Arg("variable", "string", _VAR_DOC),),
             "the relations from the entity or the variable's entities to other entities"),
        Tool("get_neighbors", (Arg("variable", "string", _VAR_DOC), Arg("relation", "string", "a relation")),
             "the entities linked by the relation: binds a new variable"),
        Tool("intersection", (Arg("variable1", "string", "a variable"), Arg("variable2", "string", "a variable")),
             "the entities in both variables (of the same type): binds a new variable"),
        Tool("get_attributes", (Arg("variable", "string", "a variable"),),
             "the numeric and date attributes of the variable's entities"),
        Tool("argmax", (Arg("variable", "string", "a variable"), Arg("attribute", "string", "an attribute")),
             "the entity with the largest value of the attribute: binds a new variable"),
        Tool("argmin", (Arg("variable", "string", "a variable"), Arg("attribute", "string", "an attribute")),
             "the entity with the smallest value of the attribute: binds a new variable"),
        Tool("count", (Arg("variable", "string", "a variable"),), "the number of entities: binds a new variable"),
        Tool("final_answer", (Arg("answer", "array", "a variable (#3), or entity ids / values"),),
             "give the final answer and end the task", kind=ANSWER),
    ),
    protocols=(FinalAnswerProtocol(), KGCallProtocol()),
    examples=("Action: get_relations(Barack Obama)", "Action: get_neighbors(#0, people.person.profession)",
              "Final Answer: #3"),
)
BINDING_TOOLS = frozenset({"get_neighbors", "intersection", "argmax", "argmin", "count"})
