"""A domain's tools, and the lenient parser that turns the Assistant's raw text into one tool call.

A domain declares its tools once (:class:`Tool`: a name, typed arguments, a one-line doc, and
whether calling it ends the episode) in a :class:`Grammar`, together with the *text protocols* its
prompts teach. The same declaration then

* **parses** every form an instruct model writes a tool call in (:meth:`Grammar.parse`): the domain's
  text protocols (AgentBench's ``Action: Operation`` + a fenced block and ``Action: Answer`` +
  ``Final Answer: [...]``, a function-call line ``Action: get_relations(m.0abc)``, a bracket call
  ``search[red shoes]``), and JSON tool calls in every common shape: ``{"tool": ..., "args": ...}``,
  ``{"name": ..., "arguments": ...}`` (arguments as an object or a JSON string), an OpenAI message
  with ``tool_calls``, Hermes-style ``<tool_call>{...}</tool_call>``, bare or inside a fenced block;
* **writes** actions (:meth:`Grammar.call`, :meth:`Grammar.answer`) in the domain's first text
  protocol, so oracles, random agents and SFT data never build action text by hand;
* **exports** the tools as JSON schemas (:meth:`Grammar.tool_schemas`: the ``tools=[...]`` list a
  chat template or an API model takes).

Parsing never raises on bad text: it returns an :class:`ActionError` whose message tells the
Assistant how to fix its action (an observation, as AgentBench does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

OPERATION = "operation"
ANSWER = "answer"
ARG_TYPES = ("string", "integer", "number", "boolean", "array")


# ====================================================================== declarations
@dataclass(frozen=True)
class Arg:
    """One argument of a tool.

    Attributes:
        name: the argument's name in JSON calls (``"sql"``).
        type: one of ``string``, ``integer``, ``number``, ``boolean``, ``array`` (of strings).
        doc: a one-line description (goes into the JSON schema).
        required: whether a call must give it.
    """

    name: str
    type: str = "string"
    doc: str = ""
    required: bool = True

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise ValueError(f"Expects Arg.type in {ARG_TYPES}, actual {self.type!r}")


@dataclass(frozen=True)
class Tool:
    """One tool of a domain: ``kind="answer"`` tools end the episode (their arguments are the answer).

    Attributes:
        name: the tool's name (``"execute_sql"``).
        args: its arguments, in positional order (text protocols fill them by position).
        doc: what it does, in one line.
        kind: ``"operation"`` (runs in the environment) or ``"answer"`` (the final answer).
    """

    name: str
    args: tuple[Arg, ...] = ()
    doc: str = ""
    kind: str = OPERATION

    def __post_init__(self) -> None:
        if self.kind not in (OPERATION, ANSWER):
            raise ValueError(f"Expects Tool.kind in ('operation', 'answer'), actual {self.kind!r}")

    def signature(self) -> str:
        """``name(arg: type, ...)``: how the help text names the tool."""
        return f"{self.name}({', '.join(f'{a.name}: {a.type}' for a in self.args)})"

    def schema(self) -> dict[str, Any]:
        """The tool as an OpenAI-style function schema."""
        properties: dict[str, Any] = {}
        for arg in self.args:
            prop: dict[str, Any] = {"type": arg.type, "description": arg.doc}
            if arg.type == "array":
                prop["items"] = {"type": "string"}
            properties[arg.name] = prop
        return {"type": "function", "function": {
            "name": self.name, "description": self.doc,
            "parameters": {"type": "object", "properties": properties,
                           "required": [a.name for a in self.args if a.required]}}}


@dataclass(frozen=True)
class ParsedAction:
    """A well-formed tool call.

    Attributes:
        kind: ``"operation"`` or ``"answer"`` (the tool's kind).
        value: for an answer, the answer as a list of strings; for an operation with one argument,
            that argument (e.g. the SQL text); otherwise the arguments dict.
        source: which grammar matched: ``"text"`` (a text protocol) or ``"json"``.
        tool: the tool's name.
        args: the validated arguments.
    """

    kind: str
    value: Any
    source: str
    tool: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, kind: str, value: Any, source: str, tool: str = "",
                 args: Mapping[str, Any] | None = None) -> None:
        # Written by hand (dataclass keeps a class's own __init__): the generated frozen __init__ calls
        # object.__setattr__ once per field, 2-2.5x slower, and every step builds one of these.
        fields = self.__dict__
        fields["kind"] = kind
        fields["value"] = value
        fields["source"] = source
        fields["tool"] = tool
        fields["args"] = {} if args is None else args

    def to_dict(self) -> dict[str, Any]:
        """The call as a JSON-ready dict (for ``info["parsed_action"]``; it shares this object's values:
        every parse makes new ones, so nothing else holds them)."""
        return {"kind": self.kind, "value": self.value, "source": self.source, "tool": self.tool,
                "args": dict(self.args)}


@dataclass(frozen=True)
class ActionError:
    """Why an action could not be parsed; ``message`` is written for the Assistant to read."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


class TextProtocol(Protocol):
    """One text form of tool calls: parses the forms it recognises, and writes calls in its form."""

    def parse(self, text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
        """The call ``text`` holds, an error when it is this protocol's form gone wrong, or None when
        the text is not in this form at all (the next protocol is tried)."""
        ...

    def write(self, grammar: Grammar, tool: Tool, args: Mapping[str, Any]) -> str | None:
        """``tool`` called with ``args`` in this form, or None when the form cannot express it."""
        ...

    def example(self, grammar: Grammar) -> str:
        """A short example for the help text ("" for none)."""
        ...


# ====================================================================== the grammar
@dataclass(frozen=True)
class Grammar:
    """A domain's action grammar: its tools and the text protocols its prompts teach.

    Args:
        tools: every tool, operation tools first; exactly one should be an answer tool.
        protocols: text protocols, tried in order; the first one writes actions.
        examples: example actions shown in the help text (default: each protocol's example).
    """

    tools: tuple[Tool, ...]
    protocols: tuple[TextProtocol, ...] = ()
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Expects one or more tools with distinct names, actual {names}")
        # A name -> tool table: parsing runs every step, and a linear scan showed in the step profile.
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tools})

    # ---------------------------------------------------------------- lookups
    def tool(self, name: str) -> Tool:
        """The tool called ``name`` (KeyError when there is none)."""
        return self._by_name[name]  # type: ignore[attr-defined]

    def has_tool(self, name: str) -> bool:
        """Whether the grammar has a tool called ``name``."""
        return name in self._by_name  # type: ignore[attr-defined]

    @property
    def answer_tool(self) -> Tool:
        """The tool that gives the final answer."""
        return next(t for t in self.tools if t.kind == ANSWER)

    @property
    def operation_tools(self) -> tuple[Tool, ...]:
        """The tools that act in the environment."""
        return tuple(t for t in self.tools if t.kind == OPERATION)

    def tool_schemas(self) -> list[dict[str, Any]]:
        """Every tool as an OpenAI-style function schema (the ``tools=[...]`` list of a chat template)."""
        return [t.schema() for t in self.tools]

    # ---------------------------------------------------------------- help
    def help(self) -> str:
        """The grammar, as shown to an Assistant (system prompt, and after a malformed action)."""
        examples = self.examples or tuple(e for p in self.protocols if (e := p.example(self)))
        lines = ["Reply with exactly one action"]
        if examples:
            lines[0] += ", either"
            lines.append("\nor\n".join(examples))
            lines.append("or a JSON tool call:")
        else:
            lines[0] += " as a JSON tool call:"
        lines[-1] += ' {"tool": "<name>", "args": {...}} with one of the tools'
        lines.extend(f"- {t.signature()}: {t.doc}".rstrip(": ") for t in self.tools)
        return "\n".join(lines)

    # ---------------------------------------------------------------- parsing
    def parse(self, text: Any) -> ParsedAction | ActionError:
        """Parse the Assistant's raw text (see the module docstring); never raises."""
        if not isinstance(text, str):
            return ActionError(f"Expects the action as text, actual {type(text).__name__}.")
        if not text.strip():
            return ActionError("Empty action. " + self.help())
        parsed = parse_json_call(text, self)
        if parsed is not None:
            return parsed
        for protocol in self.protocols:
            parsed = protocol.parse(text, self)
            if parsed is not None:
                return parsed
        match = ACTION_LINE.search(text)
        if match:
            return ActionError(f"Unknown action '{match.group(1)}'. " + self.help())
        return ActionError("No action found. " + self.help())

    def bind(self, name: str, args: Any, source: str) -> ParsedAction | ActionError:
        """A call of tool ``name`` with ``args`` (a dict, or a list filled by position), checked and
        converted to the declared types."""
        tool = self._by_name.get(name)  # type: ignore[attr-defined]
        if tool is None:
            known = ", ".join(f"'{t.name}'" for t in self.tools)
            return ActionError(f"Unknown tool '{name}': expects one of {known}. " + self.help())
        if type(args) is list and len(args) == 1 and len(tool.args) == 1 and tool.kind == OPERATION:
            # The common case, one text argument of a one-argument operation (every text protocol's
            # operation), checked without the general loop below: this runs on every step.
            arg, raw = tool.args[0], args[0]
            if arg.type == "string" and type(raw) is str and (value := raw.strip()):
                return ParsedAction(OPERATION, value, source, name, {arg.name: value})
        if isinstance(args, list | tuple):
            if len(args) > len(tool.args):
                return ActionError(f"'{name}' takes {len(tool.args)} argument(s), actual {len(args)}. "
                                   f"Usage: {tool.signature()}.")
            args = {tool.args[0].name: args[0]} if len(args) == 1 else {
                a.name: v for a, v in zip(tool.args, args, strict=False)}
        if not isinstance(args, dict):
            return ActionError(f"Expects 'args' to be an object, actual {type(args).__name__}. " + self.help())
        bound: dict[str, Any] = {}
        for arg in tool.args:
            if arg.name not in args:
                if arg.required:
                    return ActionError(f"'{name}' needs the argument '{arg.name}' ({arg.type}). "
                                       f"Usage: {tool.signature()}.")
                continue
            raw = args[arg.name]
            # The common case first: a non-blank string for a string argument.
            value = (raw.strip() or None) if arg.type == "string" and type(raw) is str else _convert(raw, arg.type)
            if value is None:
                return ActionError(f"'{name}' needs a non-empty {arg.type} argument '{arg.name}', "
                                   f"actual {_short(args[arg.name])}. Usage: {tool.signature()}.")
            bound[arg.name] = value
        if tool.kind == ANSWER:
            answers: list[str] = []
            for value in bound.values():
                answers.extend(value if isinstance(value, list) else [_scalar_text(value)])
            return ParsedAction(ANSWER, answers, source, name, bound)
        value = bound[tool.args[0].name] if len(tool.args) == 1 and tool.args[0].name in bound else dict(bound)
        return ParsedAction(OPERATION, value, source, name, bound)

    # ---------------------------------------------------------------- writing
    def call(self, name: str, /, *args: Any, **kwargs: Any) -> str:
        """The text of a call of tool ``name`` (arguments by position or name), in the first text
        protocol that can write it, else as a JSON tool call. Raises ValueError for a bad call."""
        tool = self.tool(name)
        values = {**{a.name: v for a, v in zip(tool.args, args, strict=False)}, **kwargs}
        checked = self.bind(name, values, "text")
        if isinstance(checked, ActionError):
            raise ValueError(checked.message)
        for protocol in self.protocols:
            text = protocol.write(self, tool, checked.args)
            if text is not None:
                return text
        return self.call_json(name, **checked.args)

    def call_json(self, name: str, /, **args: Any) -> str:
        """The JSON tool call ``{"tool": name, "args": args}``."""
        self.tool(name)
        return json.dumps({"tool": name, "args": args}, ensure_ascii=False)

    def answer(self, answers: Sequence[Any] | Any = ()) -> str:
        """The text of the final answer ``answers`` (a list, or one value)."""
        tool = self.answer_tool
        if not tool.args:
            return self.call(tool.name)
        arg = tool.args[0]
        if arg.type == "array":
            values = list(answers) if isinstance(answers, list | tuple) else [answers]
            return self.call(tool.name, **{arg.name: [_scalar_text(v) for v in values]})
        value = answers[0] if isinstance(answers, list | tuple) and len(answers) == 1 else answers
        return self.call(tool.name, **{arg.name: _scalar_text(value)})


