"""The conformance suite (tests/env_suite.py) over every registered domain: a new domain folder is
covered the moment its ``register_domain(...)`` call runs."""

from __future__ import annotations

import gymnasium as gym
import pettingzoo
import pytest
from env_suite import check_agents, check_garbage_actions, check_gymnasium, check_pettingzoo

import cmat_gym
from cmat_gym.core.domain import Domain, domain_of_env, registered_domains

DOMAINS = registered_domains()
ids = [d.title for d in DOMAINS]


def test_every_domain_folder_registered_something() -> None:
    assert DOMAINS, "no domain registered"
    for domain in DOMAINS:
        assert domain.env_id in gym.registry and domain.cmat_env_id in gym.registry
        assert domain.env_id in pettingzoo.aec_registry and domain.env_id in pettingzoo.parallel_registry
        assert domain_of_env(domain.env_id) is domain is domain_of_env(domain.cmat_env_id)
        assert gym.spec(domain.env_id).kwargs["max_rounds"] == domain.max_rounds


@pytest.mark.parametrize("domain", DOMAINS, ids=ids)
def test_gymnasium_check_env(domain: Domain) -> None:
    check_gymnasium(domain)


@pytest.mark.parametrize("domain", DOMAINS, ids=ids)
def test_pettingzoo_conformance(domain: Domain) -> None:
    check_pettingzoo(domain)


@pytest.mark.parametrize("domain", DOMAINS, ids=ids)
def test_garbage_actions_are_observations(domain: Domain) -> None:
    check_garbage_actions(domain)


@pytest.mark.parametrize("domain", DOMAINS, ids=ids)
def test_oracle_and_random_agents(domain: Domain) -> None:
    check_agents(domain)


def test_register_envs_is_idempotent() -> None:
    before = {k for k in gym.registry if k.startswith("cmat/")}
    cmat_gym.register_envs()
    cmat_gym.register_envs()
    assert {k for k in gym.registry if k.startswith("cmat/")} == before
