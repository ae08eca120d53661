"""cmat-gym: agent tasks as Gymnasium / PettingZoo environments, and the CMAT loop around them.

``import cmat_gym`` registers every environment, after which ``gym.make("cmat/DB-v0")`` works
(Gymnasium 1.x loads no plugins by itself; ``gym.register_envs(cmat_gym)`` keeps linters from
calling the import unused, and ``gym.make("cmat_gym:cmat/DB-v0")`` imports the package itself).
"""

from cmat_gym.core import Evaluation, Task, TextEnv
from cmat_gym.registration import register_envs

__version__ = "0.1.0"
__all__ = ["Evaluation", "Task", "TextEnv", "__version__", "register_envs"]

register_envs()
