"""cmat-gym: agent tasks as Gymnasium / PettingZoo environments, and the CMAT loop around them.

``import cmat_gym`` registers every environment, after which ``gym.make("cmat/DB-v0")`` works
(Gymnasium 1.x loads no plugins by itself; ``gym.register_envs(cmat_gym)`` keeps linters from
calling the import unused, and ``gym.make("cmat_gym:cmat/DB-v0")`` imports the package itself).
"""

from cmat_gym.core import Domain, Evaluation, Task, TextEnv, get_domain, register_domain, registered_domains
from cmat_gym.registration import register_envs

__version__ = "0.1.0"
__all__ = ["Domain", "Evaluation", "Task", "TextEnv", "__version__", "get_domain", "register_domain",
           "register_envs", "registered_domains"]

register_envs()
