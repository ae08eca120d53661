"""The CMAT loop as a single-agent Gymnasium env: only the Assistant acts; User and Checker are fixed.

``make_cmat("cmat/DB-v0", checker="rule")`` (or ``gym.make("cmat/DB-CMAT-v0")``) gives a
``gym.Env[str, str]`` that looks like the domain env to the Assistant, except that every action is
reviewed before it runs: a rejected action does not execute and its feedback is the next
observation (``"Error: rejected by the checker (not executed): ..."``). Questions (``Action: Ask``)
are answered by the user policy. It is the PettingZoo loop (:mod:`cmat_gym.cmat.pettingzoo_env`)
with ``user_0`` and ``checker_0`` played by the given policies, so rewards, hindsight and metrics are
the same.

``info`` of every step: the domain env's info (``success``, ``score``, ``error``, ...; for a
rejected action ``error="rejected"``), plus ``checker_verdict`` (``"APPROVE"``/``"REJECT"``, None for
a question), ``checker_feedback``, ``checker_score`` and ``hindsight`` (whether the action was fine
in hindsight: it ran, or would have run, without error and, on a question task, without changing
data; a final answer: whether it was correct). The last step's info adds ``episode_metrics``:
``rejected_actions``, ``checker_precision``, ``checker_recall`` (a positive is a rejection of an
action that hindsight calls bad; None when undefined), ``checker_agreement``, ``reflections_used``,
``own_task_reflections_used``, ``reflection_written``, ``success``, ``score``, ``assistant_turns``,
``questions``; and ``info["reflection"]``, the reflection written on this episode (None if none).

Reflections follow the single-trial protocol: a task is never served a reflection written on that
same task. ``reset(options={"trial_reflections": [...]})`` makes the episode a trial of a multi-trial
run (:func:`cmat_gym.evaluation.run_trials`): the texts are the reflections of the task's earlier
failed trials, shown under their own heading.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from cmat_gym.cmat.checkers import Checker, make_checker
from cmat_gym.cmat.memory import ReflectionStore, ReflectionWriter
from cmat_gym.cmat.pettingzoo_env import ASSISTANT, CHECKER, LOOP_OPTIONS, TASK_OPTIONS, USER, raw_env
from cmat_gym.cmat.roles import ScriptedUser, User
from cmat_gym.core.actions import Grammar
from cmat_gym.core.env import TextEnv
from cmat_gym.core.task import Task
from cmat_gym.core.text import DEFAULT_MAX_ACTION_CHARS, text_space


class CMATEnv(gym.Env[str, str]):
    """Single-agent CMAT loop (see the module docstring); build it with :func:`make_cmat`.

    Attributes:
        loop: the underlying :class:`~cmat_gym.cmat.pettingzoo_env.raw_env`.
        checker: the checker policy; user: the user policy.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        env_id: str | TextEnv,
        *,
        checker: str | Checker | None = "rule",
        user: User | None = None,
        memory: ReflectionStore | str | os.PathLike[str] | None = None,
        history_turns: int = 0,
        checker_weight: float = 0.0,
        max_cycles: int | None = None,
        memory_k: int = 3,
        reflection_writer: str | ReflectionWriter | None = None,
        reflection_policy: Any = None,
        checker_policy: Any = None,
        checker_adapter: str | os.PathLike[str] | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        self.loop = raw_env(env_id, max_cycles=max_cycles, history_turns=history_turns,
                            checker_weight=checker_weight, memory=memory, memory_k=memory_k,
                            reflection_writer=reflection_writer, reflection_policy=reflection_policy,
                            render_mode=render_mode, **env_kwargs)
        self.checker = make_checker(checker, self.loop.domain_env.domain, policy=checker_policy,
                                    adapter=checker_adapter)
        self.user = user if user is not None else ScriptedUser()
        self.render_mode = render_mode
        self.observation_space = text_space(self.loop.max_obs_chars)
        self.action_space = text_space(DEFAULT_MAX_ACTION_CHARS)

    @property
    def task(self) -> Task | None:
        """The current task, gold included (for the oracle policy; never shown to the roles)."""
        return self.loop.task

    @property
    def domain_env(self) -> TextEnv:
        """The domain env the loop runs (no Gymnasium wrappers)."""
        return self.loop.domain_env

    @property
    def domain(self) -> str:
        """The domain's name, as ``env.unwrapped.domain`` of a bare domain env."""
        return self.loop.domain_env.domain

    @property
    def grammar(self) -> Grammar:
        """The domain's action grammar (the Assistant acts in it, as in the bare env)."""
        return self.loop.domain_env.grammar

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        unknown = set(options or {}) - set(TASK_OPTIONS) - set(LOOP_OPTIONS)
        if unknown:
            raise ValueError(f"Expects reset options among {', '.join(TASK_OPTIONS + LOOP_OPTIONS)}; "
                             f"actual {sorted(unknown)}")
        loop = self.loop
        loop.reset(seed=seed, options=options)
        loop.step(self.user.speak(loop.public_task))
        task = loop.task
        info = {"task_id": task.task_id, "domain": task.domain, "split": task.split, "difficulty": task.difficulty,
                "reflections_used": len(loop.reflections) + len(loop.trial_reflections),
                "own_task_reflections_used": len(loop.trial_reflections)}
        return loop.observe(ASSISTANT)["text"], info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        loop = self.loop
        if not loop.agents or loop.terminations[ASSISTANT] or loop.truncations[ASSISTANT]:
            return "The episode is over: call reset() to start a new task.", 0.0, True, False, {"error": "episode_over"}
        loop.step(action)
        if not loop.truncations[ASSISTANT]:
            if loop.agent_selection == USER:
                loop.step(self.user.speak(loop.public_task, loop.pending_question))
            elif loop.agent_selection == CHECKER:
                proposal = loop.pending_action or ""
                loop.step(self.checker.review(loop.public_task, loop.dialogue[:-1], proposal, loop.domain_env,
                                              parsed=loop.pending_parsed))
        # The loop builds a fresh info dict every turn, so it is handed out without a copy.
        return (loop.observe(ASSISTANT)["text"], loop.cumulative_reward(ASSISTANT),
                loop.terminations[ASSISTANT], loop.truncations[ASSISTANT], loop.infos[ASSISTANT])

    @property
    def reflection(self) -> str | None:
        """The reflection written on the latest episode (None when it succeeded or none was written)."""
        return self.loop.reflection

    def render(self) -> str | None:
        return self.loop.render()

    def close(self) -> None:
        self.loop.close()
        super().close()


