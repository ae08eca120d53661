"""Lenient parsing of the Assistant's raw text into a tool call.

Two grammars are accepted everywhere:

* AgentBench's text protocol::

      Action: Operation
      ```sql
      SELECT ...
      ```

  or ``Action: Answer`` followed by ``Final Answer: [...]``;
* a JSON tool call, ``{"tool": "execute_sql", "args": {"sql": "..."}}`` (also the OpenAI-style
  ``{"name": ..., "arguments": ...}``), bare or inside a fenced block.

A domain describes its two tools (the operation and the answer) with a :class:`Grammar`; the
parser never raises for bad text, it returns an :class:`ActionError` whose message tells the
Assistant how to fix its action.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

OPERATION = "operation"
ANSWER = "answer"


@dataclass(frozen=True)
class Grammar:
    """A domain's action grammar: its operation tool, its answer tool, and their argument names."""

    operation_tool: str  # e.g. "execute_sql"
    operation_arg: str  # e.g. "sql"
    answer_tool: str  # e.g. "commit_final_answer"
    answer_arg: str  # e.g. "answers"
    code_languages: tuple[str, ...] = ()  # fenced-block languages accepted for an operation
    operation_example: str = ""
    answer_example: str = ""

    def help(self) -> str:
        """The grammar, as shown to an Assistant after a malformed action."""
        return (
            "Reply with exactly one action, either\n"
            f"{self.operation_example}\nor\n{self.answer_example}\n"
            f'or a JSON tool call: {{"tool": "{self.operation_tool}", "args": {{"{self.operation_arg}": ...}}}} '
            f'or {{"tool": "{self.answer_tool}", "args": {{"{self.answer_arg}": [...]}}}}.'
        )


@dataclass(frozen=True)
class ParsedAction:
    """A well-formed action: ``kind`` is ``"operation"`` or ``"answer"``; ``value`` its argument."""

    kind: str
    value: Any
    source: str  # "text" or "json": which grammar matched

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "source": self.source}


@dataclass(frozen=True)
class ActionError:
    """Why an action could not be parsed; ``message`` is written for the Assistant to read."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


# Possessive quantifiers (no backtracking): with plain ``\s*`` runs of blank lines or spaces made the
# search cubic (4,000 newlines took minutes). ``[^\S\n]`` is whitespace within one line.
_ACTION_LINE = re.compile(r"^[^\S\n]*+\**+[^\S\n]*+Action[^\S\n]*+\**+[^\S\n]*+[:：]\s*+\**+\s*+([A-Za-z_]+)",
                          re.IGNORECASE | re.MULTILINE)
_FENCE_HEADER = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.DOTALL)
_FINAL_ANSWER = re.compile(r"Final\s*+Answer\s*+\**+\s*+[:：]\s*+\**+\s*+(.*)", re.IGNORECASE | re.DOTALL)


def parse_action(text: str, grammar: Grammar) -> ParsedAction | ActionError:
    """Parse the Assistant's raw text with ``grammar`` (see the module docstring)."""
    if not isinstance(text, str):
        return ActionError(f"Expects the action as text, actual {type(text).__name__}.")
    if not text.strip():
        return ActionError("Empty action. " + grammar.help())
    parsed = _parse_json_call(text, grammar)
    if parsed is not None:
        return parsed
    return _parse_text_protocol(text, grammar)


def _parse_text_protocol(text: str, grammar: Grammar) -> ParsedAction | ActionError:
    match = _ACTION_LINE.search(text)
    kind = match.group(1).lower() if match else None
    if kind is None:
        # Lenient: a bare "Final Answer:" or a lone fenced code block is unambiguous.
        if _FINAL_ANSWER.search(text):
            kind = ANSWER
        elif _fenced_code(text, grammar) is not None:
            kind = OPERATION
        else:
            return ActionError("No action found. " + grammar.help())
    if kind == OPERATION:
        code = _fenced_code(text[match.end() :] if match else text, grammar)
        if code is None:
            return ActionError(
                "'Action: Operation' must be followed by one fenced code block. " + grammar.help()
            )
        if not code.strip():
            return ActionError("The code block is empty. " + grammar.help())
        return ParsedAction(OPERATION, code.strip(), "text")
    if kind == ANSWER:
        fa = _FINAL_ANSWER.search(text[match.start() :] if match else text)
        if fa is None:
            return ActionError("'Action: Answer' must be followed by 'Final Answer: [...]'. " + grammar.help())
        return ParsedAction(ANSWER, parse_answer_list(fa.group(1)), "text")
    return ActionError(f"Unknown action '{match.group(1)}': expects Operation or Answer. " + grammar.help())


def _fenced_code(text: str, grammar: Grammar) -> str | None:
    """The body of the first fenced block with no language or an accepted one.

    Written with ``str.find`` rather than one DOTALL regex: this runs on every step, and the regex
    was the slowest part of a step.
    """
    pos = 0
    while (start := text.find("```", pos)) >= 0:
        header = _FENCE_HEADER.match(text, start + 3)
        lang, body_start = header.group(1).lower(), header.end()
        accepted = not lang or lang in grammar.code_languages
        end = text.find("```", body_start)
        if end < 0:
            # An unterminated fence at the end of a generation (the model hit its token limit or a
            # stop string ate the closing backticks) still carries the intended code.
            return text[body_start:] if accepted and text[body_start - 1 : body_start] == "\n" else None
        if accepted:
            return text[body_start:end]
        pos = end + 3
    return None


def _parse_json_call(text: str, grammar: Grammar) -> ParsedAction | ActionError | None:
    """A JSON tool call, or None when the text is not JSON at all (then the text protocol is tried)."""
    candidate = text.strip()
    if not candidate.startswith("{"):
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
        if '"tool"' in candidate or '"name"' in candidate:
            return ActionError("The JSON tool call is not valid JSON. " + grammar.help())
        return None
    if not isinstance(obj, dict):
        return None
    tool = obj.get("tool", obj.get("name"))
    args = obj.get("args", obj.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            args = {grammar.operation_arg: args} if tool == grammar.operation_tool else {grammar.answer_arg: args}
    if not isinstance(args, dict):
        return ActionError(f"Expects 'args' to be an object, actual {type(args).__name__}. " + grammar.help())
    if tool == grammar.operation_tool:
        code = args.get(grammar.operation_arg)
        if not isinstance(code, str) or not code.strip():
            return ActionError(f"'{tool}' needs a non-empty string argument '{grammar.operation_arg}'.")
        return ParsedAction(OPERATION, code.strip(), "json")
    if tool == grammar.answer_tool:
        if grammar.answer_arg not in args:
            return ActionError(f"'{tool}' needs the argument '{grammar.answer_arg}'.")
        value = args[grammar.answer_arg]
        answers = value if isinstance(value, list) else [value]
        return ParsedAction(ANSWER, [_scalar_text(a) for a in answers], "json")
    if tool is None:
        return None
    return ActionError(
        f"Unknown tool '{tool}': expects '{grammar.operation_tool}' or '{grammar.answer_tool}'. " + grammar.help()
    )


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
