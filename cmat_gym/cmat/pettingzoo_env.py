"""The CMAT loop as a PettingZoo environment: User, Assistant and Checker around any domain env.

Agents ``user_0``, ``assistant_0``, ``checker_0``. Turn order::

    user_0 (states the task)
      -> assistant_0 (proposes an action)
      -> checker_0 (APPROVE or REJECT: <feedback>)
      -> the domain env executes an approved action (a rejected one does not run)
      -> assistant_0 (sees the result, or the rejection feedback) -> checker_0 -> ...

An ``Action: Ask`` (see :mod:`cmat_gym.cmat.roles`) from the Assistant goes to ``user_0`` instead
of the checker, and the reply comes back to the Assistant. The episode ends when the domain env
does (a final answer terminates; its round limit truncates) or after ``max_cycles`` Assistant
turns (truncation; default: the domain env's ``max_rounds``).

**Observations** are ``Dict({"text": Text})`` (one fresh space per agent and instance): the User
sees the task (or the Assistant's question); the Assistant sees the User's request and context (plus
lessons from the reflection store on its first turn), then each result or rejection, optionally
preceded by the pinned request and the last ``history_turns`` turns; the Checker sees the task, the
recent dialogue, the proposed action and, where the domain supports it, a dry run of it.
**Actions** are text; ``checker_0``'s is read with :func:`~cmat_gym.cmat.checkers.parse_verdict`
(unreadable text approves with no score) and may also be a :class:`~cmat_gym.cmat.checkers.Verdict`.

**Rewards** (given at the checker's turn, i.e. when the proposal is settled):

* ``assistant_0``: the task score when the episode ends on an approved final answer, plus
  ``checker_weight * score`` every reviewed turn (the checker's score, or 1/0 for approve/reject
  when it gives none; ``checker_weight`` defaults to 0.0, so by default only the task score counts);
* ``checker_0``: +1 when its verdict agrees with hindsight, -1 when not, 0 when hindsight is
  unknown. Hindsight: an approved action is good if executing it raised no error and, on a
  question task, changed no data (a final answer: if it was correct); a rejected action is judged
  the same way by a dry run (rolled back) or a side-effect-free scoring of the answer;
* ``user_0``: always 0 (it is a fixed role; giving it the task score would only duplicate the
  assistant's).

**Memory**: ``memory`` (a :class:`~cmat_gym.cmat.memory.ReflectionStore` or a path) is searched
with the task instruction (same split and domain) at reset; the hits go into the Assistant's first
observation. The search never returns a reflection written on the same task (the **single-trial**
protocol: a reflection may quote a value the Assistant computed, which on the same task could be the
answer). A **multi-trial** run (:func:`cmat_gym.evaluation.run_trials`) hands a retry the
reflections of its task's earlier failed trials explicitly, with the reset option
``trial_reflections`` (a list of texts, shown under their own heading). After a failed episode in
which the Assistant acted, ``reflection_writer(instruction, view)`` writes a reflection, stored
unless the store is read-only (or absent), and reported as the final step's ``info["reflection"]``.
The writer (``"template"``: :func:`~cmat_gym.cmat.memory.template_reflection`, the default;
``"lm"``: :class:`~cmat_gym.agents.chat_agent.LMReflectionWriter` over ``reflection_policy``; or
any callable) sees the instruction and the Assistant's dialogue with every final-answer
observation replaced by :data:`GRADED_ANSWER`: nothing the grader knows (expected answers, its
details, hindsight labels) reaches a reflection.

**Parallel form** (:func:`parallel_env`): one ``step`` is one turn. Only the agent whose turn it is
acts: ``infos[agent]["active_agent"]`` (and ``active_agent``) names it; actions for other agents are
accepted and ignored, and a missing action for the active agent is an error. PettingZoo counts a
parallel step as a cycle, so there ``max_cycles`` limits turns (all roles together), while in the
AEC form it limits Assistant turns (each with its checker turn): the definitions PettingZoo's
``max_cycles_test`` checks.

``reset`` options ``task``, ``task_index``, ``split``, ``difficulty`` go to the domain env;
``trial_reflections`` is the loop's own (see Memory); other keys are ignored (PettingZoo's API tests
pass arbitrary options).
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers

from cmat_gym.cmat.checkers import critic_prompt
from cmat_gym.cmat.memory import (
    ReflectionStore,
    ReflectionWriter,
    ShortTermMemory,
    format_reflections,
    format_trial_reflections,
    template_reflection,
)
from cmat_gym.cmat.roles import parse_question, user_prompt
from cmat_gym.core.actions import ANSWER, OPERATION, ActionError, ParsedAction
from cmat_gym.core.checking import DomainHooks, Verdict, parse_verdict, public_task
from cmat_gym.core.domain import get_domain
from cmat_gym.core.env import TextEnv, render_transcript
from cmat_gym.core.text import DEFAULT_MAX_ACTION_CHARS, displayable, sanitize, text_space, write_display

USER, ASSISTANT, CHECKER = "user_0", "assistant_0", "checker_0"
AGENTS = (USER, ASSISTANT, CHECKER)
TASK_OPTIONS = ("task", "task_index", "split", "difficulty")
LOOP_OPTIONS = ("trial_reflections",)
REJECTED = "Error: rejected by the checker (not executed): "
GRADED_ANSWER = "Final answer received (incorrect)."
"""What a reflection writer sees in place of a final-answer observation: reflections are written only
after failed episodes, so this says all the grader may say (a domain's own wording might quote the
expected answer)."""
REFLECTION_WRITERS = ("template", "lm")


def make_domain_env(domain_env: str | TextEnv, **kwargs: Any) -> TextEnv:
    """The bare domain env (no Gymnasium wrappers: the loop keeps its own limits) from an id or as given."""
    if isinstance(domain_env, TextEnv):
        if kwargs:
            raise ValueError(f"Expects no env kwargs with an env instance, actual {sorted(kwargs)}")
        return domain_env
    spec = gym.spec(domain_env)
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    env = creator(**{**spec.kwargs, **kwargs})
    if not isinstance(env, TextEnv):
        raise TypeError(f"Expects {domain_env} to be a cmat_gym TextEnv, actual {type(env).__name__}")
    return env


def domain_hooks(env: TextEnv) -> DomainHooks:
    """The hooks of ``env``'s registered domain; the generic fallback for an unregistered TextEnv."""
    try:
        return get_domain(env.domain).hooks()
    except ValueError:
        return DomainHooks()


