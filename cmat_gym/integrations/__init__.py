"""Adapters from cmat-gym's environments to other libraries' training loops (:mod:`cmat_gym.integrations.trl`)."""
