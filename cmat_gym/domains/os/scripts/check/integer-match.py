"""Exit 0 iff argv[1] (the agent's answer) and argv[2] (the expected output) are the same integer.

cmat-gym's stand-in for AgentBench's ``check/integer-match.py``; whitespace around either value is
ignored, anything that is not an integer fails.
"""

import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return 2
    try:
        return 0 if int(argv[1].strip()) == int(argv[2].strip()) else 1
    except ValueError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
