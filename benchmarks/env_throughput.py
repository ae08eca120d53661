"""DB-v0 throughput under the oracle, against plain sqlite3 running the same SQL in the same run.

    python benchmarks/env_throughput.py [--episodes 200] [--difficulty 1 2 3] [--repeats 5] [--json out.json]

What is measured, per difficulty:

* **reset**: ``env.reset(options={"task_index": i})`` = generate procedural task ``i`` and load its
  tables into a fresh hardened in-memory database. Baseline: a plain ``sqlite3`` ``:memory:``
  connection creating and filling the same tables (no task generation, no hardening).
* **SQL step**: ``env.step(action)`` for each of the oracle's SQL operations: parsing the raw text,
  running the statement in the sandbox, formatting the result table, sanitising, the Gymnasium
  wrappers. Baseline: the SAME statement on a plain ``sqlite3`` connection holding the same tables,
  timed as a database client runs it (``cursor.execute`` + ``fetchall``), in autocommit mode like
  the sandbox. Each episode is replayed ``--repeats`` times (fresh database each time, so changes
  replay from the same state) and the env and the baseline alternate; each statement gets the
  median of its repeats on both sides, and the step ratio is the median over statements of
  (env median / baseline median).
* **steps/s**, **resets/s**: all steps (including the final answer) and all resets of the run.
* **phases** of the SQL step, each timed as the first thing after a reset as the step is: parsing
  the action text, the sandboxed execution (the statement plus the sandbox's SQLite authorizer,
  progress handler and Python around them) and formatting the result table; the **floor** line is
  (sandboxed execution + table) / raw, per statement: what the step ratio cannot go below without
  dropping the sandbox's hooks or the table the Assistant reads.

* **CMAT loop** (same run, after the table): per Assistant step, the single-agent CMAT wrapper with
  the rule checker against the raw env, both replaying the oracle's actions
  (:func:`cmat_overhead.measure_overhead` of ``benchmarks/cmat_overhead.py``; ``--cmat-episodes``).

Targets (issue 2): median SQL step <= 2x the raw sqlite execution of the same statement;
median reset <= 5 ms at difficulty 1. Issue 3: CMAT loop step <= 2x the raw env step.

* **OS-v0** (same run, last): ``benchmarks/os_throughput.py``'s figures (the env step of a shell
  command against the sandboxed shell driven directly, resets, 16 envs in a vector env).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import os_throughput  # sibling script (benchmarks/ is on sys.path)
from cmat_overhead import format_overhead, measure_overhead  # sibling script (benchmarks/ is on sys.path)

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import quote_ident
from cmat_gym.domains.db.env import DBEnv, format_result, tables_of
from cmat_gym.domains.os.backend import is_available

STEP_RATIO_TARGET = 2.0
RESET_TARGET_MS = 5.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def raw_connection(task: Task) -> sqlite3.Connection:
    """A plain in-memory sqlite3 database holding the task's tables (autocommit, no hardening)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for table in tables_of(task):
        conn.execute(table.create_sql())
        if table.rows:
            marks = ", ".join("?" * len(table.columns))
            conn.executemany(f"INSERT INTO {quote_ident(table.name)} VALUES ({marks})", table.rows)
    return conn


def time_raw_load(task: Task) -> float:
    """Seconds to build :func:`raw_connection` (the reset baseline)."""
    started = time.perf_counter()
    conn = raw_connection(task)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def time_raw_statements(task: Task, statements: Sequence[str]) -> list[float]:
    """Seconds for each statement, run in order on a fresh plain connection (execute + fetchall)."""
    conn = raw_connection(task)
    times = []
    for sql in statements:
        started = time.perf_counter()
        try:
            conn.execute(sql).fetchall()
        except sqlite3.Error:
            pass
        times.append(time.perf_counter() - started)
    conn.close()
    return times


def time_env_episode(env: gym.Env, task: Task, actions: Sequence[str]) -> tuple[list[float], list[float], bool]:
    """Replay the oracle's actions on ``task``: (SQL step seconds, all step seconds, success)."""
    env.reset(options={"task": task})
    sql_times, step_times, info = [], [], {}
    for action in actions:
        started = time.perf_counter()
        _, _, _, _, info = env.step(action)
        elapsed = time.perf_counter() - started
        step_times.append(elapsed)
        if (info.get("parsed_action") or {}).get("kind") == "operation":
            sql_times.append(elapsed)
    return sql_times, step_times, bool(info.get("success"))


