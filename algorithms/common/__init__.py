"""Building blocks shared by the training algorithms.

* :mod:`algorithms.common.ppo_core` - the math of multi-turn token-level PPO (masked GAE across
  observation spans, clipped policy/value losses, KL-shaped token rewards, value head, log-probabilities).
* :mod:`algorithms.common.rollout` - multi-turn token-level rollouts through the CMAT loop.
* :mod:`algorithms.common.script` - the scripts' command line (argparse from an ``Args`` dataclass),
  ``derive_seed`` and ``EVAL_SEED``.
* :mod:`algorithms.common.checkpoint` - atomic writes of run artefacts (files, folders, the peft adapter).
* :mod:`algorithms.common.metrics` - ``metrics.jsonl`` / ``eval.jsonl`` rows and the learning-curve plot.

Nothing is imported here, so that ``import algorithms.common.<module>`` does not pull in torch.
"""
