"""Exit 0 iff argv[1] (the agent's answer) and argv[2] (the expected output) are the same size.

cmat-gym's stand-in for AgentBench's ``check/size-match.py``. Sizes are human-readable as ``du -h``
and ``ls -h`` print them (``8.0K``, ``12M``, ``1.5G``) or plain byte counts (``512``); decimals,
a space before the unit and the units B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (any case, all
powers of 1024, as those tools use) are accepted. Equal means the same number of bytes.
"""

import math
import re
import sys

_SIZE = re.compile(r"^([0-9]*\.?[0-9]+)\s*([bkmgtp]?)(?:i?b)?$", re.IGNORECASE)
_POWERS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def to_bytes(text: str) -> float | None:
    """The size ``text`` names, in bytes, or None when it is not a size."""
    words = text.strip().split()
    if not words:
        return None
    # "4.0K\t/home" (du's whole line) names the size first.
    candidate = (
        words[0]
        if len(words) == 1 or not re.match(r"^[bkmgtp]?i?b$", words[1], re.I)
        else words[0] + words[1]
    )
    match = _SIZE.match(candidate)
    if match is None:
        return None
    return float(match.group(1)) * 1024 ** _POWERS[match.group(2).lower()]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return 2
    got, want = to_bytes(argv[1]), to_bytes(argv[2])
    if got is None or want is None:
        return 1
    return 0 if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