def time_env_phases(env: gym.Env, task: Task, actions: Sequence[str]) -> list[tuple[float, float, float]]:
    """The phases of each SQL step, each the first thing after a reset as in :func:`time_env_episode`:
    (parsing the action text, the sandboxed execution, formatting the result table), in seconds."""
    unwrapped = env.unwrapped
    phases = []
    for action in actions:
        env.reset(options={"task": task})
        started = time.perf_counter()
        parsed = unwrapped.grammar.parse(action)
        parsed_at = time.perf_counter()
        if getattr(parsed, "kind", None) != "operation":
            continue
        result = unwrapped.sandbox.execute(parsed.value)
        executed_at = time.perf_counter()
        format_result(result)
        phases.append((parsed_at - started, executed_at - parsed_at, time.perf_counter() - executed_at))
    return phases


def bench_difficulty(difficulty: int, episodes: int, repeats: int, split: str,
                     tasks_path: str | None = None) -> dict[str, Any]:
    """Every figure for one difficulty, or for the tasks of a file (see the module docstring)."""
    if tasks_path:
        env = gym.make("cmat/DB-v0", tasks=tasks_path)
        episodes = min(episodes, env.unwrapped.num_tasks)
    else:
        env = gym.make("cmat/DB-v0", split=split, difficulty=difficulty)
    reset_times, raw_load_times, generate_times, tasks = [], [], [], []
    for i in range(episodes):
        started = time.perf_counter()
        if not tasks_path:
            DBEnv.generate_task(i, split, difficulty)
        generate_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        env.reset(seed=i, options={"task_index": i})
        reset_times.append(time.perf_counter() - started)
        task = env.unwrapped.task
        raw_load_times.append(time_raw_load(task))
        tasks.append(task)

    statement_env, statement_raw, all_steps, sql_samples, failures = [], [], [], [], 0
    statement_phases: list[tuple[float, float, float]] = []
    for task in tasks:
        actions = DBEnv.oracle_actions(task)
        statements = list(task.payload["gold_sql"])
        env_runs, raw_runs, phase_runs = [], [], []
        for _ in range(repeats):
            sql_times, step_times, success = time_env_episode(env, task, actions)
            failures += not success
            env_runs.append(sql_times)
            all_steps.extend(step_times)
            sql_samples.extend(sql_times)
            raw_runs.append(time_raw_statements(task, statements))
            phase_runs.append(time_env_phases(env, task, actions))
        for k in range(len(statements)):
            statement_env.append(statistics.median(run[k] for run in env_runs))
            statement_raw.append(statistics.median(run[k] for run in raw_runs))
            statement_phases.append(tuple(statistics.median(run[k][p] for run in phase_runs) for p in range(3)))
    env.close()

    ratios = [e / r for e, r in zip(statement_env, statement_raw, strict=True) if r > 0]
    return {
        "difficulty": tasks_path or difficulty,
        "episodes": episodes,
        "repeats": repeats,
        "oracle_failures": failures,
        "resets_per_s": len(reset_times) / sum(reset_times),
        "reset_median_ms": statistics.median(reset_times) * 1e3,
        "reset_p99_ms": percentile(reset_times, 99) * 1e3,
        "generate_median_ms": statistics.median(generate_times) * 1e3,
        "raw_load_median_ms": statistics.median(raw_load_times) * 1e3,
        "raw_loads_per_s": len(raw_load_times) / sum(raw_load_times),
        "steps_per_s": len(all_steps) / sum(all_steps),
        "statements": len(statement_env),
        "sql_step_p50_us": percentile(sql_samples, 50) * 1e6,
        "sql_step_p99_us": percentile(sql_samples, 99) * 1e6,
        "step_median_us": statistics.median(statement_env) * 1e6,
        "raw_median_us": statistics.median(statement_raw) * 1e6,
        "parse_median_us": statistics.median(p[0] for p in statement_phases) * 1e6,
        "sandbox_median_us": statistics.median(p[1] for p in statement_phases) * 1e6,
        "format_median_us": statistics.median(p[2] for p in statement_phases) * 1e6,
        # What a step cannot go below without dropping the sandbox's hooks or the result table:
        # sandboxed execution + formatting, per statement, over the same raw execution.
        "floor_ratio_median": statistics.median(
            (p[1] + p[2]) / r for p, r in zip(statement_phases, statement_raw, strict=True) if r > 0),
        "step_ratio_median": statistics.median(ratios),
        "step_ratio_p90": percentile(ratios, 90),
    }


