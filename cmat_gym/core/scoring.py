"""Grading answer lists the way AgentBench does, minus its known flaws (any domain whose final
answer is a list of values: DB, KG, OS question tasks).

AgentBench's dbbench compares a SELECT answer with the gold ``label`` after normalisation:
surrounding quotes and whitespace stripped, a trailing ``%`` dropped, thousands separators
removed, floats equal within 1e-2, one value compared as a value and several as a set (floats
matched one to one). We do the same, except (see docs/envs/db.md, "Deviations"):

* AgentBench parses the agent's answer with Python's ``eval``; we never evaluate agent text.
* AgentBench maps null/None/NaN/inf/empty answers to "0", so they match a gold 0; here an empty
  answer never matches, and a null-like answer matches only a null-like gold value (a query
  whose true result is NULL), never a 0.
* AgentBench drops samples whose run errored from the denominator; we score them 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FLOAT_TOLERANCE = 1e-2
_NULLISH = frozenset({"none", "null", "undefined", "nan", "-nan", "inf", "-inf", "infinity", "-infinity"})


NULL = "\x00NULL"  # what every null-like value normalises to; no real answer text contains NUL
EMPTY = "\x00EMPTY"  # an empty value: never matches anything, not even an empty gold value


def normalize_value(value: object) -> str:
    """AgentBench's per-value normalisation, with null-like values mapped to :data:`NULL`."""
    if value is None:
        return NULL
    text = str(value).strip().strip("'\"").strip()
    if text.endswith("%"):
        text = text[:-1].strip()
    if "," in text:
        text = text.replace(",", "")
    if not text:
        return EMPTY
    if text.lower() in _NULLISH:
        return NULL
    return text


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _values_equal(a: str, b: str) -> bool:
    fa, fb = _as_float(a), _as_float(b)
    if fa is not None and fb is not None:
        return abs(fa - fb) <= FLOAT_TOLERANCE
    return a == b


def answers_match(answer: Sequence[object], label: Sequence[object]) -> bool:
    """Whether the committed answer list matches the gold label list (AgentBench semantics)."""
    got = [normalize_value(v) for v in answer]
    gold = [normalize_value(v) for v in label]
    if not got or not gold or EMPTY in got:
        return False  # an empty answer never matches
    if len(got) == 1 and len(gold) == 1:
        return _values_equal(got[0], gold[0])
    if all(_as_float(v) is not None for v in got + gold):
        if len(got) != len(gold):
            return False
        unmatched: list[float | None] = [_as_float(v) for v in gold]
        for value in (_as_float(v) for v in got):
            for i, target in enumerate(unmatched):
                if target is not None and value is not None and abs(value - target) <= FLOAT_TOLERANCE:
                    unmatched[i] = None
                    break
            else:
                return False
        return True
    return set(got) == set(gold)


def answer_overlap(answer: Sequence[object], label: Sequence[object]) -> float:
    """A graded score in [0, 1]: the F1 of matched values (for shaping, never the reward)."""
    got = [normalize_value(x) for x in answer]
    gold = [normalize_value(x) for x in label]
    if not got or not gold:
        return 0.0
    remaining = list(gold)
    hits = 0
    for value in got:
        for i, target in enumerate(remaining):
            if _values_equal(value, target):
                hits += 1
                del remaining[i]
                break
    if hits == 0:
        return 0.0
    precision, recall = hits / len(got), hits / len(gold)
    return 2 * precision * recall / (precision + recall)
