"""Helpers every procedural task generator shares: disjoint splits by hash, task ids, the retry loop.

Train and test are disjoint **by construction**: the split of a task is a function of its
instruction text alone (:func:`instruction_split`: ``test`` iff ``blake2b(text) % buckets == 0``).
A generator draws candidates from ``StableRandom(domain, split, difficulty, seed, attempt)`` for
``attempt = 0, 1, 2, ...`` and keeps the first whose instruction falls in the requested split
(:func:`first_in_split`), so no instruction can appear in both splits, even across difficulties.
Task ids ``<domain>/<split>/d<difficulty>/<seed>`` name a task on every machine
(:func:`make_task_id`, :func:`parse_task_id`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TypeVar

from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import SPLITS

DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
TEST_BUCKETS = 5  # an instruction is a test instruction iff its fingerprint % TEST_BUCKETS == 0
MAX_ATTEMPTS = 2000

T = TypeVar("T")


def instruction_split(instruction: str, buckets: int = TEST_BUCKETS) -> str:
    """The split an instruction text belongs to: ``"test"`` iff blake2b(text) % buckets == 0, else ``"train"``."""
    digest = hashlib.blake2b(instruction.encode("utf-8"), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % buckets == 0 else "train"


def make_task_id(domain: str, seed: int, split: str, difficulty: int) -> str:
    """The id of a procedural task: ``<domain>/<split>/d<difficulty>/<seed>``."""
    return f"{domain}/{split}/d{difficulty}/{seed}"


def parse_task_id(domain: str, task_id: object) -> tuple[int, str, int]:
    """``(seed, split, difficulty)`` of a procedural task id of ``domain``; ValueError otherwise."""
    pattern = rf"{re.escape(domain)}/(train|test)/d([123])/(0|[1-9][0-9]*)"
    match = re.fullmatch(pattern, task_id) if isinstance(task_id, str) else None
    if match is None:
        raise ValueError(f"Expects a task id '{domain}/{{train|test}}/d{{1|2|3}}/{{seed >= 0}}' such as "
                         f"'{domain}/train/d2/17', actual {task_id!r}")
    split, difficulty, seed = match.groups()
    return int(seed), split, int(difficulty)


def check_task_args(seed: object, split: object, difficulty: object) -> None:
    """Raise ValueError unless ``seed >= 0`` is an int, ``split`` a split and ``difficulty`` in 1-3."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expects seed to be an int >= 0, actual {seed!r}")
    if split not in SPLITS:
        raise ValueError(f"Expects split in {SPLITS}, actual {split!r}")
    if isinstance(difficulty, bool) or difficulty not in DIFFICULTIES:
        raise ValueError(f"Expects difficulty in {DIFFICULTIES}, actual {difficulty!r}")


def first_in_split(
    domain: str,
    seed: int,
    split: str,
    difficulty: int,
    draw: Callable[[StableRandom], T | None],
    instruction: Callable[[T], str],
    *,
    buckets: int = TEST_BUCKETS,
    max_attempts: int = MAX_ATTEMPTS,
) -> T:
    """The first candidate ``draw(StableRandom(domain, split, difficulty, seed, attempt))`` (None: no
    usable candidate this attempt) whose ``instruction`` falls in ``split`` (see the module docstring)."""
    check_task_args(seed, split, difficulty)
    for attempt in range(max_attempts):
        candidate = draw(StableRandom(domain, split, difficulty, seed, attempt))
        if candidate is not None and instruction_split(instruction(candidate), buckets) == split:
            return candidate
    raise RuntimeError(f"No {split} {domain} task for seed {seed} at difficulty {difficulty} "
                       f"after {max_attempts} attempts")
