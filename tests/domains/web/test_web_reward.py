"""WebShop's reward on our catalogue: fuzzy matching as fuzzywuzzy's, and each term of the formula."""

from __future__ import annotations

from cmat_gym.domains.web.catalogue import catalogue, products_by_asin
from cmat_gym.domains.web.reward import ratio, token_set_ratio, webshop_reward
from cmat_gym.domains.web.tasks import generate_task


def test_fuzzy_scores_match_fuzzywuzzy_examples() -> None:
    # fuzzywuzzy's README: token_set_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 100
    assert token_set_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 100
    assert ratio("this is a test", "this is a test!") == 97  # README: fuzz.ratio -> 97
    assert token_set_ratio("gluten free", "Gluten-Free") == 100
    assert token_set_ratio("low sugar", "sugar free") < 85
    assert token_set_ratio("", "x") == 0


def test_gold_purchase_scores_one_and_each_miss_costs_its_share() -> None:
    task = generate_task(3, "train", 3)
    goal = task.payload
    gold = products_by_asin()[goal["asin"]]
    n = len(goal["attributes"]) + len(goal["goal_options"]) + 1
    assert webshop_reward(gold, goal, goal["goal_options"])[0] == 1.0
    # one option wrong: one share lost
    name = next(iter(goal["goal_options"]))
    wrong = next(v for v in gold.options[name] if v != goal["goal_options"][name])
    reward, parts = webshop_reward(gold, goal, {**goal["goal_options"], name: wrong})
    assert parts["options_matched"] == len(goal["goal_options"]) - 1 and reward == (n - 1) / n
    # no option chosen: every option share lost
    assert webshop_reward(gold, goal, {})[0] == (n - len(goal["goal_options"])) / n
    # over the budget: the price share lost
    reward, parts = webshop_reward(gold, {**goal, "price_upper": gold.price - 1}, goal["goal_options"])
    assert not parts["price_ok"] and reward == (n - 1) / n


def test_type_reward_zero_for_an_unrelated_product() -> None:
    goal = generate_task(0, "train", 1).payload
    gold = products_by_asin()[goal["asin"]]
    other = next(p for p in catalogue() if p.category.split(" › ")[0] != gold.category.split(" › ")[0]
                 and not set(p.nouns) & set(goal["nouns"]))
    reward, parts = webshop_reward(other, goal, {})
    assert parts["r_type"] == 0.0 and reward == 0.0


def test_same_type_other_product_keeps_type_reward() -> None:
    goal = generate_task(1, "train", 2).payload
    other = next(p for p in catalogue() if p.query == goal["query"] and p.asin != goal["asin"])
    _, parts = webshop_reward(other, goal, {})
    assert parts["r_type"] == 1.0 and parts["query_match"]
