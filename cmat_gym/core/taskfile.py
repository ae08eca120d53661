"""Reading task files: a JSON list of objects, or JSONL (one object a line), as AgentBench ships them."""

from __future__ import annotations

import json
import os
from typing import Any


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON (a list of objects) or JSONL (one object a line) file.

    Raises:
        ValueError: when the file holds something else (the message names the file).
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"Expects {path} to be JSON or JSONL, actual: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"Expects {path} to hold JSON objects, one per task")
    return records
