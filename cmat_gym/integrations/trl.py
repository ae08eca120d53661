"""A cmat-gym environment as TRL's ``GRPOTrainer(environment_factory=...)``.

    from trl import GRPOConfig, GRPOTrainer
    from cmat_gym.integrations.trl import environment_factory

    trainer = GRPOTrainer(model=..., args=GRPOConfig(...), train_dataset=dataset,
                          environment_factory=environment_factory("cmat/DB-v0"))

TRL's contract (``trl/trainer/grpo_trainer.py``, TRL 1.16): the factory is called with no argument and
returns an environment object; each public method of its class other than ``reset`` and
``get_reward`` is a tool, whose JSON schema TRL reads from the method's type hints and its Google-style
docstring (``Args:``); ``reset(**row)`` gets the dataset row and returns text appended to the last user
message (here: the task's first observation); ``get_reward()`` scores the finished rollout (here: the
episode's reward, 1.0 for a solved task). TRL pools instances and resets them between rollouts.

:func:`environment_factory` builds that class from the domain's tool declarations (the
:class:`~cmat_gym.core.actions.Grammar`), one method per tool, so a domain gets it with no extra code.
A method call becomes the JSON action ``{"name": tool, "arguments": {...}}`` stepped in the real env,
which parses and validates it like any other action: a bad call is an error observation, never an
exception. After the episode ends (an answer tool, or the step limit) every call says so.

A dataset row may pick the task: ``seed`` (a procedural task's seed), ``task_index`` or ``task_id``
(a task file's task, with ``tasks=...`` among the env kwargs); without them each reset draws the next
seed of a per-instance counter, so runs are reproducible.
"""

from __future__ import annotations

import inspect
import itertools
import json
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym

from cmat_gym.core.actions import ANSWER, Tool
from cmat_gym.core.domain import domain_of_env

# The Python type of each tool argument type, for TRL's schema (transformers' get_json_schema).
PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list[str]}
RESERVED = ("reset", "get_reward")
OVER = "The episode is over: no more actions are taken. Stop calling tools."


class ToolEnvironment:
    """One episode at a time of a cmat-gym env, driven through tool methods (see the module docstring).

    Subclasses made by :func:`environment_factory` set ``env_id`` and ``env_kwargs`` and add one method
    per tool; instances are built with no argument, as TRL builds them.

    Attributes:
        env: the Gymnasium env (``gym.make(env_id, **env_kwargs)``).
        reward: the episode's reward so far; done: whether the episode has ended; task_id: its task.
    """

    env_id: ClassVar[str] = ""
    env_kwargs: ClassVar[dict[str, Any]] = {}
    seed_base: ClassVar[int] = 0

    def __init__(self) -> None:
        self.env = gym.make(self.env_id, **self.env_kwargs)
        # Release the backend (sandbox, database) when TRL drops the instance: public methods would be tools.
        self._finalizer = weakref.finalize(self, self.env.close)
        self._seeds = itertools.count(self.seed_base)
        self.reward, self.done, self.task_id = 0.0, True, ""

    def reset(self, **row: Any) -> str:
        """Start the episode the dataset row names (``seed``, ``task_index`` or ``task_id``) and return
        its first observation."""
        options = {key: row[key] for key in ("task_index", "task_id") if row.get(key) is not None}
        seed = row.get("seed")
        if seed is None and not options:
            seed = next(self._seeds)
        observation, info = self.env.reset(seed=seed, options=options or None)
        self.reward, self.done, self.task_id = 0.0, False, str(info.get("task_id", ""))
        return observation

    def get_reward(self) -> float:
        """The episode's reward (its sum over the steps; the final score for cmat-gym's envs)."""
        return float(self.reward)

    def _act(self, tool: str, arguments: dict[str, Any]) -> str:
        if self.done:
            return OVER
        action = json.dumps({"name": tool, "arguments": arguments}, default=str)
        observation, reward, terminated, truncated, _ = self.env.step(action)
        self.reward += float(reward)
        self.done = bool(terminated or truncated)
        return observation