def make_reflection_writer(
    writer: str | ReflectionWriter | None = None, policy: Any = None
) -> ReflectionWriter:
    """The reflection writer ``writer`` names: ``"template"`` or None (:func:`template_reflection`),
    ``"lm"`` (:class:`~cmat_gym.agents.chat_agent.LMReflectionWriter` over ``policy``, the Assistant's
    chat model), or a callable ``(instruction, view) -> text`` used as is."""
    if writer is None or writer == "template":
        return template_reflection
    if writer == "lm":
        if policy is None:
            raise ValueError("Expects reflection_policy=<the Assistant's chat model> with reflection_writer='lm', "
                             "actual None")
        from cmat_gym.agents.chat_agent import LMReflectionWriter  # torch: imported only when asked for

        return LMReflectionWriter(policy)
    if callable(writer):
        return writer
    raise ValueError(f"Expects reflection_writer in {REFLECTION_WRITERS} or a callable, actual {writer!r}")


def open_store(memory: ReflectionStore | str | os.PathLike[str] | None) -> ReflectionStore | None:
    """A reflection store from a store, a path (opened read-write) or None."""
    if memory is None or isinstance(memory, ReflectionStore):
        return memory
    return ReflectionStore(memory, mode="rw")


class raw_env(AECEnv[str, dict[str, str], Any]):  # noqa: N801 - PettingZoo's naming convention
    """The CMAT loop, AEC form (see the module docstring).

    Args:
        domain_env_id: a registered single-agent env id (``"cmat/DB-v0"``) or a TextEnv instance.
        max_cycles: Assistant turns before truncation (default: the domain env's ``max_rounds``).
        max_turns: turns of any agent before truncation (None: no limit; the parallel form's cycles).
        history_turns: recent turns repeated in each Assistant observation (0: only the newest message).
        checker_history_turns: recent turns in the Checker's observation.
        checker_weight: weight of the per-turn shaping reward from the checker's score.
        memory: a ReflectionStore, a path to one, or None (no long-term memory).
        memory_k: reflections retrieved per episode (and, in a multi-trial run, the most recent
            reflections of the task's own earlier trials shown).
        reflection_writer: ``"template"`` (default), ``"lm"`` (needs ``reflection_policy``) or a callable
            ``(instruction, view) -> text``, called after a failed episode.
        reflection_policy: the chat model of ``reflection_writer="lm"`` (the Assistant's own).
        render_mode: ``"ansi"`` (``render()`` returns the transcript) or ``"human"`` (prints it).
        **env_kwargs: passed to the domain env (``tasks=``, ``split=``, ``max_rounds=``, ...).
    """

    metadata = {"render_modes": ["ansi", "human"], "name": "cmat_v0", "is_parallelizable": False, "render_fps": 4}

    def __init__(
        self,
        domain_env_id: str | TextEnv,
        *,
        max_cycles: int | None = None,
        max_turns: int | None = None,
        history_turns: int = 0,
        checker_history_turns: int = 6,
        checker_weight: float = 0.0,
        memory: ReflectionStore | str | os.PathLike[str] | None = None,
        memory_k: int = 3,
        reflection_writer: str | ReflectionWriter | None = None,
        reflection_policy: Any = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Expects render_mode in {self.metadata['render_modes']}, actual {render_mode!r}")
        self.domain_env = make_domain_env(domain_env_id, **env_kwargs)
        self.hooks = domain_hooks(self.domain_env)
        self.max_cycles = int(max_cycles) if max_cycles is not None else self.domain_env.max_rounds
        if self.max_cycles < 1:
            raise ValueError(f"Expects max_cycles >= 1, actual {self.max_cycles}")
        self.max_turns = max_turns
        self.history_turns = history_turns
        self.checker_history_turns = checker_history_turns
        self.checker_weight = float(checker_weight)
        self._owns_memory = memory is not None and not isinstance(memory, ReflectionStore)
        self.memory = open_store(memory)
        self.memory_k = memory_k
        self.reflection_writer = make_reflection_writer(reflection_writer, reflection_policy)
        self.render_mode = render_mode
        self.max_obs_chars = self.domain_env.max_obs_chars

        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._observation_spaces = {a: spaces.Dict({"text": text_space(self.max_obs_chars)}) for a in AGENTS}
        self._action_spaces = {a: text_space(DEFAULT_MAX_ACTION_CHARS) for a in AGENTS}
        self.task = None
        self.transcript: list[dict[str, str]] = []  # every role's turns, for render()
        self.dialogue: list[dict[str, str]] = []  # what the Assistant has seen and done
        self.reflections: list[Any] = []
        self.trial_reflections: list[str] = []
        self.reflection: str | None = None
        self._closed = False

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._observation_spaces[agent]

    @property
    def domain(self) -> str:
        """The domain's name (``"db"``, ...)."""
        return self.domain_env.domain

    def cumulative_reward(self, agent: str) -> float:
        """``agent``'s reward since its last turn (what :meth:`last` reports for it)."""
        return float(self._cumulative_rewards[agent])

    def action_space(self, agent: str) -> spaces.Text:
        return self._action_spaces[agent]

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        trials = (options or {}).get("trial_reflections")
        if trials is not None and (not isinstance(trials, list | tuple)
                                   or not all(isinstance(t, str) for t in trials)):
            raise TypeError(f"Expects options['trial_reflections'] to be a list of str, actual {trials!r}")
        options = {k: v for k, v in (options or {}).items() if k in TASK_OPTIONS}
        self._first_observation, _ = self.domain_env.reset(seed=seed, options=options)
        self.task = self.domain_env.task
        self.public_task = public_task(self.task)
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.transcript, self.dialogue = [], []
        self._short = ShortTermMemory(self.history_turns)
        self._cycles = self._turns = self._questions = 0
        self.pending_action: str | None = None  # proposed, awaiting the checker
        self.pending_parsed: ParsedAction | ActionError | None = None  # its one parse (checker and env share it)
        self.pending_question: str | None = None  # asked, awaiting the user
        self._checker_text: str | None = None
        self._records: list[tuple[bool, bool | None]] = []  # (approved, hindsight) per reviewed action
        self._final: dict[str, Any] = {}
        self.reflection_written = False
        self.reflection = None
        self._graded: set[int] = set()  # dialogue indices of final-answer observations (grader feedback)
        # A multi-trial episode (the option is given, even empty) always reflects on a failure: the
        # next trial needs the text even when no writable store keeps it.
        self._in_trials = trials is not None
        kept = [t for t in (trials or []) if t.strip()]
        self.trial_reflections = kept[-self.memory_k:] if self.memory_k > 0 else []  # the most recent ones
        # Single-trial protocol: never a reflection of this very task (it may quote what the Assistant
        # computed, i.e. possibly the answer); only reflections on other, similar tasks.
        self.reflections = (self.memory.search(self.task.instruction, split=self.task.split, domain=self.task.domain,
                                               k=self.memory_k, exclude_task_id=self.task.task_id)
                            if self.memory is not None else [])
        self._obs = {USER: sanitize(user_prompt(self.public_task), self.max_obs_chars),
                     ASSISTANT: "Waiting for the user's request.",
                     CHECKER: "Waiting for the assistant's proposal."}
        self.agent_selection = USER
        self._skip_agent_selection = None

    # ------------------------------------------------------------------ stepping
    def observe(self, agent: str) -> dict[str, str]:
        if agent == CHECKER and self.pending_action is not None:
            return {"text": self._checker_view()}
        return {"text": self._obs[agent]}

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self._turns += 1
        if agent == USER:
            self._user_turn(_as_text(action))
        elif agent == ASSISTANT:
            self._assistant_turn(_as_text(action))
        else:
            self._checker_turn(action)
        if not any(self.terminations.values()) and not any(self.truncations.values()):
            if self.max_turns is not None and self._turns >= self.max_turns:
                self._finish(truncated=True)
            elif self.agent_selection == ASSISTANT and self._cycles >= self.max_cycles:
                self._finish(truncated=True)
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def _user_turn(self, message: str) -> None:
        message = sanitize(message, self.max_obs_chars)
        self.transcript.append({"role": "user", "content": message})
        if self.pending_question is None:  # the opening request
            if message.strip() == self.task.instruction.strip():
                first = self._first_observation  # exactly what the single-agent env shows
            else:
                first = f"{message}\n\n{self.task.context}".strip()
            if self.trial_reflections:
                first = f"{first}\n\n{format_trial_reflections(self.trial_reflections)}"
            if self.reflections:
                first = f"{first}\n\n{format_reflections(self.reflections)}"
            self.dialogue.append({"role": "user", "content": first})
            self._obs[ASSISTANT] = sanitize(first, self.max_obs_chars)
        else:
            self.pending_question = None
            self._tell_assistant("user", f"User: {message}")
        self.agent_selection = ASSISTANT

    def _assistant_turn(self, action: str) -> None:
        self._cycles += 1
        self.transcript.append({"role": "assistant", "content": action})  # sanitised when rendered
        self._remember("assistant", action)
        question = parse_question(action)
        if question is not None:
            self._questions += 1
            self.pending_question = question
            self._obs[USER] = sanitize(user_prompt(self.public_task, question), self.max_obs_chars)
            self.infos[ASSISTANT] = {**self._unexecuted_info(None, None), "question": question,
                                     "checker_verdict": None, "checker_feedback": "", "checker_score": None,
                                     "hindsight": None}
            self.agent_selection = USER
            return
        self.pending_action, self._checker_text = action, None
        self.pending_parsed = self.domain_env.grammar.parse(action)
        self.agent_selection = CHECKER

    def _checker_turn(self, action: Any) -> None:
        if isinstance(action, Verdict):
            verdict = action
        else:
            verdict = parse_verdict(_as_text(action)) or Verdict(True, "", None)
        proposal, self.pending_action = self.pending_action or "", None
        parsed, self.pending_parsed = self.pending_parsed, None
        env = self.domain_env
        if parsed is None:
            parsed = env.grammar.parse(proposal)
        self.transcript.append({"role": "checker", "content": verdict.to_text()})
        if verdict.approve:
            snapshot = self.hooks.snapshot(env, parsed) if _is_operation(parsed) else None
            message, reward, terminated, truncated, info = env.step_parsed(proposal, parsed)
            hindsight = self._hindsight_executed(parsed, message, info, snapshot)
            role = "env"
        else:
            hindsight = self._hindsight_dry_run(parsed)
            message = REJECTED + (verdict.feedback or "no reason given")
            reward, terminated, truncated, role = 0.0, False, False, "checker"
            info = self._unexecuted_info(parsed, "rejected")
        self._records.append((verdict.approve, hindsight))
        shaping = verdict.score if verdict.score is not None else float(verdict.approve)
        self.rewards[ASSISTANT] = float(reward) + self.checker_weight * shaping
        self.rewards[CHECKER] = 0.0 if hindsight is None else (1.0 if verdict.approve == hindsight else -1.0)
        label = "APPROVE" if verdict.approve else "REJECT"
        self.infos[ASSISTANT] = {**info, "checker_verdict": label, "checker_feedback": verdict.feedback,
                                 "checker_score": verdict.score, "hindsight": hindsight}
        self.infos[CHECKER] = {"checker_verdict": label, "hindsight": hindsight,
                               "agreed": None if hindsight is None else verdict.approve == hindsight}
        self._tell_assistant(role, message)
        if verdict.approve and not isinstance(parsed, ActionError) and parsed.kind == ANSWER:
            self._graded.add(len(self.dialogue) - 1)
        self.agent_selection = ASSISTANT
        if terminated or truncated:
            self._final = info
            self._finish(terminated=terminated, truncated=truncated and not terminated)

    def _unexecuted_info(self, parsed: Any, error: str | None) -> dict[str, Any]:
        """The domain env's info keys for a turn on which it did not step (a rejection, a question)."""
        action = None
        if parsed is not None and not isinstance(parsed, ActionError):
            action = parsed.to_dict()
        return {"task_id": self.task.task_id, "domain": self.domain_env.domain, "round": self.domain_env.rounds,
                "parsed_action": action, "error": error, "success": False, "score": 0.0, "dense_score": 0.0}

    # ------------------------------------------------------------------ hindsight
    def _hindsight_executed(self, parsed: Any, observation: str, info: dict[str, Any], snapshot: Any) -> bool | None:
        if isinstance(parsed, ActionError):
            return False
        if parsed.kind == ANSWER:
            return bool(info.get("success"))
        return self.hooks.executed_ok(self.domain_env, parsed, observation, snapshot)

    def _hindsight_dry_run(self, parsed: Any) -> bool | None:
        if isinstance(parsed, ActionError):
            return False
        if parsed.kind == ANSWER:  # scoring an answer has no side effects (TextEnv.score_answer)
            return bool(self.domain_env.score_answer(parsed.value).success)
        return self.hooks.dry_run_ok(self.domain_env, parsed)

    # ------------------------------------------------------------------ views
    def _remember(self, role: str, content: str) -> None:
        self.dialogue.append({"role": role, "content": content})
        if self.history_turns > 0:
            self._short.add(role, content)

    def _tell_assistant(self, role: str, message: str) -> None:
        if role != "env":  # the domain env sanitises its own observations
            message = sanitize(message, self.max_obs_chars)
        if role != "checker":  # a rejection repeats the verdict the transcript already shows
            self.transcript.append({"role": role, "content": message})
        self._remember(role, message)
        self._obs[ASSISTANT] = self._assistant_view(message)

    def _assistant_view(self, message: str) -> str:
        """The newest message, or (history_turns > 0) the pinned request and the recent turns."""
        if self.history_turns <= 0:
            return message
        head = f"{self.dialogue[0]['content']}\n\nRecent turns:\n"
        turns = self._short.turns()
        blocks = [f"--- {t['role'].upper()} ---\n{t['content']}" for t in turns]
        # Drop the oldest turns first: the newest message must survive the length cap.
        while len(blocks) > 1 and len(head) + sum(len(b) + 1 for b in blocks) > self.max_obs_chars:
            blocks.pop(0)
        return sanitize(head + "\n".join(blocks), self.max_obs_chars)

    def _checker_view(self) -> str:
        if self._checker_text is None:
            proposal = self.pending_action or ""
            text = critic_prompt(self.public_task, self.dialogue[:-1], proposal, self.checker_history_turns)
            parsed = self.pending_parsed if self.pending_parsed is not None else self.domain_env.grammar.parse(proposal)
            if isinstance(parsed, ActionError):
                note = f"The action does not parse: {parsed.message}"
            elif parsed.kind == OPERATION:
                dry = self.hooks.dry_run_text(self.domain_env, parsed)
                note = f"Dry run (not kept): {dry}" if dry else ""
            else:
                note = ""
            if note:
                text = text.replace("\n\nYour verdict", f"\n\n{note}\n\nYour verdict", 1)
            self._checker_text = sanitize("You are the checker.\n\n" + text, self.max_obs_chars)
        return self._checker_text

    # ------------------------------------------------------------------ episode end
    def _finish(self, *, terminated: bool = False, truncated: bool = False) -> None:
        for agent in self.agents:
            self.terminations[agent] = bool(terminated)
            self.truncations[agent] = bool(truncated)
        success = bool(self._final.get("success", False))
        if not success and self._cycles > 0:
            self._write_reflection()
        metrics = self.episode_metrics()
        for agent in self.agents:
            self.infos[agent] = {**self.infos[agent], "episode_metrics": metrics, "reflection": self.reflection}

    def reflection_view(self) -> list[dict[str, str]]:
        """What a reflection writer sees: the Assistant's dialogue (copies), each final-answer observation
        replaced by :data:`GRADED_ANSWER`. Nothing else the grader knows is in the dialogue: the Task
        payload, ``info["evaluation"]`` and hindsight labels never enter it."""
        return [{"role": t["role"], "content": GRADED_ANSWER if i in self._graded else t["content"]}
                for i, t in enumerate(self.dialogue)]

    def _write_reflection(self) -> None:
        writable = self.memory is not None and self.memory.mode != "ro"
        if not (writable or self._in_trials):
            return
        text = self.reflection_writer(self.task.instruction, self.reflection_view())
        if not text or not text.strip():
            return
        self.reflection = text.strip()
        if writable and self.memory is not None:
            self.memory.add(split=self.task.split, domain=self.task.domain, task_id=self.task.task_id,
                            task_text=self.task.instruction, text=self.reflection)
        self.reflection_written = True

    def episode_metrics(self) -> dict[str, Any]:
        """The episode's numbers so far. A *positive* is a rejection of an action that hindsight
        calls bad: precision = bad rejected / rejected, recall = bad rejected / bad (None when the
        denominator is 0); actions without a hindsight label count in neither."""
        rejected = sum(not approved for approved, _ in self._records)
        bad = sum(h is False for _, h in self._records)
        caught = sum(not approved and h is False for approved, h in self._records)
        known = [(a, h) for a, h in self._records if h is not None]
        return {
            "success": bool(self._final.get("success", False)),
            "score": float(self._final.get("score", 0.0)),
            "assistant_turns": self._cycles,
            "questions": self._questions,
            "reviewed_actions": len(self._records),
            "rejected_actions": rejected,
            "bad_actions": bad,
            "checker_precision": caught / rejected if rejected else None,
            "checker_recall": caught / bad if bad else None,
            "checker_agreement": sum(a == h for a, h in known) / len(known) if known else None,
            "reflections_used": len(self.reflections) + len(self.trial_reflections),
            "own_task_reflections_used": len(self.trial_reflections),
            "reflection_written": self.reflection_written,
        }

    # ------------------------------------------------------------------ rendering, closing
    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'.")
            return None
        text = displayable(render_transcript(self.transcript))  # agent text may hold anything
        if self.render_mode == "ansi":
            return text
        write_display(text)
        return None

    def close(self) -> None:
        if not self._closed:
            self.domain_env.close()
            if self._owns_memory and self.memory is not None:
                self.memory.close()
            self._closed = True


class CMATParallelEnv(ParallelEnv[str, dict[str, str], Any]):
    """The CMAT loop, parallel form: one step is one turn, taken by the active agent only (see the
    module docstring). ``max_cycles`` limits the turns of all roles together; the Assistant-turn
    limit of the AEC form (the domain env's ``max_rounds``) applies as well."""

    metadata = raw_env.metadata

    def __init__(self, domain_env_id: str | TextEnv, *, max_cycles: int | None = None,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        self.aec = raw_env(domain_env_id, render_mode=render_mode, **kwargs)
        self.max_cycles = max_cycles
        self.render_mode = render_mode
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []

    def observation_space(self, agent: str) -> spaces.Dict:
        return self.aec.observation_space(agent)

    def action_space(self, agent: str) -> spaces.Text:
        return self.aec.action_space(agent)

    @property
    def active_agent(self) -> str | None:
        """The agent whose action the next step uses (None when the episode is over)."""
        return self.aec.agent_selection if self.agents else None

    @property
    def task(self) -> Any:
        return self.aec.task

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
        self.aec.max_turns = self.max_cycles
        self.aec.reset(seed=seed, options=options)
        self.agents = list(self.aec.agents)
        return {a: self.aec.observe(a) for a in self.agents}, self._infos()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        active = self.active_agent
        if active is None:
            raise RuntimeError("Expects an episode in progress, actual: step() after the episode ended (call reset())")
        if active not in actions:
            raise ValueError(f"Expects an action for {active!r} (the agent whose turn it is, "
                             f"infos[agent]['active_agent']), actual actions for {sorted(actions)}")
        self.aec.step(actions[active])
        agents = self.agents
        rewards = {a: float(self.aec.rewards[a]) for a in agents}
        terminations = {a: bool(self.aec.terminations[a]) for a in agents}
        truncations = {a: bool(self.aec.truncations[a]) for a in agents}
        observations = {a: self.aec.observe(a) for a in agents}
        if any(terminations.values()) or any(truncations.values()):
            self.agents = []
        return observations, rewards, terminations, truncations, self._infos(agents)

    def _infos(self, agents: list[str] | None = None) -> dict[str, dict[str, Any]]:
        active = self.active_agent
        return {a: {**self.aec.infos[a], "active_agent": active} for a in (agents or self.agents)}

    def render(self) -> str | None:
        return self.aec.render()

    def close(self) -> None:
        self.aec.close()


def env(domain_env_id: str | TextEnv, max_cycles: int | None = None, **kwargs: Any) -> AECEnv:
    """The AEC form, wrapped with PettingZoo's OrderEnforcingWrapper (the only standard wrapper that
    fits text actions: the others check discrete or box actions)."""
    return wrappers.OrderEnforcingWrapper(raw_env(domain_env_id, max_cycles=max_cycles, **kwargs))


def parallel_env(domain_env_id: str | TextEnv, max_cycles: int | None = None,
                 **kwargs: Any) -> CMATParallelEnv:
    """The parallel form (one step = one turn; see the module docstring)."""
    return CMATParallelEnv(domain_env_id, max_cycles=max_cycles, **kwargs)


def _as_text(action: Any) -> str:
    if isinstance(action, str):
        return action
    return "" if action is None else str(action)


def _is_operation(parsed: Any) -> bool:
    return not isinstance(parsed, ActionError) and parsed.kind == OPERATION
