"""The operating-system domain: ``cmat/OS-v0`` (and ``cmat/OS-CMAT-v0``, PettingZoo ``cmat/OS-v0``).

AgentBench's OS-interaction tasks in a bubblewrap sandbox (see :mod:`cmat_gym.domains.os.backend`).
"""

from __future__ import annotations

import random
import re
import shlex

from cmat_gym.core.domain import AgentBenchSplit, Domain, register_domain
from cmat_gym.domains.os.checker import OSHooks
from cmat_gym.domains.os.env import GRAMMAR, OSEnv

_PATH_WORD = re.compile(r"^/?[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
_SAFE = (
    "ls",
    "ls -la",
    "pwd",
    "whoami",
    "id",
    "ls -la /root",
    "ls /home",
    "ps aux | head -n 20",
    "df -h /root",
    "cat /etc/os-release",
    "find /root -maxdepth 2 | head -n 20",
    "ls -la /tmp",
    "getent passwd | wc -l",
)


def random_shell_action(rng: random.Random, words: list[str], first_observation: str) -> str:
    """A random harmless command (RandomPolicy): a fixed safe command, or ``cat``/``wc``/``ls``/``grep``
    on a word seen in the observations. It runs in the episode's sandbox like any action."""
    paths = [w for w in words if _PATH_WORD.match(w)]
    roll = rng.random()
    if paths and roll < 0.5:
        word = shlex.quote(rng.choice(paths))
        template = rng.choice(
            (
                "cat {} | head -n 20",
                "wc -l {}",
                "ls -la {}",
                "grep -rn {} /root | head -n 10",
                "head -c 200 {}",
                "stat {}",
            )
        )
        command = template.format(word)
    else:
        command = rng.choice(_SAFE)
    if rng.random() < 0.5:
        return GRAMMAR.call("bash", command)
    return GRAMMAR.call_json("bash", command=command)


DOMAIN = register_domain(
    Domain(
        name="os",
        title="OS",
        env_class=OSEnv,
        hooks=OSHooks,
        random_action=random_shell_action,
        user_reply="Please proceed with the task using the shell.",
        agentbench=AgentBenchSplit("os_interaction/dev.json", "os dev"),
        tags=("bubblewrap",),
    )
)

__all__ = ["DOMAIN", "GRAMMAR", "OSEnv", "random_shell_action"]
