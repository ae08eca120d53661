"""Pieces every training script shares: its command line, built from an ``Args`` dataclass, and seeds.

A script declares one dataclass whose fields carry a docstring each; :func:`parse_dataclass_args`
parses the command line into it with `tyro <https://brentyi.github.io/tyro/>`_, as cleanrl's scripts
do (``output_dir`` -> ``--output-dir``, booleans as ``--x`` / ``--no-x``, ``Literal[...]`` fields as
choices, ``X | None`` fields also take ``None``, the field docstrings and every default in ``--help``).
:func:`derive_seed` gives independent seed streams, and :data:`EVAL_SEED` is the base seed of every
script's evaluation tasks.

Bad flags are reported as ``cmat-gym`` reports them: one line on stderr and exit status 2, no traceback.
Parsing (an unknown flag, a value of the wrong type, a value not among a field's choices) and the
checks a script makes on its ``Args`` with the validators here (:func:`check_env_id`,
:func:`check_model`, :func:`check_choice`, :func:`check_at_least`) both raise :class:`ScriptError`,
and a script's ``if __name__ == "__main__":`` path is ``run_main(main, prog=..., check=...)``.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import numpy as np

T = TypeVar("T")

# Evaluation tasks do not depend on --seed: every run of every trainer is scored on the same tasks.
EVAL_SEED = 0x5EED_E7A1


def parse_dataclass_args(
    cls: type[T], argv: Sequence[str] | None, *, prog: str, description: str,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> T:
    """An instance of the dataclass ``cls`` from the command line (``sys.argv[1:]`` when ``argv`` is None);
    ``aliases`` maps a field to extra flags. ``--help`` prints the help and exits 0; a bad flag raises
    :class:`ScriptError` with tyro's message as one line."""
    import tyro

    spec = _cli_spec(cls, aliases or {})
    # tyro draws its messages in boxes, with colours and Unicode rules when stdout is a terminal. Both
    # streams go to buffers while it parses, so they come out plain ASCII: an error is then read back
    # as one line, and the help prints the same everywhere (terminal, pipe, test capture).
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parsed = tyro.cli(spec, args=None if argv is None else list(argv), prog=prog,
                              description=description.replace("``", ""))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise ScriptError(_one_line(err.getvalue() or out.getvalue()) or f"bad flags: {exc}") from None
        sys.stdout.write(out.getvalue())  # --help
        raise
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())  # warnings, if tyro had any
    return cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(spec)})


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source ({} when there is no source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    return {
        node.target.id: nxt.value.value
        for node, nxt in zip(body, body[1:], strict=False)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant)
        and isinstance(nxt.value.value, str)
    }


def _cli_spec(cls: type, aliases: Mapping[str, Sequence[str]]) -> type[Any]:
    """A dataclass subclass of ``cls`` for tyro: each field keeps its type, position and default, and is
    annotated with its help (the field's docstring, whitespace collapsed) and its extra flags.

    The help is handed over rather than left to tyro's own docstring reader, which keeps the line breaks
    of a wrapped docstring (its indented continuation lines start new lines in ``--help``).
    """
    import tyro

    hints, docs = typing.get_type_hints(cls, include_extras=True), field_docs(cls)
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__, "__annotations__": {}}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        config = tyro.conf.arg(help=" ".join(docs.get(f.name, "").split()) or None,
                               aliases=tuple(aliases.get(f.name, ())) or None)
        namespace["__annotations__"][f.name] = Annotated[hints[f.name], config]
        namespace[f.name] = (f.default if f.default_factory is dataclasses.MISSING
                             else dataclasses.field(default_factory=f.default_factory))
    return dataclasses.dataclass(type(cls.__name__, (cls,), namespace))


def _one_line(text: str) -> str:
    """The message of one of tyro's error boxes (plain ASCII: the title, rules of ``-``, the message, then
    help), whitespace collapsed to one line; the whole text so collapsed if it has no such layout."""
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and set(stripped) == {"-"}:
            sections.append([])
        elif stripped:
            sections[-1].append(stripped)
    parts = [" ".join(s) for s in sections if s]
    return " ".join((parts[1] if len(parts) > 1 else " ".join(parts)).split())


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (independent streams for tasks, sampling, shuffling, evaluation)."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(1)[0]) % 2**31


# --------------------------------------------------------------------------------------------------
# bad flags: one line on stderr, exit status 2
# --------------------------------------------------------------------------------------------------


class ScriptError(Exception):
    """A bad flag (or combination of flags): reported by :func:`run_main` as one line, exit status 2."""


def fail(prog: str, message: str) -> NoReturn:
    """Write ``<prog>: error: <message>`` (one line) to stderr and exit with status 2, as argparse does."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


def run_main(
    main: Callable[[list[str]], Any],
    *,
    prog: str,
    check: Callable[[list[str]], object] | None = None,
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """The ``__main__`` path of a script: ``check(argv)`` (parse and validate the flags), then ``main(argv)``;
    exit status 0, or 2 with one line on stderr for a :class:`ScriptError` (130 on Ctrl-C).

    Only :class:`ScriptError` is turned into a message: any other exception is a bug, and keeps its
    traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if check is not None:
            check(args)
        main(args)
    except ScriptError as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        raise SystemExit(130) from None
    raise SystemExit(0)


def check_env_id(env_id: str, flag: str = "--env", *, domain_env: bool = True) -> None:
    """Raise :class:`ScriptError` unless ``env_id`` is a registered cmat-gym env; with ``domain_env``
    (the trainers, which wrap it in the CMAT loop themselves) it must be a domain's bare env id."""
    import gymnasium as gym

    import cmat_gym
    from cmat_gym.core.domain import domain_of_env, registered_domains

    cmat_gym.register_envs()
    bare = sorted(d.env_id for d in registered_domains())
    try:
        domain = domain_of_env(env_id)
    except (ValueError, gym.error.Error):
        known = bare if domain_env else sorted(e for e in gym.registry if e.startswith("cmat/"))
        raise ScriptError(f"{flag}: unknown env {env_id!r}; registered: {', '.join(known)}") from None
    if domain_env and env_id != domain.env_id:
        raise ScriptError(f"{flag}: expects a domain env id ({', '.join(bare)}; the script wraps it in the CMAT "
                          f"loop itself), got {env_id!r}")


def check_model(model: str, flag: str = "--model") -> None:
    """Raise :class:`ScriptError` unless ``model`` is a known model name (or alias) or a local folder."""
    from cmat_gym.agents.models import MODEL_ALIASES, SMOLLM2, TINY_RANDOM

    known = {SMOLLM2, TINY_RANDOM, *MODEL_ALIASES}
    if model in known or Path(model).expanduser().is_dir():
        return
    raise ScriptError(f"{flag}: unknown model {model!r}; expects one of {', '.join(sorted(known))} "
                      "or a local model folder")


def check_choice(value: Any, choices: Iterable[Any], flag: str) -> None:
    """Raise :class:`ScriptError` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ScriptError(f"{flag}: expects one of {', '.join(map(str, choices))}, got {value!r}")


def check_at_least(args: Any, minimum: int, *names: str) -> None:
    """Raise :class:`ScriptError` for the first field of ``names`` (set, i.e. not None) below ``minimum``."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            flag = "--" + name.replace("_", "-")
            raise ScriptError(f"{flag} must be at least {minimum}, got {value}")


def check_difficulty(difficulty: int | None) -> None:
    """Raise :class:`ScriptError` unless ``difficulty`` is None or 1-3."""
    if difficulty is not None:
        check_choice(difficulty, (1, 2, 3), "--difficulty")
