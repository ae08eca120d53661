"""benchmarks/train_demo.py: the issue-5 demonstration pipeline (SFT, PPO x2, GRPO, five evaluations)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from algorithms import grpo_train, ppo_train, sft_train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_demo.py"
spec = importlib.util.spec_from_file_location("train_demo", SCRIPT)
demo = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = demo
spec.loader.exec_module(demo)

PARSERS = {"algorithms.sft_train": sft_train.parse_args, "algorithms.ppo_train": ppo_train.parse_args,
           "algorithms.grpo_train": grpo_train.parse_args}


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"model": "smollm2-135m-instruct", "seed": 1, "checker_weight": 0.1,
                                 "threads": None, **kw})


@pytest.mark.parametrize("preset", sorted(demo.PRESETS))
def test_every_stage_command_is_accepted_by_its_script(preset: str, tmp_path: Path) -> None:
    """A typo in a preset's flags would only show hours into a run: parse each command up front."""
    table_spec = importlib.util.spec_from_file_location("agentbench_table", ROOT / "benchmarks" / "agentbench_table.py")
    for stage in demo.STAGES:
        cmd = demo.stage_command(stage, tmp_path, demo.PRESETS[preset], _args())
        if cmd[1] == "-m":
            parsed = PARSERS[cmd[2]](cmd[3:])
            assert parsed.model == "smollm2-135m-instruct" and parsed.seed == 1
            if "ppo" in stage or "grpo" in stage:
                assert parsed.init_adapter == str(tmp_path / "sft" / "adapter")
                assert parsed.checker == "rule"
                assert parsed.checker_weight == (0.0 if stage == "ppo-no-checker" else 0.1)
        else:
            assert cmd[1] == table_spec.origin
            assert cmd[cmd.index("--policy") + 1] == "smollm2"
            agent = stage.removeprefix("eval-")
            assert ("--adapter" in cmd) == (agent != "zero-shot")
            assert cmd[cmd.index("--json") + 1] == str(tmp_path / "eval" / f"{agent}.json")
    # every agent is scored on the same tasks: the evaluation flags do not depend on the stage
    evals = {tuple(a for a in demo.stage_command(s, tmp_path, demo.PRESETS[preset], _args())
                   if "adapter" not in a and "eval" not in a and not a.endswith(".json"))
             for s in demo.STAGES if s.startswith("eval-")}
    assert len(evals) == 1


def test_resumes_an_interrupted_ppo_run(tmp_path: Path) -> None:
    cmd = demo.stage_command("ppo-checker", tmp_path, demo.PRESETS["cpu"], _args())
    assert "--resume" not in cmd
    (tmp_path / "ppo-checker" / "checkpoint").mkdir(parents=True)
    (tmp_path / "ppo-checker" / "checkpoint" / "latest").write_text("iter-000001")
    assert "--resume" in demo.stage_command("ppo-checker", tmp_path, demo.PRESETS["cpu"], _args())


def test_a_training_stage_is_done_only_when_its_process_finished(tmp_path: Path) -> None:
    (tmp_path / "ppo-checker" / "adapter").mkdir(parents=True)  # PPO saves one at every checkpoint
    (tmp_path / "ppo-checker" / "adapter" / "adapter_config.json").write_text("{}")
    assert not demo.stage_done("ppo-checker", tmp_path)
    (tmp_path / "ppo-checker" / demo.DONE_MARK).write_text("{}")
    assert demo.stage_done("ppo-checker", tmp_path)
    assert not demo.stage_done("eval-ppo-checker", tmp_path)


def _eval_json(path: Path, test: tuple[int, int], dbbench: tuple[int, int]) -> None:
    def cell(s: int, n: int) -> dict:
        return {"episodes": n, "successes": s, "success_rate": s / n, "ci95": [0.0, 1.0], "mean_steps": 2.0,
                "format_error_rate": 0.1, "wall_s": 1.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"sources": {"DB-v0 test": cell(*test), "dbbench dev": {**cell(*dbbench), "db_headline": {"headline": 0.25}}},
           "overall": {"format_error_rate": 0.1}}
    path.write_text(json.dumps({"rows": [row]}))


def test_summary_reports_the_gain_and_what_did_not_run(tmp_path: Path) -> None:
    _eval_json(tmp_path / "eval" / "sft.json", (2, 10), (1, 4))
    _eval_json(tmp_path / "eval" / "ppo-checker.json", (3, 10), (1, 4))
    (tmp_path / "ppo-checker").mkdir()
    (tmp_path / "ppo-checker" / "metrics.jsonl").write_text('{"success_rate": 0.25}\n{"success_rate": 0.5}\n')
    summary = demo.summarize(tmp_path)
    assert summary["ppo_gain_over_sft_test"] == pytest.approx(0.1)
    text = demo.format_summary(summary)
    assert "| SFT+PPO, checker | 0.300 (3/10)" in text and "0.25 0.50 |" in text
    assert "| zero-shot | not run | not run |" in text
    assert "+10.0 points (target >= +10: met)" in text
    demo.plot_curves(tmp_path / "curves.png", summary)
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_whole_pipeline_with_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, str(SCRIPT), "--preset", "smoke", "--model", "tiny-random", "--output-dir", str(out)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(r["evaluated"] for r in summary["rows"])
    assert summary["rows"][0]["DB-v0 test"]["episodes"] == 2 and summary["rows"][0]["dbbench dev"]["episodes"] == 3
    for run in ("ppo-checker", "ppo-no-checker", "grpo"):
        assert (out / run / "adapter" / "adapter_config.json").is_file()
    assert len((out / "commands.sh").read_text().splitlines()) == len(demo.STAGES)
    assert (out / "curves.png").stat().st_size > 1000
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # nothing left to do
    assert again.returncode == 0 and again.stdout.count("already done") == len(demo.STAGES)
