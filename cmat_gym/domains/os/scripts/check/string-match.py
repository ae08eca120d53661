"""Exit 0 iff argv[1] (the agent's answer) equals argv[2] (the expected output), whitespace-stripped.

cmat-gym's stand-in for AgentBench's ``check/string-match.py``.
"""

import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return 2
    return 0 if argv[1].strip() == argv[2].strip() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
