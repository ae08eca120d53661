"""Web tasks: deterministic, train/test disjoint, difficulty as documented, and the oracle scores
1.0 on every generated task (many seeds, both splits, all difficulties)."""

from __future__ import annotations

import pytest

from cmat_gym.core.procedural import instruction_split
from cmat_gym.domains.web.catalogue import catalogue, products_by_asin
from cmat_gym.domains.web.env import WebEnv
from cmat_gym.domains.web.tasks import MIN_DISTRACTORS, generate_task, task_from_id


def test_catalogue_is_deterministic_with_unique_titles_and_ids() -> None:
    products = catalogue()
    assert len(products) == 1320
    assert len({p.title for p in products}) == len(products) == len({p.asin for p in products})
    for p in products:  # no product text names one of its own option values (see catalogue's docstring)
        text = (p.title + " ".join(p.features) + p.description).lower()
        assert not any(v in text for values in p.options.values() for v in values), p


def test_tasks_are_deterministic_and_ids_round_trip() -> None:
    a, b = generate_task(5, "train", 2), generate_task(5, "train", 2)
    assert a == b and task_from_id(a.task_id) == a
    assert a.task_id == "web/train/d2/5"
    assert generate_task(6, "train", 2) != a


def test_splits_are_disjoint_by_instruction() -> None:
    train = {generate_task(s, "train", d).instruction for s in range(60) for d in (1, 2, 3)}
    test = {generate_task(s, "test", d).instruction for s in range(60) for d in (1, 2, 3)}
    assert not train & test
    assert all(instruction_split(i) == "train" for i in train) and all(instruction_split(i) == "test" for i in test)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_difficulty_sets_attribute_count_distractors_and_price_bound(difficulty: int) -> None:
    for seed in range(30):
        task = generate_task(seed, "train", difficulty)
        goal = task.payload
        gold = products_by_asin()[goal["asin"]]
        assert len(goal["attributes"]) == difficulty and set(goal["attributes"]) <= set(gold.attributes)
        assert set(goal["goal_options"]) == set(gold.options)
        assert all(goal["goal_options"][k] in gold.options[k] for k in gold.options)
        assert goal["distractors"] >= MIN_DISTRACTORS[difficulty]
        assert gold.price < goal["price_upper"] and goal["price_upper"] % 10 == 0
        if difficulty == 3:  # the tightest bound: the first multiple of 10 above the price
            assert goal["price_upper"] - gold.price < 10
        assert f"price lower than {goal['price_upper']:.2f} dollars" in task.instruction
        for value in goal["goal_options"].values():
            assert value in task.instruction


def test_oracle_scores_one_on_every_generated_task() -> None:
    env = WebEnv()
    played = 0
    for split in ("train", "test"):
        for difficulty in (1, 2, 3):
            for seed in range(70):
                env.reset(options={"task": generate_task(seed, split, difficulty)})
                for action in WebEnv.oracle_actions(env.task):
                    _, reward, terminated, truncated, info = env.step(action)
                assert terminated and not truncated, (env.task.task_id, info)
                assert reward == 1.0 and info["success"] and info["dense_score"] == 1.0, (env.task.task_id, info)
                played += 1
    env.close()
    assert played == 420
