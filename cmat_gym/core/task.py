"""The Task contract: what the User asks, what the Assistant may see, and what the scorer needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Task:
    """One task of one domain, as plain data (JSON-serialisable, so it can be saved and replayed).

    Attributes:
        domain: the domain name, e.g. ``"db"``.
        task_id: stable name, derived from split+difficulty+seed (procedural) or file+index (loaded).
        instruction: what the User says.
        context: what the Assistant may see up front (e.g. the schema).
        payload: the domain's data: the database, the gold SQL, the expected answer, ...
            Never shown to the Assistant.
        split: ``"train"`` or ``"test"``.
        difficulty: 1 (easy) to 3 (hard); 0 for loaded tasks whose difficulty is unknown.
    """

    domain: str
    task_id: str
    instruction: str
    context: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"
    difficulty: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls.from_dict(json.loads(text))
