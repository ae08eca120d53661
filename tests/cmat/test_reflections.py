"""What a reflection may hold and who may see it: the single-trial protocol (a task is never served its
own reflections), grader feedback kept from the writer, and the LM self-reflection writer."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.cmat.memory import ReflectionStore, template_reflection
from cmat_gym.cmat.pettingzoo_env import raw_env
from cmat_gym.cmat.wrapper import CMATEnv, make_cmat
from cmat_gym.core.actions import ParsedAction
from cmat_gym.core.task import Task
from cmat_gym.domains.db.env import DBEnv

SECRET = "GOLD-SECRET-5b1e"
WRONG = 'Action: Answer\nFinal Answer: ["certainly not the answer"]'


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def play(env: CMATEnv, actions: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return info


def echo_writer(instruction: str, dialogue: list[dict]) -> str:
    """A writer that copies everything it is given into the reflection (the worst case)."""
    return json.dumps({"instruction": instruction, "dialogue": dialogue})


# ---------------------------------------------------------------------------- single-trial protocol
def test_a_task_is_never_served_its_own_reflection() -> None:
    """A value the Assistant produced (here in an error message) must not come back on a retry of the task."""
    store = ReflectionStore(None)
    env = make_cmat("cmat/DB-v0", memory=store)
    env.reset(options={"task_index": 3})
    first_task = env.task
    info = play(env, [op("SELECT computed_value_4242 FROM nowhere"), WRONG])
    assert info["episode_metrics"]["reflection_written"] and "computed_value_4242" in store.all()[0].text
    again, info = env.reset(options={"task_index": 3})
    assert env.task.task_id == first_task.task_id
    assert info["reflections_used"] == 0
    assert "computed_value_4242" not in again and "Lessons from earlier attempts" not in again
    env.close()


def test_other_tasks_still_get_the_reflection() -> None:
    store = ReflectionStore(None)
    task = DBEnv.generate_task(3, "train", 1)
    for task_id in (task.task_id, "db/train/d1/other"):
        store.add(split="train", domain="db", task_id=task_id, task_text=task.instruction,
                  text=f"Lesson written on {task_id}.")
    env = make_cmat("cmat/DB-v0", memory=store)
    first, info = env.reset(options={"task": task})
    assert info["reflections_used"] == 1
    assert "Lesson written on db/train/d1/other" in first and f"Lesson written on {task.task_id}" not in first
    env.close()


def test_the_pettingzoo_loop_filters_too() -> None:
    store = ReflectionStore(None)
    task = DBEnv.generate_task(3, "train", 1)
    store.add(split="train", domain="db", task_id=task.task_id, task_text=task.instruction, text="own lesson")
    aec = raw_env("cmat/DB-v0", memory=store)
    aec.reset(options={"task": task})
    assert aec.reflections == []
    aec.close()


# ---------------------------------------------------------------------------- nothing the grader knows
class LeakyDBEnv(DBEnv):
    """A DB env whose final-answer observation quotes the gold answer (grader feedback a domain might give)."""

    def _finish_answer(self, action: str, parsed: ParsedAction) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = super()._finish_answer(action, parsed)
        leak = f"{observation} Expected {self.task.payload['label']} ({self.task.payload['secret']})."
        self.trajectory[-1]["content"] = leak
        return leak, reward, terminated, truncated, info


def secret_task() -> Task:
    task = DBEnv.generate_task(3, "train", 1)
    assert SECRET not in task.instruction + task.context
    return dataclasses.replace(task, payload={**task.payload, "label": [SECRET], "secret": SECRET})


@pytest.mark.parametrize("writer", [echo_writer, None], ids=["echo", "template"])
def test_grader_feedback_never_reaches_a_reflection(writer: Any) -> None:
    store = ReflectionStore(None)
    env = make_cmat(LeakyDBEnv(), memory=store, reflection_writer=writer)
    env.reset(options={"task": secret_task()})
    final = play(env, [op("SELECT * FROM nowhere"), WRONG])
    assert final["episode_metrics"]["reflection_written"]
    [reflection] = store.all()
    assert SECRET not in reflection.text
    for key, value in final["evaluation"].items():  # what the grader reported (besides the answer itself)
        if key != "answer":
            assert str(value) not in reflection.text
    assert "Score:" not in reflection.text and "hindsight" not in reflection.text
    assert SECRET not in json.dumps(final.get("reflection"))
    if writer is echo_writer:  # the writer still learns that the answer was wrong
        assert "Final answer received (incorrect)" in reflection.text
    env.close()


def test_the_leaky_env_does_leak_to_the_assistant() -> None:
    """The test above is meaningful: the domain's observation does quote the secret."""
    env = make_cmat(LeakyDBEnv(), memory=None)
    env.reset(options={"task": secret_task()})
    obs, *_ = env.step(WRONG)
    assert SECRET in obs
    env.close()


