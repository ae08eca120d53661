"""A random generator whose stream is fixed forever, for procedural task generation.

Python's `random` and NumPy's `Generator` only promise stable streams for some methods and
versions; a task named by its seed must be the same task on every machine and Python version,
so task generators draw from this counter-mode BLAKE2b stream instead. It is slow compared to
PCG64 (~1 µs a draw) but a task needs only a few hundred draws.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import MutableSequence, Sequence
from typing import TypeVar

T = TypeVar("T")


class StableRandom:
    """Deterministic random numbers from a key made of any printable parts.

    >>> StableRandom("db", "train", 7).randint(1, 6) == StableRandom("db", "train", 7).randint(1, 6)
    True
    """

    def __init__(self, *key: object) -> None:
        self._key = hashlib.blake2b("\x1f".join(map(str, key)).encode(), digest_size=32).digest()
        self._counter = 0

    def _next_u64(self) -> int:
        block = hashlib.blake2b(struct.pack("<Q", self._counter), key=self._key, digest_size=8).digest()
        self._counter += 1
        return struct.unpack("<Q", block)[0]

    def random(self) -> float:
        """A float in [0, 1) with 53 random bits."""
        return (self._next_u64() >> 11) / float(1 << 53)

    def randbelow(self, n: int) -> int:
        """An integer in [0, n), without modulo bias."""
        if n <= 0:
            raise ValueError(f"Expects n > 0, actual {n}")
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self._next_u64()
            if x < limit:
                return x % n

    def randint(self, low: int, high: int) -> int:
        """An integer in [low, high], both ends included."""
        return low + self.randbelow(high - low + 1)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def choice(self, items: Sequence[T]) -> T:
        return items[self.randbelow(len(items))]

    def shuffle(self, items: MutableSequence[T]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.randbelow(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """k distinct items (by position), in random order."""
        pool = list(items)
        if k > len(pool):
            raise ValueError(f"Expects k <= {len(pool)}, actual {k}")
        self.shuffle(pool)
        return pool[:k]

    def fork(self, *key: object) -> StableRandom:
        """An independent stream derived from this one's key (not its position)."""
        return StableRandom(self._key.hex(), *key)
