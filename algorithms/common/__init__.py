"""Building blocks shared by the training algorithms.

* :mod:`algorithms.common.ppo_core` - the math of multi-turn token-level PPO (masked GAE across
  observation spans, clipped policy/value losses, KL-shaped token rewards, value head, log-probabilities).
* :mod:`algorithms.common.rollout` - multi-turn token-level rollouts through the CMAT loop.
* :mod:`algorithms.common.script` - the scripts' command line (argparse from an ``Args`` dataclass) and
  ``derive_seed``.

Nothing is imported here, so that ``import algorithms.common.<module>`` does not pull in torch.
"""
