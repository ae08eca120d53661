#!/bin/bash
# cmat-gym's stand-in check for the AgentBench dev task "implement a calc command" (dev.json tasks 3
# and 5; AgentBench's own check/0.sh is not shipped with the dev file). Exit 0 iff `calc "<expr>"`
# prints a number within 1e-5 of Python's value of <expr> for every expression below.
#
# A command may also live in /root/bin or /root/.local/bin (the directories Ubuntu's ~/.profile
# puts on the PATH, and cmat-gym's shell has on its PATH); both are searched before the usual PATH.
export PATH="/root/bin:/root/.local/bin:$PATH"
command -v calc >/dev/null 2>&1 || { echo "calc: command not found"; exit 1; }
exec python3 - <<'PY'
import subprocess
import sys

# Our own fixed expressions (never agent text), so evaluating them with Python is safe.
CASES = [
    "2 * (9 / 3)", "2 * 1", "1 + 2", "10 / 4", "(1 + 2) * 3 - 4 / 2", "7 / 3", "1.5 * 4",
    "100 - 3 * (2 + 8) / 4", "((2 + 3) * (4 - 1)) / 5", "0 - 8 / (4 - 2)", "3 + 4 * 2 / (1 - 5)",
    "12 / 4 / 3",
]
for expr in CASES:
    want = eval(expr, {"__builtins__": {}}, {})
    try:
        run = subprocess.run(["calc", expr], capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        got = float(run.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        print(f"calc {expr!r}: no number printed")
        sys.exit(1)
    if abs(got - want) >= 1e-5:
        print(f"calc {expr!r}: printed {got}, expected {want}")
        sys.exit(1)
print("all expressions correct")
PY
