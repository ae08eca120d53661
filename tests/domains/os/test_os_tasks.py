"""The procedural OS task generator: ids, determinism, disjoint splits, coverage, the payload contract,
and the oracle replayed in a real sandbox.

Every shell command of a task (init, start, solution, check) runs inside a bubblewrap ShellSandbox,
never on the host; tests that need one skip when bubblewrap cannot run here.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from cmat_gym.core.procedural import first_in_split, instruction_split
from cmat_gym.core.task import Task
from cmat_gym.domains.os.backend import ShellSandbox, is_available
from cmat_gym.domains.os.tasks import (
    CONTEXT,
    FAMILIES,
    KINDS,
    MATCHES,
    START_READY_FILE,
    answers_equal,
    generate_task,
    prepare_sandbox,
    task_from_id,
)

needs_sandbox = pytest.mark.skipif(not is_available(),
                                   reason="bubblewrap sandbox unavailable (apt-get install -y bubblewrap)")

SEEDS = 20  # x 2 splits x 3 difficulties = 120 tasks (60 per split) shared by most tests
PAYLOAD_KEYS = {"source", "family", "kind", "init", "start", "solution", "answer", "check", "match"}


@pytest.fixture(scope="module")
def timed_sample() -> tuple[list[Task], list[float]]:
    tasks, times = [], []
    for d in (1, 2, 3):
        for split in ("train", "test"):
            for seed in range(SEEDS):
                start = time.perf_counter()
                tasks.append(generate_task(seed, split, d))
                times.append(time.perf_counter() - start)
    return tasks, times


@pytest.fixture(scope="module")
def sample(timed_sample: tuple[list[Task], list[float]]) -> list[Task]:
    return timed_sample[0]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ShellSandbox]:
    sb = ShellSandbox(timeout_s=10.0, max_output_chars=20_000)
    sb.start()
    yield sb
    sb.close()


def one_per_cell(sample: list[Task]) -> list[Task]:
    """The first task of every (family, kind, difficulty) cell of the sample (up to 30 tasks)."""
    cells: dict[tuple[str, str, int], Task] = {}
    for task in sample:
        cells.setdefault((task.payload["family"], task.payload["kind"], task.difficulty), task)
    return list(cells.values())


def build_state(sb: ShellSandbox, task: Task) -> None:
    """A fresh sandbox in the task's initial state, done by hand (not with prepare_sandbox)."""
    p = task.payload
    sb.reset()
    if p["init"]:
        result = sb.run_script(p["init"])
        assert result.exit_code == 0, (task.task_id, result.output)
    if p["start"]:
        sb.start_background(p["start"])
        deadline = time.monotonic() + 5
        while sb.run_script(f"test -e {START_READY_FILE}").exit_code != 0:
            assert time.monotonic() < deadline, f"{task.task_id}: processes did not start"
            time.sleep(0.005)


# ---------------------------------------------------------------------- constants, arguments, ids
def test_public_constants():
    assert FAMILIES == ("files", "text", "processes", "users", "scripting")
    assert KINDS == ("question", "change")
    assert MATCHES == ("exact", "integer", "float", "set")
    assert "/root" in CONTEXT and "answer(" in CONTEXT


@pytest.mark.parametrize("args", [(-1, "train", 1), (1, "dev", 1), (1, "train", 0), (1, "train", 4),
                                  (1.0, "train", 1), (True, "train", 1), (1, "train", True),
                                  ("1", "train", 1)])
def test_bad_arguments_raise(args):
    with pytest.raises(ValueError, match="Expects"):
        generate_task(*args)


@pytest.mark.parametrize("bad", [
    "", "os/train/d2", "os/dev/d1/3", "os/train/d4/3", "os/train/d0/3", "os/train/2/3", "os/train/d1/-1",
    "os/train/d1/01", "os/train/d1/x", "db/train/d1/3", "os/train/d1/3/", " os/train/d1/3", "os/TRAIN/d1/3",
    None,
])
def test_bad_task_ids_raise(bad):
    with pytest.raises(ValueError, match=r"Expects .*actual"):
        task_from_id(bad)


