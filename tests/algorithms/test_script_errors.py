"""Bad flags of the training scripts: one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CASES = [
    ("algorithms.ppo_train", ["--checker", "bogus"], "--checker"),
    ("algorithms.ppo_train", ["--model", "no-such-model"], "--model"),
    ("algorithms.ppo_train", ["--env", "cmat/Nope-v0"], "--env"),
    ("algorithms.ppo_train", ["--iterations", "-1"], "--iterations"),
    ("algorithms.sft_train", ["--checker", "bogus"], "--checker"),
    ("algorithms.sft_train", ["--model", "no-such-model"], "--model"),
    ("algorithms.sft_train", ["--env", "cmat/Nope-v0"], "--env"),
    ("algorithms.sft_train", ["--episodes", "-3"], "--episodes"),
    ("algorithms.grpo_train", ["--checker", "bogus"], "--checker"),
    ("algorithms.grpo_train", ["--model", "no-such-model"], "--model"),
    ("algorithms.grpo_train", ["--env", "cmat/Nope-v0"], "--env"),
    ("algorithms.grpo_train", ["--iterations", "-2"], "--iterations"),
    ("algorithms.sb3_baseline", ["--total-timesteps", "-5"], "--total-timesteps"),
]

# More bad flags, checked in-process (the subprocess path above is the same for all of them).
MORE = [
    ("algorithms.ppo_train", ["--episodes-per-iteration", "0"], "--episodes-per-iteration"),
    ("algorithms.ppo_train", ["--peft", "bogus"], "--peft"),
    ("algorithms.ppo_train", ["--difficulty", "4"], "--difficulty"),
    ("algorithms.sft_train", ["--split", "test"], "--split"),
    ("algorithms.sft_train", ["--recovery-fraction", "1.5"], "--recovery-fraction"),
    ("algorithms.grpo_train", ["--episodes-per-iteration", "6", "--num-generations", "4"], "--num-generations"),
    ("algorithms.grpo_train", ["--checker", "llm"], "--checker"),
    ("algorithms.sb3_baseline", ["--n-envs", "0"], "--n-envs"),
    ("algorithms.sb3_baseline", ["--difficulty", "7"], "--difficulty"),
]


@pytest.mark.parametrize(("module", "argv", "flag"), CASES, ids=[f"{m.split('.')[1]}{a}" for m, a, _ in CASES])
def test_bad_flags_are_one_line_and_exit_2(module: str, argv: list[str], flag: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", module, *argv, "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"python -m {module}: error: ") and flag in lines[0]
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize(("module", "argv", "flag"), MORE, ids=[f"{m.split('.')[1]}{a}" for m, a, _ in MORE])
def test_more_bad_flags_raise_script_error(module: str, argv: list[str], flag: str) -> None:
    import importlib

    from algorithms.common.script import ScriptError

    script = importlib.import_module(module)
    with pytest.raises(ScriptError, match=flag):
        script.check_args(argv)


@pytest.mark.parametrize("module", ["algorithms.ppo_train", "algorithms.sft_train", "algorithms.grpo_train",
                                    "algorithms.sb3_baseline"])
def test_defaults_pass_the_checks(module: str) -> None:
    import importlib

    script = importlib.import_module(module)
    assert script.check_args([]) == script.parse_args([])


def test_helpers() -> None:
    from algorithms.common.script import ScriptError, check_env_id, check_model, fail

    check_env_id("cmat/DB-v0")
    check_model("tiny-random")
    check_model("smollm2")
    check_model(str(REPO_ROOT))  # any local folder (from_pretrained decides whether it holds a model)
    with pytest.raises(ScriptError, match="registered"):
        check_env_id("cmat/Nope-v0")
    with pytest.raises(ScriptError, match="domain env id"):
        check_env_id("cmat/DB-CMAT-v0")  # the trainers wrap the bare env in the loop themselves
    check_env_id("cmat/DB-CMAT-v0", domain_env=False)
    with pytest.raises(ScriptError, match="tiny-random"):
        check_model("no-such-model")
    with pytest.raises(SystemExit) as exit_info:
        fail("prog", "bad things")
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "module", ["algorithms.ppo_train", "algorithms.sft_train", "algorithms.grpo_train", "algorithms.checker_train"]
)
def test_help_states_every_flags_default(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` alone says what a bare command runs: each flag's help ends with its default."""
    import dataclasses
    import importlib

    script = importlib.import_module(module)
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    fields = dataclasses.fields(script.Args)
    assert text.count("(default: ") >= len(fields)  # a field doc may mention a default itself
    for field in fields:
        assert f"(default: {field.default})" in text, field.name
