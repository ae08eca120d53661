"""Episodes as data: what a policy saw and did, step by step, saved as an HF ``datasets`` dataset.

``run_episodes(..., record=True)`` (and ``cmat-gym eval --save-trajectories DIR``) attach a
:class:`Trajectory` to every :class:`~cmat_gym.evaluation.EpisodeResult`; :func:`save_trajectories`
writes them, one row per episode, with ``Dataset.save_to_disk``, so ``datasets.load_from_disk(DIR)``
reads them back. Any registered domain, bare env or CMAT loop: nothing here names a domain.

A row (Minari's convention for the step lists: ``observations`` has one more entry than ``actions``,
``observations[0]`` is the reset observation, ``observations[i + 1]`` the one after ``actions[i]``):

* ``messages``: the chat as a chat model is prompted and trained (``{"role", "content"}`` rows, the
  conversational format of TRL's ``SFTTrainer`` and verifiers): the system prompt (the policy's own, else
  :func:`~cmat_gym.agents.prompts.assistant_system_prompt` of the domain's grammar, the one
  ``algorithms.sft_train`` and PPO use), the first observation as the user turn, then each action
  (``assistant``) and the observation it got (``user``, as :class:`~cmat_gym.agents.chat_agent.ChatAgent`
  shows it). The observation after the episode's last action is left out (nothing answers it), so a row
  ends on the assistant's last turn, as the SFT collector's do. It is the whole conversation: a
  ChatAgent whose context window is full shows its model only the first and the latest turns.
* ``tools``: the domain's tool schemas (``Grammar.tool_schemas()``) as a JSON string, the form TRL's
  ``SFTTrainer`` decodes for a ``tools`` column.
* per step: ``actions``, ``observations``, ``rewards``, ``parsed_actions`` (JSON of the parsed call, None
  when it did not parse), ``errors``; and, through the CMAT loop, ``checker_verdicts`` (``APPROVE`` /
  ``REJECT``; None for a question or outside the loop), ``checker_feedback``, ``checker_scores``,
  ``hindsight`` (whether the action was fine in hindsight).
* per episode: ``domain``, ``task_id``, ``split``, ``difficulty``, ``seed``, ``trial``, ``success``,
  ``score``, ``return`` (the sum of rewards), ``steps``, ``truncated``, ``cmat`` (whether through the
  CMAT loop), ``episode_metrics`` (the loop's metrics as JSON, else None), ``reflection``, and the run's
  ``env_id`` and ``policy`` (given to :func:`save_trajectories`; empty when not).

``datasets`` comes with the ``[train]`` extra and is imported only when saving or loading.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmat_gym.core.files import replace_dir

if TYPE_CHECKING:
    from cmat_gym.evaluation import EpisodeResult

MISSING_DATASETS = "saving trajectories needs the 'datasets' package: pip install 'cmat-gym[train]'"


@dataclass
class Step:
    """One action and what came of it.

    Attributes:
        action: the policy's raw text.
        observation: what the env answered.
        reward: the step's reward.
        parsed_action: the parsed call (``info["parsed_action"]``), None when it did not parse.
        error: the env's error label (``parse_error``, ``rejected``, ...), else None.
        checker_verdict: ``APPROVE`` / ``REJECT`` through the CMAT loop (None for a question or a bare env).
        checker_feedback: the checker's feedback (None outside the loop).
        checker_score: the checker's score of the action (None when it gave none).
        hindsight: whether the action was fine in hindsight (CMAT loop only).
    """

    action: str
    observation: str
    reward: float
    parsed_action: dict[str, Any] | None = None
    error: str | None = None
    checker_verdict: str | None = None
    checker_feedback: str | None = None
    checker_score: float | None = None
    hindsight: bool | None = None

    @classmethod
    def from_info(cls, action: Any, observation: str, reward: float, info: dict[str, Any]) -> Step:
        """The step from ``env.step``'s return values."""
        score = info.get("checker_score")
        hindsight = info.get("hindsight")
        return cls(
            action=action if isinstance(action, str) else repr(action), observation=observation,
            reward=float(reward), parsed_action=info.get("parsed_action"), error=info.get("error"),
            checker_verdict=info.get("checker_verdict"), checker_feedback=info.get("checker_feedback"),
            checker_score=None if score is None else float(score),
            hindsight=None if hindsight is None else bool(hindsight),
        )


