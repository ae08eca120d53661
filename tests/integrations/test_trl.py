"""cmat_gym.integrations.trl: a cmat-gym env as TRL's GRPOTrainer(environment_factory=...)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import pytest

from cmat_gym.core.domain import get_domain, registered_domains
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.integrations.trl import OVER, ToolEnvironment, dataset_rows, environment_factory

transformers = pytest.importorskip("transformers")
from transformers.utils import get_json_schema  # noqa: E402


def tool_methods(cls: type) -> list[str]:
    """The methods TRL turns into tools: public functions of the class but reset and get_reward."""
    return sorted(name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
                  if name not in ("reset", "get_reward") and not name.startswith("_"))


@pytest.mark.parametrize("domain", [d for d in registered_domains()], ids=lambda d: d.title)
def test_one_method_per_tool_with_the_grammar_schema(domain: Any) -> None:
    cls = environment_factory(domain.env_id)
    assert issubclass(cls, ToolEnvironment) and cls.__name__ == f"{domain.title}ToolEnvironment"
    assert tool_methods(cls) == sorted(t.name for t in domain.grammar.tools)
    for tool in domain.grammar.tools:
        schema = get_json_schema(getattr(cls, tool.name))["function"]  # what TRL renders into the prompt
        expected = tool.schema()["function"]
        assert schema["name"] == expected["name"]
        assert schema["parameters"].get("required", []) == expected["parameters"]["required"]
        for name, prop in expected["parameters"]["properties"].items():
            assert schema["parameters"]["properties"][name]["type"] == prop["type"]
            assert schema["parameters"]["properties"][name]["description"] == prop["description"]


def test_the_oracle_solves_a_task_through_the_methods() -> None:
    env = environment_factory("cmat/DB-v0", split="test")()
    observation = env.reset(seed=5)
    task = env.env.unwrapped.task
    assert task.instruction in observation and env.task_id == task.task_id
    grammar = get_domain("db").grammar
    for action in DBEnv.oracle_actions(task):
        parsed = grammar.parse(action)
        result = getattr(env, parsed.tool)(**parsed.args)
        assert isinstance(result, str)
    assert env.done and env.get_reward() == 1.0
    assert env.execute_sql(sql="SELECT 1") == OVER  # after the end, every call says so


def test_bad_calls_are_observations_and_positional_arguments_work() -> None:
    env = environment_factory("cmat/DB-v0")()
    env.reset()
    assert "needs the argument 'sql'" in env.execute_sql(query="SELECT 1")
    assert "needs the argument 'sql'" in env.execute_sql()
    assert "Error" in env.execute_sql("SELEC nonsense")
    assert "1" in env.execute_sql("SELECT 1")
    assert not env.done and env.get_reward() == 0.0


def test_rows_pick_the_task_and_resets_without_one_are_reproducible() -> None:
    cls = environment_factory("cmat/DB-v0", tasks="agentbench:dbbench/dev")
    env = cls()
    env.reset(task_index=7)
    assert env.task_id == "dbbench/dev.jsonl/7"
    first, second = environment_factory("cmat/DB-v0", seed=11)(), environment_factory("cmat/DB-v0", seed=11)()
    assert [first.reset() for _ in range(2)] == [second.reset() for _ in range(2)]
    rows = dataset_rows("cmat/DB-v0", 3, seed=4)
    assert [r["seed"] for r in rows] == [4, 5, 6] and "commit_final_answer" in rows[0]["prompt"][0]["content"]


@pytest.mark.slow  # ~30 s on a busy 2-core machine (TRL import, trainer set-up, generation, one step)
def test_a_grpo_step_with_the_environment_factory(tmp_path: Any) -> None:
    """One real GRPOTrainer step on tiny-random with our environment: TRL builds the env, resets it with
    the dataset row, exposes its tools, scores the rollouts with get_reward, and takes an optimizer step."""
    trl = pytest.importorskip("trl")
    pytest.importorskip("datasets")
    if not hasattr(trl.GRPOTrainer.__init__, "__code__") or "environment_factory" not in inspect.signature(
            trl.GRPOTrainer.__init__).parameters:
        pytest.skip("this TRL has no environment_factory")
    import torch
    from datasets import Dataset

    from cmat_gym.agents.models import load_model
    from cmat_gym.integrations.trl import chatml_tool_template

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.manual_seed(0)
    model, tokenizer = load_model("tiny-random")
    model.train()
    chatml_tool_template(tokenizer)
    args = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=2,
                          num_generations=2, max_completion_length=8, max_steps=1, report_to=[], logging_steps=1,
                          save_strategy="no", max_tool_calling_iterations=2)
    trainer = trl.GRPOTrainer(model=model, processing_class=tokenizer, args=args,
                              train_dataset=Dataset.from_list(dataset_rows("cmat/DB-v0", 2, seed=3)),
                              environment_factory=environment_factory("cmat/DB-v0", max_rounds=3))
    assert sorted(t.__name__ for t in trainer.tools) == ["commit_final_answer", "execute_sql"]
    trainer.train()
    assert trainer.state.global_step == 1
    logged = trainer.state.log_history[0]
    assert "rewards/DBToolEnvironment/mean" in logged  # get_reward scored the rollouts
    envs = trainer.environments
    assert len(envs) == 2 and all(e.task_id.startswith("db/") for e in envs)
    # The dispatch table TRL calls the model's tool calls through reaches the real env.
    assert "| 1 |" in trainer._sync_tool_dicts[0]["execute_sql"](sql="SELECT 1")
