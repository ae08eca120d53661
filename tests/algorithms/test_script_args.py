"""The training scripts' command lines (tyro, through ``algorithms.common.script.parse_dataclass_args``):
every flag round-trips, booleans take ``--no-x``, ``--help`` shows choices and defaults, and a bad value
is one line on stderr with exit status 2."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from algorithms.common.script import ScriptError, parse_dataclass_args, run_main

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["ppo_train", "sft_train", "grpo_train", "checker_train", "sb3_baseline"]


def script(name: str) -> types.ModuleType:
    return importlib.import_module(f"algorithms.{name}")


def flag(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def split_optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(hint, False)``; ``Literal[a, b] | None`` may also come as
    one ``Union[Literal[a], Literal[b], None]`` after typing flattens it."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if all(typing.get_origin(a) is Literal for a in rest):
            return Literal[tuple(v for a in rest for v in typing.get_args(a))], True  # type: ignore[misc]
        assert len(rest) == 1, f"a new kind of field type: {hint}"
        return rest[0], True
    return hint, False


def other_value(field: dataclasses.Field[Any], hint: Any) -> tuple[Any, str]:
    """A value of the field's type that is not its default, and how it is spelt on the command line."""
    base, optional = split_optional(hint)
    default = field.default
    if optional and default is not None:
        return None, "None"
    if typing.get_origin(base) is Literal:
        value = next((c for c in typing.get_args(base) if c != default), default)  # Literal["train"]: itself
        return value, str(value)
    if base is int:
        value = (default or 0) + 3
    elif base is float:
        value = (default or 0.0) + 0.125
    elif base is str:
        value = f"{default or 'x'}-other"
    else:  # pragma: no cover - a new field type needs a case here
        raise AssertionError(f"no test value for {field.name}: {hint}")
    return value, str(value)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_round_trips(name: str) -> None:
    """All fields set to a non-default value at once (bools flipped with --x / --no-x) parse back exactly."""
    mod = script(name)
    hints = typing.get_type_hints(mod.Args)
    argv: list[str] = []
    expected: dict[str, Any] = {}
    for field in dataclasses.fields(mod.Args):
        if hints[field.name] is bool:
            expected[field.name] = not field.default
            argv.append(flag(field) if not field.default else "--no-" + flag(field)[2:])
        else:
            expected[field.name], text = other_value(field, hints[field.name])
            argv += [flag(field), text]
    parsed = mod.parse_args(argv)
    assert parsed == mod.Args(**expected)
    # each flag moved its field, but for a field with a single choice (sft_train --split train)
    unmoved = [k for k in expected if getattr(parsed, k) == getattr(mod.Args(), k)]
    assert all(len(typing.get_args(split_optional(hints[k])[0])) == 1 for k in unmoved), unmoved
    assert mod.parse_args([]) == mod.Args()


