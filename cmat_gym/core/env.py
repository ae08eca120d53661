"""TextEnv: the base class every domain environment derives from.

The base owns everything that is the same in every domain (intercode's split): task selection
from a seed or a file, parsing the Assistant's raw text with the domain's grammar, the trajectory,
termination on a final answer, truncation after ``max_rounds``, sanitising observations into the
Text space, and rendering. A domain implements only how to set up a task (:meth:`TextEnv._setup`),
run one tool call (:meth:`TextEnv._execute`) and score a final answer (:meth:`TextEnv._evaluate`),
plus how to make and load tasks; it declares its tools in ``grammar`` and registers itself with
one :func:`~cmat_gym.core.domain.register_domain` call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym

from cmat_gym.core.actions import ANSWER, ActionError, Grammar, ParsedAction
from cmat_gym.core.task import SPLITS, Task
from cmat_gym.core.text import (
    DEFAULT_MAX_ACTION_CHARS,
    DEFAULT_MAX_OBS_CHARS,
    displayable,
    sanitize,
    text_space,
    write_display,
)
from cmat_gym.data import resolve_task_file

PROCEDURAL = "procedural"


@dataclass(frozen=True)
class Evaluation:
    """The score of a final answer.

    Attributes:
        score: the official score in [0, 1] (the reward).
        success: whether the task counts as solved.
        dense: a graded score in [0, 1] that trainers may use as shaping (never the reward).
        details: domain-specific facts about the grading (normalised answers, hashes, ...).
    """

    score: float
    success: bool
    dense: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class TextEnv(gym.Env[str, str]):
    """A text-in/text-out agent task (subclass per domain; see the module docstring).

    Args:
        tasks: ``"procedural"`` (generate a task from each seed) or a path to a task file in the
            domain's format (e.g. AgentBench's; ``"agentbench:dbbench/dev"`` names a bundled dev split,
            see :mod:`cmat_gym.data`), or a sequence of :class:`Task`.
        split: ``"train"`` or ``"test"`` (procedural tasks only; the two are disjoint).
        difficulty: 1-3, or None to draw one per episode (procedural tasks only).
        max_rounds: actions allowed before the episode is truncated (default: the class's
            ``default_max_rounds``, the one definition of a domain's step limit).
        render_mode: ``"ansi"`` (``render()`` returns the transcript) or ``"human"`` (prints it).
        max_obs_chars: observations longer than this are cut with a visible marker.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    domain: ClassVar[str] = ""
    grammar: ClassVar[Grammar]
    default_max_rounds: ClassVar[int] = 20

    def __init__(
        self,
        tasks: str | os.PathLike[str] | Sequence[Task] = PROCEDURAL,
        split: str = "train",
        difficulty: int | None = None,
        max_rounds: int | None = None,
        render_mode: str | None = None,
        max_obs_chars: int = DEFAULT_MAX_OBS_CHARS,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"Expects split in {SPLITS}, actual {split!r}")
        if difficulty is not None and difficulty not in (1, 2, 3):
            raise ValueError(f"Expects difficulty in (1, 2, 3) or None, actual {difficulty!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Expects render_mode in {self.metadata['render_modes']}, actual {render_mode!r}")
        self.split = split
        self.difficulty = difficulty
        self.max_rounds = max_rounds if max_rounds is not None else self.default_max_rounds
        if self.max_rounds < 1:
            raise ValueError(f"Expects max_rounds >= 1, actual {self.max_rounds}")
        self.render_mode = render_mode
        self.max_obs_chars = max_obs_chars
        self.observation_space = text_space(max_obs_chars)
        self.action_space = text_space(DEFAULT_MAX_ACTION_CHARS)

        if isinstance(tasks, str | os.PathLike) and str(tasks) == PROCEDURAL:
            self.task_file: str | None = None
            self._tasks: list[Task] | None = None
        elif isinstance(tasks, str | os.PathLike):
            self.task_file = resolve_task_file(tasks)  # "agentbench:dbbench/dev" -> the bundled file
            self._tasks = self.load_tasks(self.task_file)
            if not self._tasks:
                raise ValueError(f"No tasks in {self.task_file}")
        else:
            self.task_file = None
            self._tasks = list(tasks)
            if not self._tasks or not all(isinstance(t, Task) for t in self._tasks):
                raise ValueError("Expects tasks to be 'procedural', a path, or a non-empty sequence of Task")

        self.task: Task | None = None
        self.trajectory: list[dict[str, Any]] = []
        self.rounds = 0
        self._done = True
        self._closed = False

    # ------------------------------------------------------------------ domain hooks
    @classmethod
    def generate_task(cls, seed: int, split: str, difficulty: int) -> Task:
        """The procedural task named by (seed, split, difficulty); the same on every machine."""
        raise NotImplementedError

    @classmethod
    def task_from_id(cls, task_id: str) -> Task:
        """Rebuild a procedural task from its ``task_id``."""
        raise NotImplementedError

    @classmethod
    def load_tasks(cls, path: str) -> list[Task]:
        """Load a task file in the domain's native format."""
        raise NotImplementedError

    @classmethod
    def oracle_actions(cls, task: Task) -> list[str]:
        """A gold action script that solves ``task`` (for the oracle policy and SFT data)."""
        raise NotImplementedError

    def _setup(self, task: Task) -> None:
        """Prepare the backend for ``task`` (fresh state; nothing from earlier episodes)."""
        raise NotImplementedError

    def _execute(self, action: ParsedAction) -> str:
        """Run one operation (a tool call of kind ``"operation"``) and return what the Assistant sees;
        errors become text, never raise."""
        raise NotImplementedError

    def _evaluate(self, answers: list[str]) -> Evaluation:
        """Score the final answer against the task's gold data, without side effects."""
        raise NotImplementedError

    def _first_observation(self, task: Task) -> str:
        return f"{task.instruction}\n\n{task.context}".strip()

    def _teardown(self) -> None:
        """Release the backend (called on close)."""

    # ------------------------------------------------------------------ gymnasium API
    @property
    def num_tasks(self) -> int | None:
        """How many tasks the loaded file holds (None for procedural tasks: unlimited)."""
        return None if self._tasks is None else len(self._tasks)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("Expects an open environment, actual: reset() after close()")
        self.task = self._select_task(options or {})
        self._setup(self.task)
        self.trajectory = []
        self.rounds = 0
        self._done = False
        observation = sanitize(self._first_observation(self.task), self.max_obs_chars)
        self.trajectory.append({"role": "user", "content": observation})
        info = {"task_id": self.task.task_id, "domain": self.domain, "split": self.task.split,
                "difficulty": self.task.difficulty}
        if self.render_mode == "human":
            self.render()
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done or self.task is None:
            return self._finish_step(action, "The episode is over: call reset() to start a new task.",
                                     error="episode_over", terminated=True)
        return self.step_parsed(action, self.grammar.parse(action))

    def step_parsed(self, action: str, parsed: ParsedAction | ActionError) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """:meth:`step` with ``action`` already parsed by ``self.grammar`` (the CMAT loop parses each
        proposal once, for the checker and the env)."""
        if self._done or self.task is None:
            return self._finish_step(action, "The episode is over: call reset() to start a new task.",
                                     error="episode_over", terminated=True)
        if isinstance(parsed, ActionError):
            # A malformed action costs a round (as in AgentBench) but changes no state.
            self.rounds += 1
            return self._finish_step(action, f"Error: {parsed.message}", error="parse_error",
                                     truncated=self.rounds >= self.max_rounds)
        if parsed.kind == ANSWER:
            return self._finish_answer(action, parsed)
        self.rounds += 1
        try:
            observation = self._execute(parsed)
            error = None
        except Exception as exc:  # a backend bug must not kill a training run; report it instead
            observation, error = f"Error: internal {type(exc).__name__}: {exc}", "internal_error"
        return self._finish_step(action, observation, parsed=parsed, error=error,
                                 truncated=self.rounds >= self.max_rounds)

    def score_answer(self, answers: Sequence[str]) -> Evaluation:
        """Score ``answers`` as the current task's final answer, without ending the episode or changing
        any state (hindsight for a rejected answer uses this). A grading error scores 0 with the reason."""
        if self.task is None:
            raise RuntimeError("Expects a task: call reset() first")
        try:
            return self._evaluate(list(answers))
        except Exception as exc:  # an error is a failed task, never a dropped sample
            return Evaluation(0.0, False, 0.0, {"error": f"{type(exc).__name__}: {exc}"})

    def _finish_answer(self, action: str, parsed: ParsedAction) -> tuple[str, float, bool, bool, dict[str, Any]]:
        evaluation = self.score_answer(parsed.value)
        verdict = "correct" if evaluation.success else "incorrect"
        observation = f"Final answer received ({verdict}). Score: {evaluation.score:g}."
        return self._finish_step(action, observation, parsed=parsed, terminated=True, evaluation=evaluation)

    def _finish_step(
        self,
        action: str,
        observation: str,
        *,
        parsed: ParsedAction | None = None,
        error: str | None = None,
        terminated: bool = False,
        truncated: bool = False,
        evaluation: Evaluation | None = None,
    ) -> tuple[str, float, bool, bool, dict[str, Any]]:
        observation = sanitize(observation, self.max_obs_chars)
        if not self._done:
            self.trajectory.append({"role": "assistant", "content": action if isinstance(action, str) else repr(action)})
            self.trajectory.append({"role": "user", "content": observation})
        if terminated or truncated:
            self._done = True
        reward = float(evaluation.score) if evaluation is not None else 0.0
        info: dict[str, Any] = {
            "task_id": self.task.task_id if self.task else None,
            "domain": self.domain,
            "round": self.rounds,
            "parsed_action": parsed.to_dict() if parsed else None,
            "error": error,
            "success": bool(evaluation.success) if evaluation else False,
            "score": reward,
            "dense_score": float(evaluation.dense) if evaluation else 0.0,
        }
        if evaluation is not None:
            info["evaluation"] = evaluation.details
        if self.render_mode == "human":
            self.render()
        return observation, reward, bool(terminated), bool(truncated), info

    def _select_task(self, options: dict[str, Any]) -> Task:
        unknown = set(options) - {"task", "task_index", "split", "difficulty"}
        if unknown:
            raise ValueError(f"Expects reset options among task, task_index, split, difficulty; actual {sorted(unknown)}")
        task = options.get("task")
        if isinstance(task, Task):
            return task
        if isinstance(task, str):
            if self._tasks is not None:
                for candidate in self._tasks:
                    if candidate.task_id == task:
                        return candidate
                raise ValueError(f"No task with task_id {task!r} in {self.task_file or 'the given tasks'}")
            return self.task_from_id(task)
        if task is not None:
            raise TypeError(f"Expects options['task'] to be a Task or a task_id, actual {type(task).__name__}")
        split = options.get("split", self.split)
        difficulty = options.get("difficulty", self.difficulty)
        if split not in SPLITS:
            raise ValueError(f"Expects split in {SPLITS}, actual {split!r}")
        index = options.get("task_index")
        if self._tasks is not None:
            if index is None:
                index = int(self.np_random.integers(len(self._tasks)))
            if not 0 <= int(index) < len(self._tasks):
                raise IndexError(f"Expects 0 <= task_index < {len(self._tasks)}, actual {index}")
            return self._tasks[int(index)]
        seed = int(index) if index is not None else int(self.np_random.integers(2**31 - 1))
        if difficulty is None:
            difficulty = 1 + seed % 3 if index is not None else int(self.np_random.integers(1, 4))
        if difficulty not in (1, 2, 3):
            raise ValueError(f"Expects difficulty in (1, 2, 3), actual {difficulty!r}")
        return self.generate_task(seed, split, int(difficulty))

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'human'.")
            return None
        # Actions are recorded as sent (the trajectory is training data); what is shown is sanitised.
        transcript = displayable(render_transcript(self.trajectory))
        if self.render_mode == "ansi":
            return transcript
        write_display(transcript)
        return None

    def close(self) -> None:
        if not self._closed:
            self._teardown()
            self._closed = True
        super().close()


def render_transcript(turns: Sequence[dict[str, Any]]) -> str:
    """A readable transcript of ``{"role", "content"}`` turns."""
    parts = []
    for turn in turns:
        role = str(turn.get("role", "?")).upper()
        parts.append(f"--- {role} ---\n{turn.get('content', '')}")
    return "\n".join(parts)

