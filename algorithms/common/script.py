"""Pieces every training script shares: its command line, built from an ``Args`` dataclass, and seeds.

A script declares one dataclass whose fields carry a docstring each; :func:`parse_dataclass_args`
turns it into an ``argparse`` parser (``output_dir`` -> ``--output-dir``, booleans as ``--x`` /
``--no-x``, the field docstrings as ``--help``), as cleanrl's scripts do with tyro. :func:`derive_seed` gives
independent seed streams, and :data:`EVAL_SEED` is the base seed of every script's evaluation tasks.

Bad flags are reported as ``cmat-gym`` reports them: one line on stderr and exit status 2, no traceback.
A script checks its ``Args`` with the validators here (:func:`check_env_id`, :func:`check_model`,
:func:`check_choice`, :func:`check_at_least`), which raise :class:`ScriptError`, and its
``if __name__ == "__main__":`` path is ``run_main(main, prog=..., check=...)``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

T = TypeVar("T")

# Evaluation tasks do not depend on --seed: every run of every trainer is scored on the same tasks.
EVAL_SEED = 0x5EED_E7A1


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


def parse_dataclass_args(
    cls: type[T], argv: Sequence[str] | None, *, prog: str, description: str,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> T:
    """An instance of the dataclass ``cls`` from the command line; ``aliases`` maps a field to extra flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flags = ["--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, ())]
        hint = hints[f.name]
        optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
        base: Any = next(a for a in hint.__args__ if a is not type(None)) if optional else hint
        # Every flag's help ends with its default, so `--help` alone says what a bare command runs.
        help_text = f"{docs.get(f.name) or ''} (default: {f.default})".strip()
        if base is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text.replace("%", "%%"))
        else:
            parser.add_argument(*flags, type=base, default=f.default, help=help_text.replace("%", "%%"),
                                metavar=f.name.upper())
    return cls(**vars(parser.parse_args(argv)))


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
