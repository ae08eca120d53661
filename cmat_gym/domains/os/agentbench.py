"""Loading AgentBench ``os_interaction`` files (JSON list, one object, or JSONL) unchanged, as Tasks.

A record (AgentBench's format, read as its ``task.py`` reads it)::

    {"description": "...",                                   # the instruction
     "create": {"image": "...", "init": SCRIPTS},            # optional; a non-object "create" has no init
     "start": SCRIPT,                                        # optional; runs in the background
     "evaluation": {"match": "text" | {"answer"|"regex": "...", "strip": bool}}
                 | {"check": SCRIPT | [SCRIPT | null, ...], "example": SCRIPT},
     "labels": [...]}

where a SCRIPT is a string (bash code), ``{"code": ..., "language": "bash"|"python"}`` or ``{"file":
..., "language": ...}`` and SCRIPTS one SCRIPT or a list of them. A ``null`` in a check list stands for
the ``example`` script (its output is what the answer is compared with).

Script files resolve against the task file's script directory: for ``data/os_interaction/data/<N>/
*.json`` in an AgentBench checkout that is ``data/os_interaction/scripts/<N>/``; for a dev file
(``data/os_interaction/data/dev.json``, or any ``<dir>/dev.json``) it is ``scripts/dev/`` there. A
file that does not exist falls back to cmat-gym's own bundled stand-ins in
``cmat_gym/domains/os/scripts/`` (``<label>/<file>``, then ``<file>``: the standard checkers
``check/integer-match.py``, ``string-match``, ``size-match``, ``containing``, ``in``, and the dev
tasks' ``check/0.sh``, ``example/0.sh`` and ``init/stock-log.sh``).

A task that still misses a script, uses a script language other than bash or python, needs a
program the sandbox does not have (``command -v`` inside a sandbox for the programs its init, start
and example scripts run), or compares with an example it lacks, is loaded with
``payload["unsupported"] = "<reason>"``: the env scores it 0 with ``{"unsupported": reason}`` in
the details, never silently, and :func:`load_os_interaction` warns once, listing them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from cmat_gym.core.task import Task

log = logging.getLogger(__name__)

BUNDLED_SCRIPTS = Path(__file__).resolve().parent / "scripts"
LANGUAGES = ("bash", "python")

# AgentBench's OS instructions, short: the first observation's context.
PREAMBLE = (
    "You are root in a Linux (Ubuntu-like) shell, working directory /root. Each turn take exactly one "
    'action: run bash code ("Act: bash" followed by a ```bash block), answer the question '
    '("Act: answer(<your answer>)"), or say that the requested change is done ("Act: finish"). '
    "Outputs longer than 800 characters are truncated; commands must not wait for input."
)

Script = dict[str, str]  # {"language": "bash" | "python" | ..., "code": "..."}


class ScriptMissing(Exception):
    """A script object names a file that exists neither in the script directory nor bundled."""


def script_dir_of(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """(the script directory, its label) of an AgentBench task file (see the module docstring)."""
    path = Path(path).resolve()
    parent = path.parent
    if parent.parent.name == "data" and parent.name.isdigit():  # data/os_interaction/data/<N>/x.json
        return parent.parent.parent / "scripts" / parent.name, parent.name
    label = path.stem
    if parent.name == "data":  # data/os_interaction/data/dev.json
        return parent.parent / "scripts" / label, label
    return parent / "scripts" / label, label


def load_script(obj: Any, script_dir: Path, label: str) -> Script | None:
    """A SCRIPT (see the module docstring) as ``{"language", "code"}``; None for ``null``.

    Raises:
        ScriptMissing: a ``file`` found neither in ``script_dir`` nor among the bundled stand-ins.
        ValueError: an object with neither ``code`` nor ``file``.
    """
    if obj is None:
        return None
    if isinstance(obj, str):
        return {"language": "bash", "code": obj}
    if not isinstance(obj, dict):
        raise ValueError(f"Expects a script (a string or an object with 'code' or 'file'), actual {obj!r}")
    language = str(obj.get("language", "bash"))
    if "file" in obj:
        name = str(obj["file"])
        for candidate in (script_dir / name, BUNDLED_SCRIPTS / label / name, BUNDLED_SCRIPTS / name):
            if candidate.is_file():
                return {
                    "language": language,
                    "code": candidate.read_text(encoding="utf-8"),
                    "file": name,
                    "source": "bundled" if BUNDLED_SCRIPTS in candidate.parents else "task",
                }
        raise ScriptMissing(
            f"script file {name!r} is in neither {script_dir} nor cmat-gym's bundled stand-ins"
        )
    if "code" in obj:
        return {"language": language, "code": str(obj["code"])}
    raise ValueError(f"Expects a script object with 'code' or 'file', actual {obj!r}")


def _scripts(obj: Any, script_dir: Path, label: str) -> list[Script | None]:
    items = obj if isinstance(obj, list) else [obj]
    return [load_script(item, script_dir, label) for item in items]


def record_to_task(record: dict[str, Any], task_id: str, script_dir: Path, label: str) -> Task:
    """One AgentBench OS record as a Task (unsupported ones carry ``payload["unsupported"]``)."""
    problems: list[str] = []

    def scripts(obj: Any) -> list[Script | None]:
        try:
            return _scripts(obj, script_dir, label)
        except (ScriptMissing, ValueError) as exc:
            problems.append(str(exc))
            return []

    create = record.get("create")
    # As AgentBench: only an object "create" with "init" has init scripts (dev task 10's list has none).
    init = (
        [s for s in scripts(create["init"]) if s is not None]
        if isinstance(create, dict) and "init" in create
        else []
    )
    starts = scripts(record["start"]) if record.get("start") is not None else []
    start = starts[0] if starts else None
    evaluation = record.get("evaluation") or {}
    match: dict[str, Any] | None = None
    check: list[Script | None] | None = None
    example: Script | None = None
    if "match" in evaluation:
        raw = evaluation["match"]
        match = {"answer": raw, "strip": True} if isinstance(raw, str) else dict(raw)
        match.setdefault("strip", True)
        if "answer" not in match and "regex" not in match:
            problems.append("the match has neither 'answer' nor 'regex'")
    elif "check" in evaluation:
        check = scripts(evaluation["check"])
    else:
        problems.append("the evaluation has neither 'match' nor 'check'")
    if "example" in evaluation:
        loaded = scripts(evaluation["example"])
        example = loaded[0] if loaded else None
    if check is not None and None in check and example is None:
        problems.append("a check compares with the example's output, but the task has no example")
    for script in (*init, start, example, *(check or [])):
        if script is not None and script["language"] not in LANGUAGES:
            problems.append(f"script language {script['language']!r} is not supported (only bash and python)")
    kind = "question" if match is not None or (check is not None and None in check) else "change"
    payload: dict[str, Any] = {
        "source": "agentbench",
        "kind": kind,
        "init": init,
        "start": start,
        "match": match,
        "check": check,
        "example": example,
        "labels": list(record.get("labels") or []),
        "image": create.get("image") if isinstance(create, dict) else None,
    }
    if problems:
        payload["unsupported"] = "; ".join(dict.fromkeys(problems))
    return Task(
        domain="os",
        task_id=task_id,
        instruction=str(record["description"]),
        context=PREAMBLE,
        payload=payload,
        split="test",
        difficulty=0,
    )


def read_os_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON file (a list of objects, or one object) or a JSONL file."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        elif stripped.startswith("{") and not str(path).endswith(".jsonl"):
            try:
                records = [json.loads(stripped)]
            except json.JSONDecodeError:
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"Expects {path} to be JSON or JSONL, actual: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "description" in r for r in records):
        raise ValueError(f"Expects {path} to hold AgentBench OS records (objects with a 'description')")
    return records


def load_os_interaction(path: str | os.PathLike[str], *, check_programs: bool = True) -> list[Task]:
    """Every task of an AgentBench OS file; ``task_id`` is ``agentbench-os/<file name>/<index>``.

    With ``check_programs`` (and a working sandbox), the programs each task's init, start and
    example scripts run are looked up with ``command -v`` inside one sandbox; a task that needs a
    missing one is marked unsupported. Unsupported tasks are listed in one warning.
    """
    script_dir, label = script_dir_of(path)
    name = os.path.basename(os.fspath(path))
    tasks = [
        record_to_task(r, f"agentbench-os/{name}/{i}", script_dir, label)
        for i, r in enumerate(read_os_records(path))
    ]
    if check_programs:
        tasks = _mark_missing_programs(tasks)
    unsupported = [t for t in tasks if t.payload.get("unsupported")]
    if unsupported:
        listing = "; ".join(f"{t.task_id}: {t.payload['unsupported']}" for t in unsupported)
        message = (
            f"{len(unsupported)} of {len(tasks)} AgentBench OS tasks in {name} are unsupported "
            f"and score 0: {listing}"
        )
        log.warning(message)
        warnings.warn(message, stacklevel=2)
    return tasks


def _mark_missing_programs(tasks: list[Task]) -> list[Task]:
    from dataclasses import replace

    from cmat_gym.domains.os.backend import ShellSandbox, is_available
    from cmat_gym.domains.os.checker import program_names

    needs: dict[str, list[str]] = {}
    for task in tasks:
        if task.payload.get("unsupported"):
            continue
        payload = task.payload
        programs: list[str] = []
        for script in (*payload["init"], payload["start"], payload["example"]):
            if script is not None and script["language"] == "bash":
                programs += program_names(script["code"])
        needs[task.task_id] = programs
    wanted = sorted({p for programs in needs.values() for p in programs})
    if not wanted:
        return tasks
    if not is_available():
        log.info("no sandbox here: the programs AgentBench OS tasks need were not checked")
        return tasks
    with ShellSandbox(prewarm=False) as sandbox:
        result = sandbox.run_script(
            'for p in "$@"; do builtin command -v -- "$p" >/dev/null || builtin printf "%s\\n" "$p"; done',
            args=wanted,
        )
    missing = set(result.output.split()) if result.exit_code is not None else set()
    out = []
    for task in tasks:
        absent = [p for p in needs.get(task.task_id, []) if p in missing]
        if absent:
            reason = f"needs {', '.join(f'`{p}`' for p in absent)}, not installed in the sandbox"
            task = replace(task, payload={**task.payload, "unsupported": reason})
        out.append(task)
    return out