def parse_action(text: str, grammar: Grammar) -> ParsedAction | ActionError:
    """``grammar.parse(text)``: the module-level spelling."""
    return grammar.parse(text)


def _convert(value: Any, type_: str) -> Any:
    """``value`` as ``type_``, or None when it cannot be (or is an empty string)."""
    if type_ == "string":
        return value.strip() if isinstance(value, str) and value.strip() else None
    if type_ == "array":
        values = value if isinstance(value, list) else [value]
        return [_scalar_text(v) for v in values]
    if type_ == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}.get(text)
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    if number is None:
        return None
    if type_ == "integer":
        return int(number) if number.is_integer() else None
    return number


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ====================================================================== JSON tool calls
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.DOTALL)


def parse_json_call(text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
    """A JSON tool call in any common shape (see the module docstring), or None when the text holds none."""
    candidate = text.strip()
    if "<tool_call>" in candidate:
        match = _HERMES.search(candidate)
        candidate = match.group(1).strip() if match else candidate
    if not candidate.startswith(("{", "[")):
        if "{" not in candidate or "```" not in candidate:
            return None  # the common text-protocol case: no regex work here
        fence = _FENCE.search(candidate)
        if not (fence and fence.group(1).lower() in ("", "json")):
            return None
        candidate = fence.group(2).strip()
        if not candidate.startswith("{"):
            return None
    try:
        obj = json.loads(candidate)
    except (json.JSONDecodeError, RecursionError):
        # Could still be prose that starts with a brace; only complain if it looks like a tool call.
        if candidate.startswith("{") and ('"tool"' in candidate or '"name"' in candidate):
            return ActionError("The JSON tool call is not valid JSON. " + grammar.help())
        return None
    call = _find_call(obj)
    if call is None:
        return None
    name, args = call
    if isinstance(args, list):
        return ActionError("Expects 'args' to be an object, actual list. " + grammar.help())
    if not isinstance(name, str):
        return ActionError(f"Expects the tool name to be a string, actual {type(name).__name__}. " + grammar.help())
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            # A plain string for a one-argument tool is that argument (models often do this).
            tool = grammar.tool(name) if grammar.has_tool(name) else None
            args = {tool.args[0].name: args} if tool and len(tool.args) == 1 else {"": args}
    return grammar.bind(name, args, "json")


def _find_call(obj: Any) -> tuple[Any, Any] | None:
    """(name, arguments) of the first tool call in a decoded JSON value, or None."""
    if isinstance(obj, list):
        return _find_call(obj[0]) if obj and isinstance(obj[0], dict) else None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):  # an OpenAI assistant message
        return _find_call(obj["tool_calls"])
    if isinstance(obj.get("function"), dict):  # one OpenAI tool call
        return _find_call(obj["function"])
    name = obj.get("tool", obj.get("name"))
    if name is None:
        return None
    for key in ("args", "arguments", "parameters"):
        if key in obj:
            return name, obj[key]
    return name, {}