@pytest.mark.parametrize("name", SCRIPTS)
def test_booleans_take_x_and_no_x(name: str) -> None:
    mod = script(name)
    hints = typing.get_type_hints(mod.Args)
    bools = [f for f in dataclasses.fields(mod.Args) if hints[f.name] is bool]
    assert bools, "every script has at least --progress or --coverage"
    for field in bools:
        assert getattr(mod.parse_args([flag(field)]), field.name) is True
        assert getattr(mod.parse_args(["--no-" + flag(field)[2:]]), field.name) is False
        assert getattr(mod.parse_args(["--no-" + flag(field)[2:], flag(field)]), field.name) is True  # last wins


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_choices_and_defaults(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    mod = script(name)
    with pytest.raises(SystemExit) as exit_info:
        mod.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    hints = typing.get_type_hints(mod.Args)
    literal_fields = 0
    for field in dataclasses.fields(mod.Args):
        assert flag(field) in text
        assert f"(default: {field.default})" in text, field.name
        base, optional = split_optional(hints[field.name])
        if typing.get_origin(base) is Literal:
            literal_fields += 1
            shown = text.split(flag(field) + " {", 1)[1].split("}", 1)[0].split(",")
            assert set(shown) == {str(c) for c in typing.get_args(base)} | ({"None"} if optional else set())
    assert literal_fields >= 1  # at least --difficulty


def test_help_of_the_main_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        script("ppo_train").parse_args(["--help"])
    text = capsys.readouterr().out
    for shown in ("--peft {lora,p-tuning}", "--kl-estimator {k1,k2,k3}", "--checker {rule,learned,none}",
                  "--difficulty {None,1,2,3}", "--tis-cap {None}|FLOAT", "--resume, --no-resume"):
        assert shown in text
    assert "``" not in text  # reST markup of the module docstring is not shown


def test_alias_flag(capsys: pytest.CaptureFixture[str]) -> None:
    grpo = script("grpo_train")
    assert grpo.parse_args(["--max-steps", "4"]).iterations == 4
    assert grpo.parse_args(["--iterations", "5"]).iterations == 5
    with pytest.raises(SystemExit):
        grpo.parse_args(["--help"])
    assert "--max-steps INT, --iterations INT" in capsys.readouterr().out


BAD = [
    ("ppo_train", ["--kl-estimator", "k9"], "--kl-estimator"),  # a value not among the choices
    ("ppo_train", ["--iterations", "many"], "--iterations"),  # a value of the wrong type
    ("ppo_train", ["--tis-cap", "high"], "--tis-cap"),  # neither None nor a float
    ("ppo_train", ["--no-such-flag"], "--no-such-flag"),
    ("ppo_train", ["--learning-rate"], "--learning-rate"),  # no value
    ("sft_train", ["--split", "test"], "--split"),
    ("sft_train", ["--epochs", "1,5"], "--epochs"),
    ("grpo_train", ["--scale-rewards", "std"], "--scale-rewards"),
    ("grpo_train", ["--max-steps", "x"], "--max-steps"),
    ("checker_train", ["--collect-checker", "learned"], "--collect-checker"),
    ("checker_train", ["--lora-layers", "2.5"], "--lora-layers"),
    ("sb3_baseline", ["--difficulty", "0"], "--difficulty"),
    ("sb3_baseline", ["--total-timesteps", "1e5"], "--total-timesteps"),
]


@pytest.mark.parametrize(("name", "argv", "shown"), BAD, ids=[f"{n}{' '.join(a)}" for n, a, _ in BAD])
def test_bad_values_are_one_line_and_exit_2(name: str, argv: list[str], shown: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Through the scripts' real ``__main__`` path (``run_main`` with their ``check_args``), in-process."""
    mod = script(name)
    with pytest.raises(ScriptError, match=shown):
        mod.parse_args(argv)

    def must_not_run(_: list[str]) -> None:
        raise AssertionError("main ran on bad flags")

    with pytest.raises(SystemExit) as exit_info:
        run_main(must_not_run, prog=mod.PROG, check=mod.check_args, argv=argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{mod.PROG}: error: ") and shown in lines[0], captured.err
    assert captured.out == ""


def test_bad_type_from_the_command_line(tmp_path: Path) -> None:
    """The real process: one line, exit 2, no traceback, nothing started."""
    done = subprocess.run([sys.executable, "-m", "algorithms.ppo_train", "--max-turns", "five",
                           "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("python -m algorithms.ppo_train: error: ") and "--max-turns" in done.stderr
    assert not (tmp_path / "out").exists()


def test_parse_dataclass_args_on_a_new_dataclass() -> None:
    """The helper itself: field docstrings (wrapped ones on one line) and defaults in the help, choices,
    optionals, default factories, and a dataclass with no docstrings at all."""

    @dataclasses.dataclass
    class Local:
        mode: Literal["a", "b"] = "a"
        limit: float | None = None
        names: list[str] = dataclasses.field(default_factory=lambda: ["x"])

    parsed = parse_dataclass_args(Local, ["--mode", "b", "--limit", "0.5", "--names", "p", "q"], prog="p",
                                  description="d")
    assert parsed == Local(mode="b", limit=0.5, names=["p", "q"])
    assert parse_dataclass_args(Local, [], prog="p", description="d") == Local()
    with pytest.raises(ScriptError, match="--mode"):
        parse_dataclass_args(Local, ["--mode", "c"], prog="p", description="d")
