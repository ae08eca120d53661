"""Pieces every training script shares: its command line, built from an ``Args`` dataclass, and seeds.

A script declares one dataclass whose fields carry a docstring each; :func:`parse_dataclass_args`
turns it into an ``argparse`` parser (``output_dir`` -> ``--output-dir``, booleans as ``--x`` /
``--no-x``, the field docstrings as ``--help``), as cleanrl's scripts do with tyro. :func:`derive_seed` gives
independent seed streams, and :data:`EVAL_SEED` is the base seed of every script's evaluation tasks.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

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
        if base is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=f.default,
                                help=docs.get(f.name))
        else:
            parser.add_argument(*flags, type=base, default=f.default, help=docs.get(f.name),
                                metavar=f.name.upper())
    return cls(**vars(parser.parse_args(argv)))


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (independent streams for tasks, sampling, shuffling, evaluation)."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(1)[0]) % 2**31