def environment_factory(env_id: str = "cmat/DB-v0", *, seed: int = 0, **env_kwargs: Any) -> type[ToolEnvironment]:
    """The environment class for ``GRPOTrainer(environment_factory=...)`` over ``env_id``.

    Args:
        env_id: a registered cmat-gym env (``cmat/DB-v0``, ``cmat/OS-v0``, ...; see ``cmat-gym list``).
        seed: the first procedural seed a reset without a task in its row plays (then seed + 1, ...).
        **env_kwargs: for ``gym.make`` (``tasks="agentbench:dbbench/dev"``, ``split="train"``, ``max_rounds``...).

    Raises:
        ValueError: for a domain with a tool named like TRL's reserved methods (``reset``, ``get_reward``).
    """
    domain = domain_of_env(env_id)
    methods: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs), "seed_base": seed,
                               "__doc__": f"{domain.title} tasks ({env_id}) for TRL; tools: "
                                          f"{', '.join(t.name for t in domain.grammar.tools)}."}
    for tool in domain.grammar.tools:
        if tool.name in RESERVED or tool.name.startswith("_") or not tool.name.isidentifier():
            raise ValueError(f"Expects tool names usable as TRL tool methods, actual {tool.name!r}")
        methods[tool.name] = tool_method(tool)
    return type(f"{domain.title}ToolEnvironment", (ToolEnvironment,), methods)


def system_prompt(env_id: str) -> str:
    """A system message for tool-calling rollouts of ``env_id``: the role, and how an episode ends."""
    grammar = domain_of_env(env_id).grammar
    answers = " or ".join(t.name for t in grammar.tools if t.kind == ANSWER)
    return ("You are the Assistant. You solve the user's task by calling the tools, one call per reply; you see "
            f"the result of each call before the next. When you are done, call {answers}: it ends the task.")


def dataset_rows(env_id: str, episodes: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``episodes`` rows for a ``datasets.Dataset``: a conversational prompt (the system message of
    :func:`system_prompt` and a short user turn the task's observation is appended to) and the ``seed`` of
    the procedural task each row plays (``seed``, ``seed + 1``, ...)."""
    system = system_prompt(env_id)
    return [{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": "Your task:\n\n"}],
             "seed": seed + i} for i in range(episodes)]


def chatml_tool_template(tokenizer: Any) -> Any:
    """Let a ChatML tokenizer without tool support (SmolLM2's) render and parse tool calls, in place.

    SmolLM2 speaks ChatML (``<|im_start|>``/``<|im_end|>``) but its template drops ``tools`` and
    ``tool_calls``, which TRL refuses. This sets TRL's bundled Qwen2.5 ChatML template (the same markup,
    tool calls as ``<tool_call>{json}</tool_call>``) and its response parser. That template adds a
    default system message naming Qwen when a conversation has none: prompts should bring their own
    (:func:`dataset_rows` does). A tokenizer whose template already supports tool calling is left as is.

    Raises:
        ValueError: for a tokenizer that is not ChatML.
    """
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template, supports_tool_calling

    if supports_tool_calling(tokenizer):
        return tokenizer
    if "<|im_start|>" not in tokenizer.get_vocab():
        raise ValueError("Expects a ChatML tokenizer (<|im_start|> in its vocabulary) to give it a tool template")
    tokenizer.chat_template = qwen2_5_chat_template
    return add_response_schema(tokenizer)


def tool_method(tool: Tool) -> Callable[..., str]:
    """The method calling ``tool``: its signature, type hints and docstring describe the tool to TRL."""
    names = [arg.name for arg in tool.args]

    def method(self: ToolEnvironment, *args: Any, **kwargs: Any) -> str:
        # Positional arguments follow the declaration order; anything the model passes goes to the env's
        # grammar, which answers a wrong call with an error observation.
        arguments = dict(zip(names, args, strict=False))
        arguments.update(kwargs)
        return self._act(tool.name, arguments)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for arg in tool.args:
        parameters.append(inspect.Parameter(arg.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            default=inspect.Parameter.empty if arg.required else None,
                                            annotation=PY_TYPES[arg.type]))
    method.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = {**{arg.name: PY_TYPES[arg.type] for arg in tool.args}, "return": str}
    method.__name__ = method.__qualname__ = tool.name
    method.__doc__ = tool_docstring(tool)
    return method


def tool_docstring(tool: Tool) -> str:
    """A Google-style docstring of ``tool`` (what transformers' ``get_json_schema`` parses)."""
    summary = (tool.doc or f"Call {tool.name}.").strip()
    lines = [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")]
    if tool.args:
        lines += ["", "Args:"] + [f"    {arg.name}: {(arg.doc or arg.name).strip()}" for arg in tool.args]
    lines += ["", "Returns:", "    What the environment shows after the call."]
    return "\n".join(lines)
