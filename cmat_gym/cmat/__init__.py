"""The CMAT loop: User, Assistant and Checker roles around any domain env, with memory.

Two forms: the PettingZoo env (every role is an agent; :mod:`cmat_gym.cmat.pettingzoo_env`) and
the single-agent Gymnasium wrapper (only the Assistant acts; :func:`make_cmat`). See docs/cmat.md.
"""

from cmat_gym.cmat.checkers import (
    Checker,
    DomainHooks,
    LLMChecker,
    NoChecker,
    RewardModel,
    RewardModelChecker,
    Verdict,
    make_checker,
    parse_verdict,
)
from cmat_gym.cmat.memory import ReflectionStore, ShortTermMemory, format_reflections, template_reflection
from cmat_gym.cmat.pettingzoo_env import CMATParallelEnv, env, parallel_env, raw_env
from cmat_gym.cmat.roles import LLMUser, ScriptedUser, User, parse_question
from cmat_gym.cmat.wrapper import CMATEnv, make_cmat

__all__ = [
    "CMATEnv", "CMATParallelEnv", "Checker", "DomainHooks", "LLMChecker", "LLMUser", "NoChecker",
    "ReflectionStore", "RewardModel", "RewardModelChecker", "ScriptedUser", "ShortTermMemory", "User",
    "Verdict", "env", "format_reflections", "make_checker", "make_cmat", "parallel_env", "parse_question",
    "parse_verdict", "raw_env", "template_reflection",
]