@dataclass
class Trajectory:
    """One recorded episode (see the module docstring); :meth:`row` is its dataset row.

    Attributes:
        domain, task_id, split, difficulty: the task played.
        seed: the episode's reset seed.
        system_prompt: the system message of :meth:`messages`.
        tools: the domain's tool schemas.
        observation: the reset observation.
        cmat: whether the episode ran through the CMAT loop.
        steps: the steps, in order.
    """

    domain: str
    task_id: str
    split: str
    difficulty: int
    seed: int
    system_prompt: str
    tools: list[dict[str, Any]]
    observation: str
    cmat: bool = False
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def start(cls, env: Any, policy: Any, observation: str, seed: int) -> Trajectory:
        """An empty trajectory of the episode ``env`` (bare domain env or CMAT loop) just reset to."""
        from cmat_gym.agents.prompts import assistant_system_prompt
        from cmat_gym.core.domain import domain_of_env

        unwrapped = env.unwrapped
        task = unwrapped.task
        grammar = domain_of_env(env).grammar
        system_prompt = getattr(policy, "system_prompt", None) or assistant_system_prompt(grammar)
        return cls(domain=task.domain, task_id=task.task_id, split=task.split, difficulty=int(task.difficulty),
                   seed=int(seed), system_prompt=system_prompt, tools=grammar.tool_schemas(),
                   observation=observation, cmat=hasattr(unwrapped, "domain_env"))

    def add(self, action: Any, observation: str, reward: float, info: dict[str, Any]) -> None:
        """Append the step ``env.step(action)`` returned."""
        self.steps.append(Step.from_info(action, observation, reward, info))

    def messages(self) -> list[dict[str, str]]:
        """The chat (see the module docstring): system, user, then assistant/user turns, ending on the
        assistant's last action."""
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": self.observation}]
        for i, step in enumerate(self.steps):
            messages.append({"role": "assistant", "content": step.action})
            if i + 1 < len(self.steps):
                messages.append({"role": "user", "content": step.observation})
        return messages

    def row(self, result: EpisodeResult, env_id: str = "", policy: str = "") -> dict[str, Any]:
        """The dataset row of this trajectory and its episode's ``result``."""
        steps = self.steps
        return {
            "env_id": env_id, "policy": policy, "domain": self.domain, "task_id": self.task_id,
            "split": self.split, "difficulty": self.difficulty, "seed": self.seed, "trial": result.trial,
            "cmat": self.cmat, "messages": self.messages(), "tools": json.dumps(self.tools),
            "actions": [s.action for s in steps],
            "observations": [self.observation, *(s.observation for s in steps)],
            "rewards": [s.reward for s in steps],
            "parsed_actions": [None if s.parsed_action is None else json.dumps(s.parsed_action, default=str)
                               for s in steps],
            "errors": [s.error for s in steps],
            "checker_verdicts": [s.checker_verdict for s in steps],
            "checker_feedback": [s.checker_feedback for s in steps],
            "checker_scores": [s.checker_score for s in steps],
            "hindsight": [s.hindsight for s in steps],
            "success": result.success, "score": result.score, "return": sum(s.reward for s in steps),
            "steps": len(steps), "truncated": result.truncated,
            "episode_metrics": None if result.cmat is None else json.dumps(result.cmat, default=str),
            "reflection": result.reflection,
        }


def features() -> Any:
    """The dataset's features (explicit, so that all-None columns and empty lists keep their types)."""
    datasets = require_datasets()
    string, lst = datasets.Value("string"), datasets.List
    return datasets.Features({
        "env_id": string, "policy": string, "domain": string, "task_id": string, "split": string,
        "difficulty": datasets.Value("int64"), "seed": datasets.Value("int64"), "trial": datasets.Value("int64"),
        "cmat": datasets.Value("bool"),
        "messages": lst({"role": string, "content": string}), "tools": string,
        "actions": lst(string), "observations": lst(string), "rewards": lst(datasets.Value("float64")),
        "parsed_actions": lst(string), "errors": lst(string), "checker_verdicts": lst(string),
        "checker_feedback": lst(string), "checker_scores": lst(datasets.Value("float64")),
        "hindsight": lst(datasets.Value("bool")),
        "success": datasets.Value("bool"), "score": datasets.Value("float64"), "return": datasets.Value("float64"),
        "steps": datasets.Value("int64"), "truncated": datasets.Value("bool"), "episode_metrics": string,
        "reflection": string,
    })


def to_dataset(results: Sequence[EpisodeResult], *, env_id: str = "", policy: str = "") -> Any:
    """The recorded episodes of ``results`` as a ``datasets.Dataset`` (one row each, in order).

    Raises ValueError when a result has no trajectory (it was not played with ``record=True``).
    """
    missing = [i for i, r in enumerate(results) if r.trajectory is None]
    if missing:
        raise ValueError(f"Expects every result recorded (run_episodes(..., record=True)), actual "
                         f"{len(missing)} without a trajectory (first: episode {missing[0]})")
    rows = [r.trajectory.row(r, env_id, policy) for r in results]  # type: ignore[union-attr]
    return require_datasets().Dataset.from_list(rows, features=features())


def save_trajectories(
    results: Sequence[EpisodeResult], path: str | os.PathLike[str], *, env_id: str = "", policy: str = ""
) -> Path:
    """Save the recorded episodes of ``results`` to the folder ``path`` (``datasets.load_from_disk`` reads it).

    Durable: the dataset is written to a temporary folder beside ``path`` and renamed into place, so a
    killed run leaves the old folder or the new one, never half of one; an existing ``path`` is replaced.
    """
    dataset = to_dataset(results, env_id=env_id, policy=policy)
    final = Path(path).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private (0700); the dataset is for sharing
    try:
        dataset.save_to_disk(str(tmp))
        replace_dir(tmp, final)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_trajectories(path: str | os.PathLike[str], *, successful_only: bool = False) -> Any:
    """The dataset saved at ``path`` (``datasets.load_from_disk``), only its successful episodes if asked."""
    dataset = require_datasets().load_from_disk(str(path))
    if successful_only:
        dataset = dataset.filter(lambda success: success, input_columns="success")
    return dataset


def require_datasets() -> Any:
    """The ``datasets`` module; ImportError with a one-line install hint when it is missing."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(MISSING_DATASETS) from exc
    return datasets