# ---------------------------------------------------------------------- answers_equal
@pytest.mark.parametrize("answer, gold, match, equal", [
    ("notes.txt", "notes.txt", "exact", True),
    (" notes.txt\n", "notes.txt", "exact", True),
    ("Notes.txt", "notes.txt", "exact", False),
    ("12", "12", "integer", True),
    ("+12", "12", "integer", True),
    ("12.0", "12", "integer", True),
    ("13", "12", "integer", False),
    ("12 files", "12", "integer", False),
    ("", "0", "integer", False),
    ("386.73", "386.73", "float", True),
    ("386.734", "386.73", "float", True),
    ("386.74", "386.73", "float", True),
    ("386.7", "386.73", "float", False),
    ("386.75", "386.73", "float", False),
    ("nan", "386.73", "float", False),
    ("inf", "inf", "float", False),
    ("bob alice", "alice\nbob", "set", True),
    ("alice, bob", "alice\nbob", "set", True),
    ("alice bob bob", "alice\nbob", "set", True),
    ("alice", "alice\nbob", "set", False),
    ("alice bob carol", "alice\nbob", "set", False),
    ("", "", "set", False),
])
def test_answers_equal(answer, gold, match, equal):
    assert answers_equal(answer, gold, match) is equal


def test_answers_equal_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="Expects match"):
        answers_equal("1", "1", "fuzzy")


# ---------------------------------------------------------------------- determinism
@needs_sandbox
@pytest.mark.parametrize("task_id", ["os/train/d1/0", "os/test/d2/5", "os/train/d3/123456789012345678901"])
def test_same_id_same_task(task_id):
    first = task_from_id(task_id)
    assert first.task_id == task_id
    assert task_from_id(task_id).to_json() == first.to_json()
    seed, split, d = int(task_id.rsplit("/", 1)[1]), task_id.split("/")[1], int(task_id.split("/")[2][1:])
    assert generate_task(seed, split, d) == first


@needs_sandbox
def test_same_task_in_another_process():
    names = [(3, "train", 1), (4, "test", 2), (5, "train", 3)]
    expected = [generate_task(*name).to_json() for name in names]
    script = ("import json\nfrom cmat_gym.domains.os.tasks import generate_task\n"
              f"print(json.dumps([generate_task(*n).to_json() for n in {names!r}]))")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                         timeout=120)
    assert json.loads(out.stdout) == expected


# ---------------------------------------------------------------------- the payload contract
@needs_sandbox
def test_payload_schema(sample):
    for task in sample:
        p = task.payload
        assert set(p) == PAYLOAD_KEYS, task.task_id
        assert task.domain == "os" and task.context == CONTEXT
        assert task.task_id == f"os/{task.split}/d{task.difficulty}/{task.task_id.rsplit('/', 1)[1]}"
        assert task.instruction and task.instruction.strip() == task.instruction
        assert p["source"] == "procedural"
        assert p["family"] in FAMILIES and p["kind"] in KINDS and p["match"] in MATCHES
        assert isinstance(p["init"], str)
        assert isinstance(p["solution"], list) and p["solution"]
        assert all(isinstance(c, str) and c.strip() for c in p["solution"])
        assert (p["start"] is not None) == (p["family"] == "processes")
        assert p["start"] is None or isinstance(p["start"], str) and p["start"]
        if p["kind"] == "question":
            assert isinstance(p["answer"], str) and p["answer"] and p["answer"] == p["answer"].strip()
            assert p["check"] is None
        else:
            assert p["answer"] is None and p["match"] == "exact"
            assert isinstance(p["check"], str) and p["check"].strip()
        assert Task.from_json(task.to_json()) == task  # plain JSON all the way down


@needs_sandbox
def test_no_clock_and_no_shell_randomness(sample):
    for task in sample:
        p = task.payload
        text = "\n".join([p["init"], p["start"] or "", *p["solution"], p["check"] or ""])
        for word in ("$RANDOM", "$SRANDOM", "urandom", "shuf", "$(date", "mktemp", "$$"):
            assert word not in text, (task.task_id, word)


@needs_sandbox
def test_instructions_name_their_paths(sample):
    # Every path the oracle touches is named in the instruction (or lies in a directory that is).
    for task in sample:
        for command in task.payload["solution"]:
            for path in re.findall(r"/(?:root|home|var/log)(?:/[\w.-]+)+", command):
                named = path in task.instruction or path.rsplit("/", 1)[0] in task.instruction
                assert named, (task.task_id, path)


# ---------------------------------------------------------------------- splits and coverage
@needs_sandbox
def test_splits_disjoint_by_construction(sample):
    train = {t.instruction for t in sample if t.split == "train"}
    test = {t.instruction for t in sample if t.split == "test"}
    assert not train & test
    assert all(instruction_split(t.instruction) == t.split for t in sample)
    assert len(train) >= 55 and len(test) >= 55  # 60 each: varied texts, not a handful of templates


@needs_sandbox
def test_every_family_kind_and_difficulty_appears(sample):
    assert {t.payload["family"] for t in sample} == set(FAMILIES)
    assert {t.payload["kind"] for t in sample} == set(KINDS)
    assert {t.difficulty for t in sample} == {1, 2, 3}
    pairs = {(t.payload["family"], t.payload["kind"]) for t in sample}
    assert pairs == {(f, k) for f in FAMILIES for k in KINDS}
    for d in (1, 2, 3):
        assert {t.payload["family"] for t in sample if t.difficulty == d} == set(FAMILIES), d
    assert {t.payload["match"] for t in sample} == set(MATCHES)


