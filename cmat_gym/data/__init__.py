"""Data files shipped inside the package, and the ``agentbench:`` task-file scheme.

AgentBench's dev splits of the domains cmat-gym implements are bundled unchanged (Apache-2.0; see
``agentbench/NOTICE``), so ``tasks="agentbench:dbbench/dev"`` works on any install, with no
checkout of AgentBench next to the repository::

    gym.make("cmat/DB-v0", tasks="agentbench:dbbench/dev")        # 60 dbbench dev tasks
    gym.make("cmat/OS-v0", tasks="agentbench:os_interaction/dev")  # 26 os_interaction dev tasks
    cmat-gym eval --env cmat/DB-v0 --tasks agentbench:dbbench/dev --policy oracle

A spec is ``agentbench:<folder>/<split>``, the path of the file under AgentBench's ``data/`` folder
with or without its extension (``agentbench:dbbench/dev.jsonl`` names the same file).
:func:`resolve_task_file` is the one place that turns a spec into a path; anything else (a plain
path) passes through unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

AGENTBENCH_SCHEME = "agentbench:"
# The folder laid out like AgentBench's ``data/`` (``dbbench/dev.jsonl``, ...): a drop-in for
# ``benchmarks/agentbench_table.py --agentbench-dir`` and for ``AgentBenchSplit.path``.
AGENTBENCH_DIR = Path(__file__).resolve().parent / "agentbench"
_EXTENSIONS = (".jsonl", ".json")


def agentbench_splits() -> list[str]:
    """The bundled splits as specs without the scheme (``"dbbench/dev"``, ...), sorted."""
    return sorted(str(p.relative_to(AGENTBENCH_DIR).with_suffix("")).replace(os.sep, "/")
                  for p in AGENTBENCH_DIR.glob("*/*") if p.suffix in _EXTENSIONS)


def agentbench_file(split: str) -> Path:
    """The bundled file of ``split`` (``"dbbench/dev"`` or ``"dbbench/dev.jsonl"``).

    Raises:
        FileNotFoundError: for a split that is not bundled (the message lists the bundled ones).
    """
    name = split.strip().strip("/")
    # Only names of the bundled files are accepted: no "..", no absolute paths out of the folder.
    if name and ".." not in name.split("/") and not os.path.isabs(name):
        for candidate in (name, *(name + ext for ext in _EXTENSIONS)):
            path = AGENTBENCH_DIR / candidate
            if path.suffix in _EXTENSIONS and path.is_file():
                return path
    raise FileNotFoundError(f"no bundled AgentBench split {split!r}; bundled: "
                            f"{', '.join(AGENTBENCH_SCHEME + s for s in agentbench_splits())}")


def is_agentbench_spec(tasks: object) -> bool:
    """Whether ``tasks`` is an ``agentbench:`` spec (a str starting with the scheme)."""
    return isinstance(tasks, str) and tasks.startswith(AGENTBENCH_SCHEME)


def resolve_task_file(tasks: str | os.PathLike[str]) -> str:
    """The path of a task file: an ``agentbench:<folder>/<split>`` spec becomes its bundled file;
    any other path is returned unchanged (as a str).

    Raises:
        FileNotFoundError: for an ``agentbench:`` spec naming no bundled split.
    """
    if is_agentbench_spec(tasks):
        return str(agentbench_file(str(tasks)[len(AGENTBENCH_SCHEME):]))
    return os.fspath(tasks)