# ---------------------------------------------------------------------------- the LM self-reflection writer
class FakeLM:
    """An LMPolicy stand-in that records its prompts and replies with a fixed text."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[list[dict[str, str]]] = []

    def act_messages(self, conversations: list[list[dict[str, str]]], **overrides: Any) -> list[str]:
        self.prompts.extend([list(c) for c in conversations])
        return [self.reply for _ in conversations]


def failed_dialogue() -> tuple[str, list[dict[str, str]]]:
    instruction = "How many employees work in sales?"
    return instruction, [
        {"role": "user", "content": f"{instruction}\n\nTable employees(id, name, dept)"},
        {"role": "assistant", "content": op("SELECT count(*) FROM staff")},
        {"role": "env", "content": "Error: no such table: staff"},
        {"role": "assistant", "content": WRONG},
        {"role": "env", "content": "Final answer received (incorrect)."},
    ]


def test_lm_writer_prompts_the_model_with_the_attempt_and_uses_its_reply() -> None:
    from cmat_gym.agents.chat_agent import LMReflectionWriter

    lm = FakeLM("I queried a table that does not exist. Next time I will list the tables first.")
    writer = LMReflectionWriter(lm)
    instruction, dialogue = failed_dialogue()
    text = writer(instruction, dialogue)
    assert "list the tables first" in text and instruction in text
    [prompt] = lm.prompts
    content = "\n".join(m["content"] for m in prompt)
    assert "Here is your failed attempt" in content and "no such table: staff" in content
    assert "2-3 sentences" in content and "do not state the answer" in content.lower()


@pytest.mark.parametrize("reply", ["", "   \n ", "<|im_end|>", "Action: Operation\n```sql\nSELECT 1\n```", "ok"])
def test_lm_writer_falls_back_to_the_template(reply: str) -> None:
    from cmat_gym.agents.chat_agent import LMReflectionWriter

    instruction, dialogue = failed_dialogue()
    assert LMReflectionWriter(FakeLM(reply))(instruction, dialogue) == template_reflection(instruction, dialogue)


def test_make_cmat_selects_the_reflection_writer() -> None:
    from cmat_gym.agents.chat_agent import LMReflectionWriter

    lm = FakeLM("I used the wrong table name. I should check the schema before querying.")
    store = ReflectionStore(None)
    env = make_cmat(LeakyDBEnv(), memory=store, reflection_writer="lm", reflection_policy=lm)
    assert isinstance(env.loop.reflection_writer, LMReflectionWriter)
    env.reset(options={"task": secret_task()})
    play(env, [op("SELECT * FROM nowhere"), WRONG])
    [reflection] = store.all()
    assert "check the schema" in reflection.text
    assert all(SECRET not in m["content"] for prompt in lm.prompts for m in prompt)
    env.close()
    assert make_cmat("cmat/DB-v0", reflection_writer="template").loop.reflection_writer is template_reflection
    with pytest.raises(ValueError, match="reflection_policy"):
        make_cmat("cmat/DB-v0", reflection_writer="lm")
    with pytest.raises(ValueError, match="template"):
        make_cmat("cmat/DB-v0", reflection_writer="bogus")


def test_lm_writer_with_the_tiny_random_model() -> None:
    from cmat_gym.agents.chat_agent import LMReflectionWriter
    from cmat_gym.agents.policies import make_policy

    try:
        agent = make_policy("tiny-random", device="cpu", max_new_tokens=6, domain="db")
    except (OSError, FileNotFoundError) as exc:  # pragma: no cover - needs SmolLM2's tokenizer
        pytest.skip(f"tiny-random needs SmolLM2's tokenizer: {exc}")
    writer = LMReflectionWriter(agent, max_new_tokens=12)
    instruction, dialogue = failed_dialogue()
    text = writer(instruction, dialogue)
    assert isinstance(text, str) and text.strip()
    assert agent.histories == {}  # the writer does not touch the agent's conversations
    store = ReflectionStore(None)
    env = make_cmat("cmat/DB-v0", memory=store, reflection_writer="lm", reflection_policy=agent)
    env.reset(options={"task_index": 3})
    play(env, [op("SELECT * FROM nowhere"), WRONG])
    assert len(store) == 1 and store.all()[0].text.strip()
    env.close()
