"""benchmarks/train_demo.py: the training demonstration (SFT, PPO per seed and checker-reward ablation, paired stats)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from algorithms import checker_train, grpo_train, ppo_train, sft_train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_demo.py"
spec = importlib.util.spec_from_file_location("train_demo", SCRIPT)
demo = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = demo
spec.loader.exec_module(demo)

PARSERS = {"algorithms.sft_train": sft_train.check_args, "algorithms.ppo_train": ppo_train.check_args,
           "algorithms.grpo_train": grpo_train.check_args, "algorithms.checker_train": checker_train.check_args}


def _args(preset: str, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"model": demo.PRESETS[preset]["model"], "checker_weight": 0.1, "threads": None,
                                 **kw})


@pytest.mark.parametrize("preset", sorted(demo.PRESETS))
def test_every_stage_command_is_accepted_by_its_script(preset: str, tmp_path: Path) -> None:
    """A typo in a preset's flags would only show hours into a run: parse and check each command up front."""
    p = demo.PRESETS[preset]
    graph = demo.stage_graph(p)
    runs = demo.rl_runs(p)
    # check_args looks for the learned checker's files, which the checker stage would have written
    (tmp_path / "checker" / "adapter").mkdir(parents=True)
    (tmp_path / "checker" / "checker_config.json").write_text("{}")
    assert len(runs) == len(p["seeds"]) * (len(p["ppo_variants"]) + p["with_grpo"])
    for stage in graph:
        cmd = demo.stage_command(stage, tmp_path, p, _args(preset))
        if cmd[1] == "-m":
            parsed = PARSERS[cmd[2]](cmd[3:])
            assert parsed.model == p["model"]
            if stage in dict((r, k) for r, k, _ in runs):
                kind, seed = next((k, s) for r, k, s in runs if r == stage)
                assert parsed.seed == seed and parsed.init_adapter == str(tmp_path / "sft" / "adapter")
                assert parsed.output_dir == str(tmp_path / stage)
                if kind == "ppo-learned":
                    assert parsed.checker == "learned" and parsed.checker_adapter == str(tmp_path / "checker")
                    assert graph[stage] == ["sft", "checker"]
                else:
                    assert parsed.checker == "rule"
                assert parsed.checker_weight == (0.0 if kind == "ppo-none" else 0.1)
            else:
                assert parsed.seed == p["seeds"][0]  # SFT and the checker: once, shared by the seeds
        else:
            assert cmd[1] == str(demo.TABLE_SCRIPT)
            agent = stage.removeprefix("eval-")
            assert ("--adapter" in cmd) == (agent != "zero-shot")
            assert cmd[cmd.index("--json") + 1] == str(tmp_path / "eval" / f"{agent}.json")
            assert cmd[cmd.index("--ablations") + 1:cmd.index("--ablations") + 3] == ["rule", "memory"]
    # every agent is scored on the same tasks: the evaluation flags do not depend on the stage
    evals = {tuple(a for a in demo.stage_command(s, tmp_path, p, _args(preset))
                   if "adapter" not in a and "eval" not in a and not a.endswith(".json"))
             for s in graph if s.startswith("eval-")}
    assert len(evals) == 1


def test_the_gpu_preset_is_the_issues_scale() -> None:
    p = demo.PRESETS["gpu"]
    assert p["seeds"] == [1, 2, 3] and p["ppo_variants"] == ["none", "rule", "learned"]
    assert int(p["eval"][p["eval"].index("--episodes") + 1]) >= 200


def test_resumes_an_interrupted_ppo_run(tmp_path: Path) -> None:
    p = demo.PRESETS["cpu"]
    cmd = demo.stage_command("ppo-rule-s1", tmp_path, p, _args("cpu"))
    assert "--resume" not in cmd
    (tmp_path / "ppo-rule-s1" / "checkpoint").mkdir(parents=True)
    (tmp_path / "ppo-rule-s1" / "checkpoint" / "latest").write_text("iter-000001")
    assert "--resume" in demo.stage_command("ppo-rule-s1", tmp_path, p, _args("cpu"))


def test_a_training_stage_is_done_only_when_its_process_finished(tmp_path: Path) -> None:
    (tmp_path / "ppo-rule-s1" / "adapter").mkdir(parents=True)  # PPO saves one at every checkpoint
    (tmp_path / "ppo-rule-s1" / "adapter" / "adapter_config.json").write_text("{}")
    assert not demo.stage_done("ppo-rule-s1", tmp_path)
    (tmp_path / "ppo-rule-s1" / demo.DONE_MARK).write_text("{}")
    assert demo.stage_done("ppo-rule-s1", tmp_path)
    assert not demo.stage_done("eval-ppo-rule-s1", tmp_path)


