"""Contracts shared by every domain: Task, the TextEnv base, the tool grammar, checker contracts,
answer scoring, procedural-task helpers, and the domain record with its registry."""

from cmat_gym.core.actions import (
    ANSWER,
    OPERATION,
    ActionError,
    Arg,
    BlockProtocol,
    CallProtocol,
    Grammar,
    ParsedAction,
    Tool,
    parse_action,
    parse_answer_list,
)
from cmat_gym.core.checking import Checker, DomainHooks, NoChecker, ReviewRequest, Verdict
from cmat_gym.core.domain import (
    AgentBenchSplit,
    Domain,
    domain_of_env,
    get_domain,
    register_domain,
    registered_domains,
    unregister_domain,
)
from cmat_gym.core.env import PROCEDURAL, Evaluation, TextEnv, render_transcript
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import SPLITS, Task
from cmat_gym.core.text import CHARSET, sanitize, text_space

__all__ = [
    "ANSWER", "CHARSET", "OPERATION", "PROCEDURAL", "SPLITS", "ActionError", "AgentBenchSplit", "Arg",
    "BlockProtocol", "CallProtocol", "Checker", "Domain", "DomainHooks", "Evaluation", "Grammar", "NoChecker",
    "ParsedAction", "ReviewRequest", "StableRandom", "Task", "TextEnv", "Tool", "Verdict", "domain_of_env",
    "get_domain", "parse_action", "parse_answer_list", "register_domain", "registered_domains", "render_transcript",
    "sanitize", "text_space", "unregister_domain",
]
