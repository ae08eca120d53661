"""Policies that act in cmat-gym environments.

The light policies (oracle, random) and the registry import nothing heavy; model-backed policies
live in their own modules and import torch only when built (see :data:`POLICIES`).
"""

from cmat_gym.agents.policies import POLICIES, OraclePolicy, Policy, RandomPolicy, make_policy

__all__ = ["POLICIES", "OraclePolicy", "Policy", "RandomPolicy", "make_policy"]
