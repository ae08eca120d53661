"""Training algorithms for language-model agents in the ``cmat_gym`` environments.

Subpackages are imported explicitly (``from algorithms.common import ppo_core``); importing ``algorithms``
itself loads nothing heavy, so the environments work without the ``train`` extras (torch, transformers).
"""