def make_cmat(
    env_id: str | TextEnv,
    *,
    checker: str | Checker | None = "rule",
    user: User | None = None,
    memory: ReflectionStore | str | os.PathLike[str] | None = None,
    history_turns: int = 0,
    checker_weight: float = 0.0,
    **env_kwargs: Any,
) -> CMATEnv:
    """The single-agent CMAT env around ``env_id`` (a registered id or a TextEnv instance).

    Args:
        checker: ``"rule"`` (the domain's rule checker), ``"none"``, ``"llm"`` (pass
            ``checker_policy=<LMPolicy>``), ``"learned"`` (pass ``checker_adapter=DIR``, a folder written
            by ``python -m algorithms.checker_train``; envs given the same folder share one loaded model),
            or a :class:`~cmat_gym.cmat.checkers.Checker`.
        user: the user policy (default :class:`~cmat_gym.cmat.roles.ScriptedUser`).
        memory: a ReflectionStore, a path to one (opened read-write), or None.
        history_turns: recent turns repeated in each observation (0: the newest message only, as the
            domain env; chat policies that keep their own history want 0).
        checker_weight: per-turn shaping reward ``checker_weight * checker_score`` (default off).
        **env_kwargs: ``max_cycles``, ``memory_k``, ``reflection_writer`` (``"template"``, the default;
            ``"lm"``, the Assistant's own chat model given as ``reflection_policy=``, reflecting on its
            failed attempt; or a callable ``(instruction, view) -> text``), ``checker_policy``,
            ``checker_adapter``, ``render_mode``, and anything for the domain env (``tasks=``, ``split=``, ...).
    """
    return CMATEnv(env_id, checker=checker, user=user, memory=memory, history_turns=history_turns,
                   checker_weight=checker_weight, **env_kwargs)
