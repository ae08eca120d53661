"""No reflection may be lost: a writer killed with SIGKILL mid-write, and several writer processes
at once, leave an intact store holding every reflection whose add() returned."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from cmat_gym.cmat import memory
from cmat_gym.cmat.memory import ReflectionStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# The reflection text of writer `tag`'s i-th add: deterministic, 0-17 KB (several pages, so a kill
# lands inside a transaction), and different per row so a torn or mixed-up row would show.
BODY_SRC = '''
def body(tag, i):
    return f"{tag}/{i}|" + "".join(f"{tag}.{i}.{j};" for j in range((i * 7919) % 1200))
'''
namespace: dict = {}
exec(BODY_SRC, namespace)
body = namespace["body"]

WRITER_SRC = BODY_SRC + '''
import importlib.util
import sys

# Load memory.py by file: the same code, without importing the whole package (gymnasium, numpy),
# which would make each writer's start-up, not its writes, the cost of this test.
spec = importlib.util.spec_from_file_location("cmat_memory_under_test", sys.argv[5])
memory = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
ReflectionStore = memory.ReflectionStore

path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ReflectionStore(path)
print("ready", flush=True)
if sys.argv[4] == "wait":
    sys.stdin.readline()
i = 0
while count < 0 or i < count:
    rid = store.add(split="train", domain="db", task_id=f"{tag}-{i}", task_text=f"task {tag} {i}",
                    text=body(tag, i))
    print(rid, i, flush=True)  # printed only once add() has returned: a committed reflection
    i += 1
store.close()
'''


def start_writer(path, tag: str, count: int, wait: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SRC, str(path), tag, str(count), "wait" if wait else "go", memory.__file__],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line == "ready\n", f"writer failed to start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"


def committed(output: str) -> dict[int, int]:
    """{id: i} for every complete line the writer printed."""
    out = {}
    for line in output.splitlines(keepends=True):
        if line.endswith("\n"):
            rid, i = line.split()
            out[int(rid)] = int(i)
    return out


def check_store(path, expected: dict[int, tuple[str, int]]) -> dict[int, tuple[str, int]]:
    """Integrity ok, every expected (id -> (tag, i)) row present with its exact text; returns all rows."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with ReflectionStore(path, mode="ro") as store:
        rows = {r.id: r for r in store.all()}
    for rid, (tag, i) in expected.items():
        assert rid in rows, f"committed reflection {rid} ({tag}-{i}) is missing"
        ref = rows[rid]
        assert (ref.task_id, ref.text) == (f"{tag}-{i}", body(tag, i))
    seen = {}
    for ref in rows.values():  # no torn or half-written row either
        tag, i = ref.task_id.rsplit("-", 1)
        assert ref.text == body(tag, int(i)) and ref.task_text == f"task {tag} {i}"
        seen[ref.id] = (tag, int(i))
    return seen


def test_sigkill_mid_write_loses_no_committed_reflection(tmp_path):
    path = tmp_path / "reflections.sqlite"
    expected: dict[int, tuple[str, int]] = {}
    for round_ in range(3):
        tag = f"kill{round_}"
        proc = start_writer(path, tag, -1, wait=False)
        wait_ready(proc)
        time.sleep(0.3 + 0.1 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        reported = committed(out)
        assert reported, "the writer committed nothing before the kill"
        assert sorted(reported.values()) == list(range(len(reported)))
        expected.update({rid: (tag, i) for rid, i in reported.items()})
        rows = check_store(path, expected)
        mine = [i for t, i in rows.values() if t == tag]
        # At most one more row than reported: committed, killed before printing its id.
        assert len(reported) <= len(mine) <= len(reported) + 1
    with ReflectionStore(path) as store:  # the store stays writable after the crashes
        rid = store.add(split="train", domain="db", task_id="after-0", task_text="task after 0",
                        text=body("after", 0))
    expected[rid] = ("after", 0)
    check_store(path, expected)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "reflections.sqlite"  # not created yet: the writers race to create it too
    writers, per_writer = 4, 50
    procs = [start_writer(path, f"w{n}", per_writer, wait=True) for n in range(writers)]
    for proc in procs:
        wait_ready(proc)
    for proc in procs:  # release them together
        proc.stdin.write("go\n")
        proc.stdin.flush()
    expected: dict[int, tuple[str, int]] = {}
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reported = committed(out)
        assert sorted(reported.values()) == list(range(per_writer))
        expected.update({rid: (f"w{n}", i) for rid, i in reported.items()})
    assert len(expected) == writers * per_writer  # ids are unique across processes
    rows = check_store(path, expected)
    assert rows == expected
    with ReflectionStore(path) as store:
        assert len(store) == writers * per_writer