@pytest.mark.slow
def test_every_variant_occurs_in_both_splits():
    # Drafts only (no sandbox), ~10 s: a variant whose texts all hash into one split would never be tested.
    from cmat_gym.domains.os.tasks import _VARIANTS, _candidate  # private: the table of templates

    seen: set[tuple[str, str, int, str]] = set()
    for split in ("train", "test"):
        for d in (1, 2, 3):
            for seed in range(600):
                cand = first_in_split("os", seed, split, d, lambda rng, d=d: _candidate(rng, d),
                                      lambda c: c.instruction)
                seen.add((cand.family, cand.variant, d, split))
    wanted = {(family, v, d, split) for family, table in _VARIANTS.items()
              for (_, d), variants in table.items() for v in variants for split in ("train", "test")}
    assert wanted - seen == set()


# ---------------------------------------------------------------------- gold answers and checks
@needs_sandbox
def test_oracle_replay_reproduces_gold_and_passes_checks(sample, sandbox):
    tasks = one_per_cell(sample)
    assert len(tasks) >= 24
    for task in tasks:
        p = task.payload
        build_state(sandbox, task)
        if p["kind"] == "change":
            before = sandbox.run_script(p["check"])
            assert before.exit_code not in (0, None), f"{task.task_id}: check passes on the initial state"
        outputs = []
        for command in p["solution"]:
            result = sandbox.run(command)
            assert result.exit_code == 0 and not result.timed_out, (task.task_id, command, result)
            outputs.append(result.output)
        if p["kind"] == "question":
            assert outputs[-1].strip() == p["answer"], task.task_id
            assert answers_equal(outputs[-1], p["answer"], p["match"])
        else:
            after = sandbox.run_script(p["check"])
            assert after.exit_code == 0, (task.task_id, after.output)


@needs_sandbox
def test_checks_reject_overdoing_it(sample, sandbox):
    """Solving and then wiping the data (or killing every process) must fail: checks guard the rest."""
    wipe = ("pkill -f /root/.svc/; pkill -x sleep; "
            "find /root /home /var/log -mindepth 1 -maxdepth 1 -exec rm -rf {} +; true")
    tasks = [t for t in one_per_cell(sample)
             if t.payload["kind"] == "change" and t.payload["family"] != "users"]
    assert len(tasks) >= 10
    for task in tasks:
        build_state(sandbox, task)
        for command in task.payload["solution"]:
            sandbox.run(command)
        sandbox.run(wipe)
        assert sandbox.run_script(task.payload["check"]).exit_code != 0, task.task_id


@needs_sandbox
def test_plausible_wrong_answers_do_not_match(sample):
    questions = [t for t in sample if t.payload["kind"] == "question"]
    assert len(questions) >= 40
    for task in questions:
        gold, match = task.payload["answer"], task.payload["match"]
        assert answers_equal(gold, gold, match)
        if match == "integer":
            assert not answers_equal(str(int(gold) + 1), gold, match)
            assert not answers_equal(str(int(gold) - 1), gold, match)
            if task.instruction.startswith("How many") or " How many " in task.instruction:
                assert int(gold) > 0, task.task_id  # a count over a non-empty state is never 0
        elif match == "float":
            assert not answers_equal(f"{float(gold) + 0.05:.2f}", gold, match)
        elif match == "set":
            items = gold.split()
            assert len(items) == len(set(items)) and items
            assert not answers_equal(" ".join(items[:-1]), gold, match)
            assert not answers_equal(" ".join([*items, "root"]), gold, match)
        else:
            assert not answers_equal(gold + "x", gold, match)


@needs_sandbox
def test_prepare_sandbox_builds_the_initial_state(sample, sandbox):
    task = next(t for t in sample if t.payload["family"] == "processes" and t.payload["kind"] == "question")
    sandbox.reset()
    prepare_sandbox(sandbox, task.payload)
    result = sandbox.run(task.payload["solution"][-1])
    assert answers_equal(result.output, task.payload["answer"], task.payload["match"])
    sandbox.reset()
    with pytest.raises(RuntimeError, match="init failed"):
        prepare_sandbox(sandbox, {"init": "exit 3", "start": None})


# ---------------------------------------------------------------------- speed
@needs_sandbox
def test_generation_is_fast(timed_sample):
    """Loose bound only (a loaded CI machine); the measured figure is in the module docstring."""
    assert statistics.median(timed_sample[1]) < 0.5
