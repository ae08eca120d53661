"""The SQL database domain: ``cmat/DB-v0`` (and ``cmat/DB-CMAT-v0``, PettingZoo ``cmat/DB-v0``)."""

from cmat_gym.core.domain import AgentBenchSplit, Domain, register_domain
from cmat_gym.domains.db.agentbench import dbbench_headline
from cmat_gym.domains.db.checker import DBHooks
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.domains.db.policies import flawed_sql_action, random_sql_action

DOMAIN = register_domain(Domain(
    name="db",
    title="DB",
    env_class=DBEnv,
    hooks=DBHooks,
    random_action=random_sql_action,
    flawed_action=flawed_sql_action,
    user_reply="Please proceed with the task using the database.",
    agentbench=AgentBenchSplit("dbbench/dev.jsonl", "dbbench dev", dbbench_headline,
                               "overall_cat_accuracy: mean of the SELECT, INSERT and UPDATE accuracies"),
    tags=("sqlite",),
))

__all__ = ["DOMAIN", "DBEnv"]
