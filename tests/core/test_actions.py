"""The lenient action parser (AgentBench text protocol + JSON tool calls) and the text-space helpers."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmat_gym.core.actions import (
    ANSWER,
    ActionError,
    Arg,
    BlockProtocol,
    Grammar,
    ParsedAction,
    Tool,
    parse_action,
    parse_answer_list,
)
from cmat_gym.core.text import CHARSET, TRUNCATION_MARKER, sanitize, text_space

# The same grammar as DB-v0, defined here so the core parser is tested on its own.
G = Grammar(
    tools=(
        Tool("execute_sql", (Arg("sql", "string", "one SQL statement"),), "run one SQL statement"),
        Tool("commit_final_answer", (Arg("answers", "array", "the answer values"),), "the final answer",
             kind=ANSWER),
    ),
    protocols=(BlockProtocol("execute_sql", "Operation", ("sql", "sqlite", "mysql")),),
)


def op(text: str) -> str:
    """Parse ``text`` and return the SQL of the operation it must be."""
    parsed = parse_action(text, G)
    assert isinstance(parsed, ParsedAction), parsed
    assert parsed.kind == "operation"
    return parsed.value


def answer(text: str) -> list[str]:
    """Parse ``text`` and return the answer list it must be."""
    parsed = parse_action(text, G)
    assert isinstance(parsed, ParsedAction), parsed
    assert parsed.kind == "answer"
    return parsed.value


def error(text: object) -> str:
    """Parse ``text`` and return the message of the ActionError it must be."""
    parsed = parse_action(text, G)  # type: ignore[arg-type]
    assert isinstance(parsed, ActionError), parsed
    assert isinstance(parsed.message, str) and parsed.message
    return parsed.message


# ---------------------------------------------------------------------- AgentBench text protocol: operations
def test_operation_with_sql_language_tag():
    assert op("Action: Operation\n```sql\nSELECT * FROM t;\n```") == "SELECT * FROM t;"


def test_operation_without_language_tag():
    assert op("Action: Operation\n```\nSELECT 1\n```") == "SELECT 1"


@pytest.mark.parametrize("lang", ["sql", "SQL", "sqlite", "mysql"])
def test_operation_accepts_every_sql_language_tag(lang):
    assert op(f"Action: Operation\n```{lang}\nSELECT 2\n```") == "SELECT 2"


def test_operation_after_leading_thought_text():
    text = "Thought: I need the row count first.\nAction: Operation\n```sql\nSELECT COUNT(*) FROM t\n```\n"
    assert op(text) == "SELECT COUNT(*) FROM t"


@pytest.mark.parametrize(
    "header",
    [
        "**Action:** Operation",
        "**Action**: Operation",
        "Action: **Operation**",
        "  action : operation",
        "Action：Operation",
    ],
)
def test_operation_with_markdown_and_spacing_variants(header):
    assert op(f"{header}\n```sql\nSELECT 3\n```") == "SELECT 3"


def test_operation_with_unterminated_fence_at_the_end():
    # The model hit its token limit (or a stop string ate the closing backticks).
    assert (
        op("Action: Operation\n```sql\nSELECT name FROM t WHERE id = 1;")
        == "SELECT name FROM t WHERE id = 1;"
    )


def test_operation_takes_the_first_sql_block_after_the_action_line():
    text = "Action: Operation\n```sql\nSELECT 1\n```\nand later\n```sql\nSELECT 2\n```"
    assert op(text) == "SELECT 1"


def test_operation_skips_a_block_in_another_language():
    text = "Action: Operation\n```python\nprint(1)\n```\n```sql\nSELECT 5\n```"
    assert op(text) == "SELECT 5"


def test_multiline_sql_is_kept_verbatim_but_stripped():
    sql = "SELECT a,\n       b\nFROM t\nWHERE a = 'x'"
    assert op(f"Action: Operation\n```sql\n\n{sql}\n\n```") == sql


def test_a_lone_fenced_block_is_an_operation():
    assert op("```sql\nSELECT 9\n```") == "SELECT 9"


def test_text_protocol_source_is_text():
    parsed = parse_action("Action: Operation\n```sql\nSELECT 1\n```", G)
    assert parsed == ParsedAction("operation", "SELECT 1", "text", "execute_sql", {"sql": "SELECT 1"})
    assert parsed.to_dict() == {"kind": "operation", "value": "SELECT 1", "source": "text", "tool": "execute_sql",
                                "args": {"sql": "SELECT 1"}}


# ---------------------------------------------------------------------- AgentBench text protocol: answers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Final Answer: ["a", "b"]', ["a", "b"]),  # JSON list
        ("Final Answer: ['a', 'b']", ["a", "b"]),  # Python-style list
        ("Final Answer: 42", ["42"]),  # bare value
        ("Final Answer: Paris", ["Paris"]),  # bare word
        ("Final Answer: 'Paris'", ["Paris"]),  # bare quoted value
        ("Final Answer: [1, 2.5, -3]", ["1", "2.5", "-3"]),  # numbers
        ('Final Answer: ["O\'Brien, Jr.", \'x, "y"\']', ["O'Brien, Jr.", 'x, "y"']),  # nested quotes + commas
        (
            "Final Answer: ['O\\'Brien, Jr.', \"x, y\"]",
            ["O'Brien, Jr.", "x, y"],
        ),  # escaped quote (Python repr)
        ("Final Answer: [('a',)]", ["a"]),  # a row tuple, as MySQL fetchall prints it
        ("Final Answer: [('a',), ('b',)]", ["a", "b"]),
        ("Final Answer: [(3,)]", ["3"]),
        ('Final Answer: [["a"], ["b"]]', ["a", "b"]),  # JSON rows
        ("Final Answer: [None]", ["None"]),
        ("Final Answer: []", []),
    ],
)
def test_answer_forms(text, expected):
    assert answer("Action: Answer\n" + text) == expected


def test_answer_ignores_text_after_the_closing_bracket():
    assert answer('Action: Answer\nFinal Answer: ["x"]\nI am confident this is right, [really].') == ["x"]


def test_answer_bare_value_takes_only_the_first_line():
    assert answer("Action: Answer\nFinal Answer: 17\nbecause I counted") == ["17"]


@pytest.mark.parametrize(
    "final", ["Final Answer:", "**Final Answer:**", "**Final Answer**:", "final answer :"]
)
def test_answer_after_thought_and_bold_markdown(final):
    assert answer(f'Thought: done.\n**Action:** Answer\n{final} ["5"]') == ["5"]


def test_bare_final_answer_without_action_line():
    assert answer('Final Answer: ["x"]') == ["x"]


def test_answer_list_with_unclosed_bracket_is_still_parsed():
    assert answer("Action: Answer\nFinal Answer: ['a', 'b'") == ["a", "b"]


def test_answer_text_is_never_evaluated(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {sentinel}')"
    for text in (f"Final Answer: [{payload}]", f"Final Answer: {payload}", f"Final Answer: [1, {payload}]"):
        values = answer("Action: Answer\n" + text)
        assert any("__import__" in v for v in values)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a", 1, null]', ["a", "1", "null"]),
        ("[1.50]", ["1.5"]),
        ("  ['x']  ", ["x"]),
        ('[["a", "b"]]', ['["a", "b"]']),
        ("", []),
        ("   ", []),
    ],
)
def test_parse_answer_list_directly(raw, expected):
    assert parse_answer_list(raw) == expected


# ---------------------------------------------------------------------- JSON tool calls
def test_json_tool_call_operation():
    parsed = parse_action('{"tool": "execute_sql", "args": {"sql": "SELECT 1"}}', G)
    assert parsed == ParsedAction("operation", "SELECT 1", "json", "execute_sql", {"sql": "SELECT 1"})


def test_json_tool_call_answer_values_become_strings():
    assert answer('{"tool": "commit_final_answer", "args": {"answers": ["a", 1, 2.5, null]}}') == [
        "a",
        "1",
        "2.5",
        "null",
    ]


def test_json_tool_call_answer_rows_are_flattened_like_the_text_protocol():
    assert answer('{"tool": "commit_final_answer", "args": {"answers": [["a"], ["b"]]}}') == ["a", "b"]


def test_json_tool_call_single_answer_is_wrapped_in_a_list():
    assert answer('{"tool": "commit_final_answer", "args": {"answers": "Paris"}}') == ["Paris"]


def test_openai_style_call_with_json_string_arguments():
    text = json.dumps({"name": "execute_sql", "arguments": json.dumps({"sql": "SELECT 2"})})
    assert op(text) == "SELECT 2"


def test_openai_style_call_with_object_arguments():
    assert answer(json.dumps({"name": "commit_final_answer", "arguments": {"answers": ["x"]}})) == ["x"]


def test_openai_style_call_with_plain_string_arguments_is_the_sql():
    assert op('{"name": "execute_sql", "arguments": "SELECT 3"}') == "SELECT 3"


def test_fenced_json_tool_call():
    text = 'I will answer now.\n```json\n{"tool": "commit_final_answer", "args": {"answers": ["a"]}}\n```'
    parsed = parse_action(text, G)
    assert parsed == ParsedAction("answer", ["a"], "json", "commit_final_answer", {"answers": ["a"]})


def test_json_tool_call_with_surrounding_whitespace():
    assert op('\n  {"tool": "execute_sql", "args": {"sql": "  SELECT 4  "}}  \n') == "SELECT 4"


def test_json_that_is_not_a_tool_call_falls_back_to_the_text_protocol():
    # Prose that starts with a brace is not JSON: the text protocol still finds the action.
    assert op("{thinking} Let me look.\nAction: Operation\n```sql\nSELECT 6\n```") == "SELECT 6"


# ---------------------------------------------------------------------- error paths
HELP_FRAGMENTS = ("Action: Operation", "Final Answer", '"tool"')


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Empty action"),
        ("   \n\t ", "Empty action"),
        ("hello world", "No action found"),
        ("Action: Operation\nSELECT 1;", "fenced code block"),
        ("Action: Operation\n```python\nprint(1)\n```", "fenced code block"),
        ("Action: Operation\n```sql\n   \n```", "code block is empty"),
        ("Action: Answer\nthe answer is 5", "Final Answer"),
        ("Action: Jump\n```sql\nSELECT 1\n```", "Unknown action 'Jump'"),
        ('{"tool": "execute_sql", "args": {"sql": "SELECT 1"}', "not valid JSON"),
        ('{"tool": "drop_database", "args": {}}', "Unknown tool 'drop_database'"),
        ('{"tool": "execute_sql", "args": {"sql": ""}}', "non-empty string argument 'sql'"),
        ('{"tool": "execute_sql", "args": {"sql": 5}}', "non-empty string argument 'sql'"),
        ('{"tool": "execute_sql", "args": {}}', "needs the argument 'sql' (string)"),
        ('{"tool": "commit_final_answer", "args": {}}', "argument 'answers'"),
        ('{"tool": "execute_sql", "args": [1, 2]}', "Expects 'args' to be an object, actual list"),
        ('{"tool": "execute_sql", "args": null}', "Expects 'args' to be an object, actual NoneType"),
        ("[1, 2, 3]", "No action found"),
        ('{"a": 1}', "No action found"),
    ],
)
def test_error_paths_return_a_helpful_action_error(text, fragment):
    message = error(text)
    assert fragment in message


@pytest.mark.parametrize(
    "text", ["", "hello", "Action: Operation\nSELECT 1", "Action: Jump", '{"tool": "x"}']
)
def test_grammar_errors_show_the_grammar(text):
    message = error(text)
    assert all(f in message for f in HELP_FRAGMENTS), message


@pytest.mark.parametrize(
    "value", [None, 5, 3.5, b"Action: Answer", ["Action: Answer"], {"tool": "execute_sql"}]
)
def test_non_str_input_is_an_error_not_an_exception(value):
    message = error(value)
    assert message == f"Expects the action as text, actual {type(value).__name__}."


@pytest.mark.parametrize(
    "text",
    [
        "{" * 100_000,
        "[" * 100_000,
        "Action: Answer\nFinal Answer: " + "[" * 100_000,
        '{"tool": "commit_final_answer", "args": {"answers": ' + "[" * 100_000 + "]" * 100_000 + "}}",
    ],
)
def test_deeply_nested_input_never_raises(text):
    assert isinstance(parse_action(text, G), ParsedAction | ActionError)


@pytest.mark.parametrize(
    "fragment",
    ["\n", " ", "\t\n", "```", "```sql\n", "Action:", "Final Answer: [", "'", "\\", "*", "[('a',), "],
)
def test_parser_is_linear_on_megabyte_inputs(fragment):
    # Runs of blank lines once made the Action-line regex cubic (4,000 newlines took minutes).
    for prefix in ("", "Action: Operation\n```sql\n", "Action: Answer\nFinal Answer: "):
        text = prefix + fragment * (1_000_000 // len(fragment)) + "x"
        started = time.perf_counter()
        parse_action(text, G)
        assert time.perf_counter() - started < 30.0, (fragment, prefix)  # cubic took minutes


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_parses_to_an_action_or_an_error(text):
    parsed = parse_action(text, G)
    assert isinstance(parsed, ParsedAction | ActionError)
    if isinstance(parsed, ParsedAction):
        assert parsed.kind in ("operation", "answer")
        if parsed.kind == "answer":
            assert all(isinstance(v, str) for v in parsed.value)
        else:
            assert isinstance(parsed.value, str) and parsed.value.strip()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False)), max_size=5))
def test_json_answer_lists_round_trip(values):
    expected = [v if isinstance(v, str) else json.dumps(v) for v in values]
    assert answer("Action: Answer\nFinal Answer: " + json.dumps(values)) == expected
    assert answer(json.dumps({"tool": "commit_final_answer", "args": {"answers": values}})) == expected


# ---------------------------------------------------------------------- sanitize / text_space
_MARKER_RE = re.compile(r"\n\.\.\.\[truncated (\d+) characters\]$")


def test_short_text_is_unchanged():
    assert sanitize("SELECT * FROM t;\n\tok", 100) == "SELECT * FROM t;\n\tok"


@pytest.mark.parametrize(("length", "max_length"), [(101, 100), (1000, 100), (10_000, 64), (123_456, 8192)])
def test_truncation_marker_states_the_exact_count_cut(length, max_length):
    original = "".join(chr(ord("a") + i % 26) for i in range(length))
    result = sanitize(original, max_length)
    assert len(result) <= max_length
    match = _MARKER_RE.search(result)
    assert match is not None, result[-60:]
    kept = result[: match.start()]
    assert original.startswith(kept)
    assert int(match.group(1)) == length - len(kept)
    assert text_space(max_length).contains(result)


def test_text_of_exactly_max_length_is_not_cut():
    assert sanitize("x" * 50, 50) == "x" * 50


def test_truncation_with_a_tiny_limit_still_fits():
    result = sanitize("x" * 1000, 10)
    assert len(result) <= 10
    assert text_space(10).contains(result)


def test_unprintable_characters_are_replaced_not_dropped():
    assert sanitize("nul\x00bell\x07", 100) == "nul?bell?"
    assert sanitize("soft\xadhyphen, lone \ud800 surrogate", 100) == "soft?hyphen, lone ? surrogate"


def test_every_script_and_emoji_are_kept():
    text = "smile \U0001f600 ok, \u4e2d\u6587, \u65e5\u672c\u8a9e, \ud55c\uad6d\uc5b4, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u0939\u093f\u0928\u094d\u0926\u0940"
    assert sanitize(text, 200) == text
    assert text_space(200).contains(text)


def test_newlines_are_normalised():
    assert sanitize("a\r\nb\rc", 100) == "a\nb\nc"


def test_common_non_ascii_text_is_kept():
    text = "Café – 25 °C, Ελλάδα, Москва, €5, ±1, →"
    assert sanitize(text, 100) == text


def test_non_str_input_is_converted():
    assert sanitize(12345, 100) == "12345"
    assert sanitize(None, 100) == "None"


def test_text_space_has_an_explicit_charset_with_newline_and_tab():
    space = text_space(128)
    assert space.max_length == 128
    assert "\n" in space.character_set and "\t" in space.character_set
    assert set(space.character_set) == set(CHARSET)
    assert space.contains("SELECT * FROM t;\n")
    assert not space.contains("x" * 129)
    assert space.contains("\U0001f600 \u4e2d\u6587")  # printable in any script: see core/text.py
    assert not space.contains("bell\x07") and not space.contains("\ud800")


def test_text_space_is_a_fresh_object_each_call():
    assert text_space(10) is not text_space(10)


def test_truncation_marker_is_inside_the_charset():
    assert set(TRUNCATION_MARKER.format(n=1234567890)) <= set(CHARSET)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=400))
def test_sanitize_always_lands_inside_the_space(text, max_length):
    result = sanitize(text, max_length)
    assert len(result) <= max_length
    assert text_space(max_length).contains(result)