# ------------------------------------------------------------------------------ statistics, by hand
def test_mcnemar_against_a_hand_computation() -> None:
    # 10 tasks: a alone solves 5 (tasks 0-4), b alone 1 (task 5), both 2 (6, 7), neither 2 (8, 9)
    a = [1, 1, 1, 1, 1, 0, 1, 1, 0, 0]
    b = [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    # discordant n = 6, k = min(5, 1) = 1: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64
    assert demo.mcnemar_exact(a, b) == {"only_a": 5, "only_b": 1, "p": pytest.approx(14 / 64)}
    assert demo.mcnemar_exact(b, a) == {"only_a": 1, "only_b": 5, "p": pytest.approx(14 / 64)}
    assert demo.mcnemar_exact([1] * 6 + [0], [0] * 7)["p"] == pytest.approx(2 / 64)  # 6 vs 0: 2 * 1 / 2^6
    assert demo.mcnemar_exact([1, 0], [1, 0])["p"] == 1.0  # no discordant pair
    assert demo.mcnemar_exact([1, 0], [0, 1])["p"] == 1.0  # 1 vs 1: 2 * (1 + 2) / 4 capped at 1


def test_paired_bootstrap_against_a_hand_computation() -> None:
    # two tasks with differences (1, 0): resample means 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5th and 97.5th percentiles are 0 and 1
    assert demo.paired_bootstrap(np.array([1, 0])) == (0.0, 1.0)
    assert demo.paired_bootstrap(np.array([1, 1, 1])) == (1.0, 1.0)  # no spread, no width
    # seeds share the tasks: [seeds, tasks] is resampled by task, i.e. as the per-task mean over seeds
    assert demo.paired_bootstrap(np.array([[1, 0], [1, 0]])) == (0.0, 1.0)
    # 20 tasks, 4 gained: the mean 0.2; the interval holds it and is about +-1.96 * sqrt(0.16 / 20)
    low, high = demo.paired_bootstrap(np.array([1] * 4 + [0] * 16))
    assert low < 0.2 < high and abs((high - low) / 2 - 1.96 * math.sqrt(0.16 / 20)) < 0.05


def test_paired_comparison_pools_seeds() -> None:
    sft = np.array([1, 0, 0, 1, 0])
    ppo = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 0, 0]])  # seed 1: +1 task; seed 2: +2, -1
    c = demo.paired_comparison(ppo, np.stack([sft, sft]))
    assert (c["pairs"], c["a_successes"], c["b_successes"], c["only_a"], c["only_b"]) == (10, 6, 4, 3, 1)
    assert c["p"] == pytest.approx(2 * (1 + 4) / 16) and c["diff"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------ the tables from made-up runs
def _eval_json(path: Path, settings: dict[str, list[int]]) -> None:
    rows = []
    for variant, (key, _) in demo.SETTINGS.items():
        ok = settings[key]
        results = [{"task_id": f"t{i}", "success": bool(v)} for i, v in enumerate(ok)]
        rows.append({"variant": variant, "sources": {demo.TEST_SOURCE: {"results": results}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows}))


def test_summary_tables_are_computed_from_the_per_task_outcomes(tmp_path: Path) -> None:
    preset = {**demo.PRESETS["cpu-tiny"], "ppo_variants": ["rule"], "seeds": [1, 2]}
    sft = [1, 0, 0, 1, 0, 0]
    _eval_json(tmp_path / "eval" / "sft.json", {"bare": sft, "cmat": sft, "cmat-no-memory": sft})
    s1, s2 = [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]
    _eval_json(tmp_path / "eval" / "ppo-rule-s1.json", {"bare": s1, "cmat": s1, "cmat-no-memory": [0] * 6})
    _eval_json(tmp_path / "eval" / "ppo-rule-s2.json", {"bare": s2, "cmat": s2, "cmat-no-memory": s2})
    (tmp_path / "ppo-rule-s1").mkdir()
    (tmp_path / "ppo-rule-s1" / "metrics.jsonl").write_text(  # updates that never moved the policy
        '{"approx_kl": 0.0, "clipfrac": 0.0, "kl_to_ref": 0.0, "explained_variance": null, "policy_update": 1}\n' * 2)
    (tmp_path / "ppo-rule-s2").mkdir()
    (tmp_path / "ppo-rule-s2" / "metrics.jsonl").write_text(
        '{"approx_kl": 0.01, "clipfrac": 0.1, "kl_to_ref": 0.002, "explained_variance": 0.3, "policy_update": 1}\n')
    summary = demo.summarize(tmp_path, preset)
    bare = {c["seed"]: c for c in summary["paired_vs_sft"] if c["setting"] == "bare"}
    # seed 1: PPO alone solves tasks 1, 2 -> 2 vs 0, p = 2 / 4 = 0.5, +33.3 points
    assert (bare["1"]["only_a"], bare["1"]["only_b"], bare["1"]["p"]) == (2, 0, 0.5)
    assert bare["1"]["diff"] == pytest.approx(2 / 6)
    # seed 2: task 1 gained, task 3 lost -> 1 vs 1, p = 1, +0 points
    assert (bare["2"]["only_a"], bare["2"]["only_b"], bare["2"]["p"], bare["2"]["diff"]) == (1, 1, 1.0, 0.0)
    # pooled over the 12 (seed, task) pairs: 3 vs 1, p = 2 * (1 + 4) / 16
    assert (bare["pooled"]["only_a"], bare["pooled"]["only_b"]) == (3, 1)
    assert bare["pooled"]["p"] == pytest.approx(10 / 16) and bare["pooled"]["diff"] == pytest.approx(2 / 12)
    memory = {c["kind"]: c for c in summary["memory_ablation"]}
    assert (memory["ppo-rule"]["only_a"], memory["ppo-rule"]["only_b"]) == (4, 0)  # seed 1 without memory: 0/6
    rows = {r["kind"]: r for r in summary["rows"]}
    assert rows["ppo-rule"]["cells"]["bare"]["per_seed"] == {"1": "4/6", "2": "2/6"}
    assert "zero-shot" in rows and rows["zero-shot"]["cells"] == {}
    assert summary["diagnostics"]["ppo-rule-s1"]["moved"] is False
    assert summary["diagnostics"]["ppo-rule-s2"]["moved"] is True
    text = demo.format_summary(summary)
    assert "| SFT+PPO, rule-checker reward | bare DB-v0 | 1 | 4 | 2 | 2 | 0 | 0.5 | +33.3 |" in text
    assert "| SFT+PPO, rule-checker reward | 6/12 (0.500) (s1 4/6, s2 2/6) |" in text
    assert "| zero-shot | not run | not run | not run |" in text
    assert "**These runs did not move the policy: ppo-rule-s1.**" in text


def test_a_run_without_any_policy_update_is_named() -> None:
    lines = '{"approx_kl": 0.0, "clipfrac": 0.0, "kl_to_ref": 0.0, "explained_variance": null, "policy_update": 0}\n'
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "metrics.jsonl"
        path.write_text(lines)
        diag = demo.diagnostics(path)
    assert diag["moved"] is False and "no policy update" in diag["why"]


# ------------------------------------------------------------------------------ the whole pipeline
def test_cpu_tiny_preset_end_to_end(tmp_path: Path) -> None:
    """Every stage for real with the tiny random model (SFT, learned checker, 2 seeds x 3 PPO ablations,
    11 evaluations in three settings), then the tables; a rerun finds everything done."""
    out = tmp_path / "demo"
    cmd = [sys.executable, str(SCRIPT), "--preset", "cpu-tiny", "--output-dir", str(out)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    graph = demo.stage_graph(demo.PRESETS["cpu-tiny"])
    assert len((out / "commands.sh").read_text().splitlines()) == len(graph)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["test_tasks"]) == 4
    # the paired cells are the per-task outcomes of the evaluation JSONs, recomputed here
    sft = demo.read_eval(out / "eval" / "sft.json")
    for c in summary["paired_vs_sft"]:
        if c["seed"] == "pooled":
            continue
        ppo = demo.read_eval(out / "eval" / f"{c['kind']}-s{c['seed']}.json")
        a = [r["success"] for r in ppo[c["setting"]][demo.TEST_SOURCE]["results"]]
        b = [r["success"] for r in sft[c["setting"]][demo.TEST_SOURCE]["results"]]
        assert (c["a_successes"], c["b_successes"]) == (sum(a), sum(b))
        assert {k: c[k] for k in ("only_a", "only_b", "p")} == demo.mcnemar_exact(a, b)
    kinds = {(c["kind"], c["setting"], c["seed"]) for c in summary["paired_vs_sft"]}
    assert kinds == {(f"ppo-{v}", s, seed) for v in ("none", "rule", "learned")
                     for s in ("bare", "cmat", "cmat-no-memory") for seed in ("1", "2", "pooled")}
    assert set(summary["diagnostics"]) == {r for r, _, _ in demo.rl_runs(demo.PRESETS["cpu-tiny"])}
    text = (out / "summary.md").read_text()
    assert "| agent | setting | seed | A | B | only A | only B | McNemar p | A - B (pts) | bootstrap 95% |" in text
    assert "moved the policy?" in text
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # nothing left to do
    assert again.returncode == 0 and again.stdout.count("already done") == len(graph)
