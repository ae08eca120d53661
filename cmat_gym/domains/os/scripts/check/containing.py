"""Exit 0 iff argv[2] (the expected output, stripped) occurs in argv[1] (the agent's answer).

cmat-gym's stand-in for AgentBench's ``check/containing.py``.
"""

import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return 2
    return 0 if argv[2].strip() in argv[1] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