# ====================================================================== text protocols
# Possessive quantifiers (no backtracking): with plain ``\s*`` runs of blank lines or spaces made the
# search cubic (4,000 newlines took minutes). ``[^\S\n]`` is whitespace within one line.
ACTION_LINE = re.compile(r"^[^\S\n]*+\**+[^\S\n]*+(?:Action|Act)[^\S\n]*+\**+[^\S\n]*+[:：][^\S\n]*+\**+[^\S\n]*+"
                         r"([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE | re.MULTILINE)
_FENCE_HEADER = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?")
_FINAL_ANSWER = re.compile(r"Final\s*+Answer\s*+\**+\s*+[:：]\s*+\**+\s*+(.*)", re.IGNORECASE | re.DOTALL)


def fenced_code(text: str, languages: Sequence[str], start: int = 0) -> str | None:
    """The body of the first fenced block, at or after ``start``, with no language or one of ``languages``.

    Written with ``str.find`` rather than one DOTALL regex: this runs on every step, and the regex
    was the slowest part of a step.
    """
    pos = start
    while (fence := text.find("```", pos)) >= 0:
        header = _FENCE_HEADER.match(text, fence + 3)
        lang, body_start = header.group(1).lower(), header.end()
        accepted = not lang or lang in languages
        end = text.find("```", body_start)
        if end < 0:
            # An unterminated fence at the end of a generation (the model hit its token limit or a
            # stop string ate the closing backticks) still carries the intended code.
            return text[body_start:] if accepted and text[body_start - 1 : body_start] == "\n" else None
        if accepted:
            return text[body_start:end]
        pos = end + 3
    return None


@dataclass(frozen=True)
class BlockProtocol:
    """``<Header>: <Word>`` followed by a fenced code block (AgentBench DB: ``Action: Operation`` +
    a ``sql`` block; AgentBench OS: ``Act: bash`` + a ``bash`` block), and optionally ``<Header>:
    <AnswerWord>`` followed by ``Final Answer: [...]``.

    Lenient as AgentBench's parsers: the header may carry markdown, thought text may come first, a
    bare ``Final Answer:`` is an answer and a lone fenced block is an operation.

    Args:
        tool: the one-argument operation tool the block calls.
        word: the word after the header (``"Operation"``).
        languages: fenced-block languages accepted (a block with no language always is).
        answer_word: the word of the answer form (``"Answer"``), or "" when this protocol has none.
        header: ``"Action"`` or ``"Act"``.
    """

    tool: str
    word: str = "Operation"
    languages: tuple[str, ...] = ()
    answer_word: str = "Answer"
    header: str = "Action"

    def parse(self, text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
        # Either header is accepted whatever this protocol writes: models mix up "Action:" and "Act:".
        match = ACTION_LINE.search(text)
        if match is not None:
            kind = match.group(1).lower()
        elif self.answer_word and _FINAL_ANSWER.search(text):
            kind = self.answer_word.lower()
        elif fenced_code(text, self.languages) is not None:
            kind = self.word.lower()
        else:
            return None
        if kind == self.word.lower():
            code = fenced_code(text, self.languages, match.end() if match else 0)
            if code is None:
                return ActionError(f"'{self.header}: {self.word}' must be followed by one fenced code block. "
                                   + grammar.help())
            if not code.strip():
                return ActionError("The code block is empty. " + grammar.help())
            return grammar.bind(self.tool, [code.strip()], "text")
        if self.answer_word and kind == self.answer_word.lower():
            final = _FINAL_ANSWER.search(text[match.start():] if match else text)
            if final is None:
                return ActionError(f"'{self.header}: {self.answer_word}' must be followed by 'Final Answer: [...]'. "
                                   + grammar.help())
            answers = parse_answer_list(final.group(1))
            tool = grammar.answer_tool
            if tool.args and tool.args[0].type != "array":  # a one-value answer tool takes the first value
                return grammar.bind(tool.name, answers[:1], "text")
            return grammar.bind(tool.name, [answers] if tool.args else [], "text")
        return None

    def write(self, grammar: Grammar, tool: Tool, args: Mapping[str, Any]) -> str | None:
        if tool.name == self.tool:
            lang = self.languages[0] if self.languages else ""
            return f"{self.header}: {self.word}\n```{lang}\n{args[tool.args[0].name]}\n```"
        if self.answer_word and tool.kind == ANSWER and len(tool.args) == 1:
            value = args.get(tool.args[0].name, [])
            values = value if isinstance(value, list) else [value]
            return f"{self.header}: {self.answer_word}\nFinal Answer: {json.dumps(values, ensure_ascii=False)}"
        return None

    def example(self, grammar: Grammar) -> str:
        lang = self.languages[0] if self.languages else ""
        text = f"{self.header}: {self.word}\n```{lang}\n...\n```"
        if self.answer_word:
            text += f'\nor\n{self.header}: {self.answer_word}\nFinal Answer: ["answer 1", "answer 2"]'
        return text


_CALL_LINE = re.compile(r"^[^\S\n]*+\**+[^\S\n]*+(?:(?:Action|Act)[^\S\n]*+\**+[^\S\n]*+[:：][^\S\n]*+\**+[^\S\n]*+)?"
                        r"([A-Za-z_][A-Za-z0-9_]*)[^\S\n]*+([(\[])", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class CallProtocol:
    """Function-call lines: ``Action: get_neighbors(m.0abc, people.person.spouse)``, ``Act: finish``,
    or bracket calls ``search[red shoes]`` (WebShop); the ``Action:``/``Act:`` prefix is optional.

    Arguments are split on top-level commas (quotes and brackets respected) and filled by position;
    a tool with one argument takes the whole text between the parentheses. A tool without
    arguments may be called with no parentheses after a prefix (``Act: finish``).

    Args:
        prefix: the prefix written by :meth:`write` (``"Action"``; "" for none).
        brackets: ``"()"`` or ``"[]"``: the brackets written by :meth:`write` (both are parsed).
        tools: the tools this protocol may call (default: all of the grammar's).
    """

    prefix: str = "Action"
    brackets: str = "()"
    tools: tuple[str, ...] = ()

    def _allowed(self, grammar: Grammar, name: str) -> bool:
        return grammar.has_tool(name) and (not self.tools or name in self.tools)

    def parse(self, text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
        for match in _CALL_LINE.finditer(text):
            name = match.group(1)
            if not self._allowed(grammar, name):
                continue
            close = ")" if match.group(2) == "(" else "]"
            body = _balanced(text, match.end(), match.group(2), close)
            if body is None:
                return ActionError(f"The call to '{name}' is missing its closing '{close}'. " + grammar.help())
            tool = grammar.tool(name)
            if len(tool.args) <= 1:
                values = [_strip_quotes(body.strip())] if body.strip() else []
            else:
                values = [v for v in _split_items(body)]
                while values and values[-1] == "":
                    values.pop()
            if tool.kind == ANSWER and len(tool.args) == 1 and tool.args[0].type == "array" and values:
                values = [parse_answer_list(body)]
            return grammar.bind(name, values, "text")
        match = ACTION_LINE.search(text)
        if match is not None and self._allowed(grammar, match.group(1)) and not grammar.tool(match.group(1)).args:
            return grammar.bind(match.group(1), [], "text")
        return None

    def write(self, grammar: Grammar, tool: Tool, args: Mapping[str, Any]) -> str | None:
        if self.tools and tool.name not in self.tools:
            return None
        open_, close = self.brackets[0], self.brackets[1]
        parts = []
        for arg in tool.args:
            if arg.name in args:
                value = args[arg.name]
                parts.append(json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value))
        call = f"{tool.name}{open_}{', '.join(parts)}{close}"
        return f"{self.prefix}: {call}" if self.prefix else call

    def example(self, grammar: Grammar) -> str:
        names = [t for t in grammar.tools if self._allowed(grammar, t.name)]
        return "\n".join(self.write(grammar, t, {a.name: a.name for a in t.args}) or "" for t in names[:2])


def _balanced(text: str, start: int, open_: str, close: str) -> str | None:
    """The text from ``start`` up to the ``close`` that balances the bracket just before it (quotes
    respected), or None when it never closes."""
    depth, quote, escaped = 1, None, False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'" and (i == start or not text[i - 1].isalnum()):
            quote = c
        elif c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


# ====================================================================== answer lists
def parse_answer_list(raw: str) -> list[str]:
    """Parse the text after ``Final Answer:`` into a list of strings, never evaluating it.

    Accepts a JSON list (``["a", 1]``), a Python-style list with single quotes, or a bare value.
    Nested lists and tuples are flattened to strings.
    """
    raw = raw.strip()
    # Only the first line-block up to a closing bracket belongs to the answer.
    if raw.startswith("["):
        depth, end = 0, None
        quote, escaped = None, False
        for i, c in enumerate(raw):
            if quote:
                if escaped:  # the character after a backslash never closes the string
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        body = raw[: end + 1] if end is not None else raw
        try:
            value = json.loads(body)
            if isinstance(value, list):
                return [_scalar_text(v) for v in value]
        except (json.JSONDecodeError, RecursionError):
            pass
        inner = body[1:-1] if body.endswith("]") else body[1:]
        return [item for item in _split_items(inner) if item != ""]
    first_line = raw.splitlines()[0] if raw else ""
    return [_strip_quotes(first_line.strip())] if first_line.strip() else []


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        return _scalar_text(value[0])
    return json.dumps(value)


def _split_items(body: str) -> list[str]:
    """Split ``a, 'b, c', "d"`` on top-level commas, respecting quotes and brackets."""
    items, current, quote, depth, escaped = [], [], None, 0, False
    for c in body:
        if quote:
            current.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
            current.append(c)
        elif c in "([":
            depth += 1
            current.append(c)
        elif c in ")]":
            depth -= 1
            current.append(c)
        elif c == "," and depth == 0:
            items.append(_strip_quotes("".join(current).strip()))
            current = []
        else:
            current.append(c)
    if current:
        items.append(_strip_quotes("".join(current).strip()))
    return items


def _strip_quotes(item: str) -> str:
    if item.startswith("(") and item.endswith(")"):  # a one-element tuple like ('x',)
        item = item[1:-1].rstrip(",").strip()
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'":
        inner = item[1:-1]
        return re.sub(r"\\([\\'\"])", r"\1", inner) if "\\" in inner else inner  # 'O\'Brien' -> O'Brien
    return item
