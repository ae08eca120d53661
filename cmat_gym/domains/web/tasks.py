"""WebShop-style instructions over the generated catalogue: a gold product, attributes, options and a
price bound, drawn deterministically from (seed, split, difficulty).

As in WebShop's synthetic goals, an instruction names some of the gold product's attributes and a
value for every one of its options, and ends with ``", and price lower than X dollars"`` where X is
a multiple of 10 above the gold price (WebShop: the larger of two of the four nearest multiples).

Difficulty (1-3) sets how many attributes the instruction names (1, 2, 3) and how crowded the shelf
is: a *distractor* is a product of the same type that has some but not all of the named attributes,
or all of them but a price above the bound; level 3 asks for at least 12 of them and the tightest
price bound (the nearest multiple of 10), level 2 for at least 6. Train and test are disjoint by
instruction (:func:`cmat_gym.core.procedural.first_in_split`).
"""

from __future__ import annotations

from typing import Any

from cmat_gym.core.procedural import first_in_split, make_task_id, parse_task_id
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import Task
from cmat_gym.domains.web.catalogue import TYPES, Product, catalogue

DOMAIN = "web"
PRICE_RANGE = [10.0 * i for i in range(1, 100)]
MIN_DISTRACTORS = {1: 0, 2: 6, 3: 12}
CONTEXT = ("You are shopping on WebShop. Actions: search[keywords] on a page with a search bar, "
           "click[element] for one of the page's clickables (product ids, options, Back to Search, "
           "< Prev, Next >, Description, Features, Reviews, Buy Now). Buy Now on an item page buys it and "
           "ends the episode.")
_OPENERS = ("i need", "i am looking for", "i want to buy", "find me", "i'm searching for", "get me")


def _distractors(gold: Product, attributes: list[str], price_upper: float) -> int:
    wanted = set(attributes)
    count = 0
    for product in catalogue():
        if product.query != gold.query or product.asin == gold.asin:
            continue
        shared = len(wanted & set(product.attributes))
        if 0 < shared < len(wanted) or (shared == len(wanted) and product.price > price_upper):
            count += 1
    return count


def draw_goal(rng: StableRandom, difficulty: int) -> dict[str, Any] | None:
    """One candidate goal (the task payload), or None when this draw cannot make the difficulty."""
    kind = rng.choice(TYPES)
    start = TYPES.index(kind) * (len(catalogue()) // len(TYPES))
    gold = catalogue()[start + rng.randbelow(len(catalogue()) // len(TYPES))]
    if len(gold.attributes) < difficulty:
        return None
    attributes = sorted(rng.sample(gold.attributes, difficulty))
    goal_options = {name: rng.choice(values) for name, values in gold.options.items()}
    above = [p for p in PRICE_RANGE if p > gold.price][:4]
    if difficulty == 3 or len(above) < 2:
        price_upper = above[0]
    else:
        price_upper = max(rng.sample(above, 2))
    distractors = _distractors(gold, attributes, price_upper)
    if distractors < MIN_DISTRACTORS[difficulty]:
        return None
    option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
    instruction = (f"{rng.choice(_OPENERS)} {' '.join(attributes)} {kind.name}"
                   f"{' with ' + option_text if option_text else ''}, and price lower than {price_upper:.2f} dollars")
    return {"instruction": instruction, "asin": gold.asin, "title": gold.title, "query": gold.query,
            "category": gold.category, "nouns": list(gold.nouns), "attributes": attributes,
            "goal_options": goal_options, "price_upper": price_upper, "distractors": distractors}


def generate_task(seed: int, split: str, difficulty: int) -> Task:
    """The procedural Web task named by (seed, split, difficulty)."""
    goal = first_in_split(DOMAIN, seed, split, difficulty, lambda rng: draw_goal(rng, difficulty),
                          lambda g: g["instruction"])
    instruction = goal.pop("instruction")
    return Task(DOMAIN, make_task_id(DOMAIN, seed, split, difficulty), instruction, CONTEXT, goal, split, difficulty)


def task_from_id(task_id: str) -> Task:
    """The procedural task a ``web/<split>/d<difficulty>/<seed>`` id names."""
    return generate_task(*parse_task_id(DOMAIN, task_id))
