"""Contracts shared by every domain: Task, the TextEnv base, action parsing, text spaces."""

from cmat_gym.core.actions import ActionError, Grammar, ParsedAction, parse_action, parse_answer_list
from cmat_gym.core.env import PROCEDURAL, Evaluation, TextEnv, render_transcript
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import SPLITS, Task
from cmat_gym.core.text import CHARSET, sanitize, text_space

__all__ = [
    "CHARSET", "PROCEDURAL", "SPLITS", "ActionError", "Evaluation", "Grammar", "ParsedAction",
    "StableRandom", "Task", "TextEnv", "parse_action", "parse_answer_list", "render_transcript",
    "sanitize", "text_space",
]
