"""Building blocks shared by the training algorithms.

* :mod:`algorithms.common.ppo_core` - the math of multi-turn token-level PPO (masked GAE across
  observation spans, clipped policy/value losses, KL-shaped token rewards, value head, log-probabilities).

Nothing is imported here, so that ``import algorithms.common.<module>`` does not pull in torch.
"""
