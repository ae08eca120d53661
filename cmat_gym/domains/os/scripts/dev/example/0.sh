#!/bin/bash
# cmat-gym's stand-in solution for the AgentBench dev "calc" task: installs `calc`, which evaluates
# one arithmetic expression (numbers, + - * /, unary minus, parentheses) with Python's ast module,
# never eval. It goes to /usr/local/bin when that is writable (as in AgentBench's Docker image and in
# cmat-gym's sandbox, whose /usr/local is its own), else to /root/bin (on cmat-gym's shell's PATH).
dir=/usr/local/bin
[ -w "$dir" ] || dir=/root/bin
mkdir -p "$dir"
cat > "$dir/calc" <<'PY'
#!/usr/bin/env python3
"""calc EXPR...: print the value of an arithmetic expression (+ - * /, parentheses)."""
import ast
import operator
import sys

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def value(node):
    if isinstance(node, ast.Expression):
        return value(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](value(node.left), value(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](value(node.operand))
    raise ValueError("only numbers, + - * / and parentheses are allowed")


try:
    result = value(ast.parse(" ".join(sys.argv[1:]), mode="eval"))
except (SyntaxError, ValueError, ZeroDivisionError) as exc:
    print(f"calc: {exc}", file=sys.stderr)
    sys.exit(1)
print(int(result) if float(result).is_integer() else result)
PY
chmod +x "$dir/calc"