def report(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The table, and whether every target passed."""
    lines = [f"{'figure':<48} {'ours':>11} {'baseline':>11} {'ratio':>7}  target"]
    ok = True

    def add(name: str, ours: float, base: float | None, target: str = "", passed: bool | None = None) -> None:
        nonlocal ok
        ratio = f"{ours / base:6.2f}x" if base else ""
        verdict = "" if passed is None else ("PASS" if passed else "FAIL")
        ok = ok and passed is not False
        lines.append(f"{name:<48} {ours:>11.1f} {base if base is not None else float('nan'):>11.1f} {ratio:>7}  "
                     f"{target} {verdict}".rstrip().replace(" nan", "    -"))

    for r in rows:
        d = r["difficulty"]
        lines.append(f"--- {'difficulty ' if isinstance(d, int) else ''}{d}: {r['episodes']} episodes x {r['repeats']} repeats, "
                     f"{r['statements']} SQL statements, oracle failures {r['oracle_failures']}")
        add("resets/s (baseline: raw sqlite load)", r["resets_per_s"], r["raw_loads_per_s"])
        reset_target = RESET_TARGET_MS if d == 1 else None
        add("median reset, ms (baseline: raw sqlite load)", r["reset_median_ms"], r["raw_load_median_ms"],
            f"<= {RESET_TARGET_MS:g} ms" if reset_target else "",
            r["reset_median_ms"] <= RESET_TARGET_MS if reset_target else None)
        add("  of which task generation, ms", r["generate_median_ms"], None)
        add("p99 reset, ms", r["reset_p99_ms"], None)
        add("steps/s (all steps, incl. answers)", r["steps_per_s"], None)
        add("SQL step p50, us", r["sql_step_p50_us"], None)
        add("SQL step p99, us", r["sql_step_p99_us"], None)
        add("median SQL step, us (baseline: execute+fetchall)", r["step_median_us"], r["raw_median_us"])
        add("  of which parsing the action, us", r["parse_median_us"], None)
        add("  of which sandboxed execution, us", r["sandbox_median_us"], r["raw_median_us"])
        add("  of which formatting the result table, us", r["format_median_us"], None)
        lines.append(f"{'floor: (sandboxed execution + table) / raw':<48} {r['floor_ratio_median']:>10.2f}x")
        lines.append(f"{'per-statement step ratio, median (p90)':<48} {r['step_ratio_median']:>10.2f}x "
                     f"{'':>11} {'':>7}  <= {STEP_RATIO_TARGET:g}x "
                     f"{'PASS' if r['step_ratio_median'] <= STEP_RATIO_TARGET else 'FAIL'}"
                     f"   (p90 {r['step_ratio_p90']:.2f}x)")
        ok = ok and r["step_ratio_median"] <= STEP_RATIO_TARGET and r["oracle_failures"] == 0
    return "\n".join(lines), ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables. A benchmark reports: it exits 0 whether the targets
    pass or not (the PASS/FAIL lines and the JSON's ``pass`` say which)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200, help="episodes (tasks) per difficulty")
    parser.add_argument("--difficulty", type=int, nargs="+", default=[1, 2, 3], choices=(1, 2, 3))
    parser.add_argument("--repeats", type=int, default=5, help="replays of each episode for the step medians")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--tasks", metavar="PATH", default=None,
                        help="benchmark the tasks of this file instead of procedural tasks")
    parser.add_argument("--cmat-episodes", type=int, default=100,
                        help="episodes of the CMAT loop section (0 skips it)")
    parser.add_argument("--os-steps", type=int, default=200,
                        help="commands timed in the OS-v0 section (0 skips it; needs bubblewrap and root)")
    parser.add_argument("--os-resets", type=int, default=60, help="resets timed in the OS-v0 section")
    parser.add_argument("--os-vector", type=int, default=16, help="OS-v0 envs stepping at once in a vector env")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    if args.tasks:
        rows = [bench_difficulty(0, args.episodes, args.repeats, args.split, args.tasks)]
    else:
        rows = [bench_difficulty(d, args.episodes, args.repeats, args.split) for d in args.difficulty]
    table, ok = report(rows)
    print(f"cmat/DB-v0 env throughput (oracle policy, sqlite {sqlite3.sqlite_version}, "
          f"python {sys.version.split()[0]})\n{table}")
    cmat = None
    if args.cmat_episodes > 0:
        cmat = measure_overhead(args.cmat_episodes, args.repeats, "rule", args.tasks or "procedural")
        print(f"\n{format_overhead(cmat)}")
        ok = ok and cmat["pass"]
    os_figures = None
    if args.os_steps > 0:
        if is_available():
            os_figures = os_throughput.run(args.os_steps, args.os_resets, args.os_vector)
            print(f"\n{os_throughput.format_os(os_figures)}")
        else:
            print("\n(OS-v0 section skipped: the bubblewrap sandbox needs bwrap and root)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"results": rows, "cmat_loop": cmat, "os": os_figures, "pass": ok}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
