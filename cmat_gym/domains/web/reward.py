"""WebShop's reward, exactly (``web_agent_site/engine/goal.py``), on our catalogue.

    reward = r_type * (matched attributes + matched options + [price <= price_upper])
                    / (goal attributes + goal options + 1)

* **r_type** (is it the right kind of product): 1.0 when the purchased product's ``query`` equals the
  goal's, or at least two category levels are shared, or more than 20% of the goal title's nouns
  are in the purchased title; else 0.5; then 0.1 when that noun share is below 0.1 and 0.0 when it
  is 0. WebShop tags nouns with spaCy; our titles are generated, so the generator's own noun list
  (brand + type nouns, :attr:`Product.nouns`) stands in for the tagger.
* **attributes**: a goal attribute matches when some purchased attribute has a fuzzy score above 85
  (``token_set_ratio``), else when it appears in the title, bullet points or description.
* **options**: each *purchased* option matches when its value equals a goal option (``size``: exact
  match only), or scores above 85 against one, or appears in the title, bullets or description.
* **price**: 1 when the price is at most the goal's ``price_upper``.

The one departure: the total is capped at 1 (see :func:`webshop_reward`).

Fuzzy matching is fuzzywuzzy's ``token_set_ratio`` (the words of each side, the shared words sorted,
then the best of three ``ratio``\\ s: shared vs shared+rest-of-a, shared vs shared+rest-of-b,
rest-of-a vs rest-of-b) with ``ratio`` = ``round(100 * difflib.SequenceMatcher.ratio())``, which is
fuzzywuzzy's pure-Python ratio (thefuzz computes the same Indel similarity with rapidfuzz; the two
agree except on rare strings where difflib's block matching misses the longest common subsequence).
WebShop's colour normalisation (``normalize_color``) is a table for Amazon's colour names; ours are
already plain, so values are only lower-cased and stripped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from cmat_gym.domains.web.catalogue import SEP_CATEGORY, Product

EXACT_MATCH_OPTS = ("size",)
FUZZY_THRESHOLD = 85
_NON_WORD = re.compile(r"\W+")


def ratio(a: str, b: str) -> int:
    """fuzzywuzzy's ``ratio``: 0-100 similarity of two strings."""
    if not a and not b:
        return 100
    return round(100 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())


def token_set_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's ``token_set_ratio`` (see the module docstring); 0 when either side has no words."""
    ta = set(_NON_WORD.sub(" ", a.lower()).split())
    tb = set(_NON_WORD.sub(" ", b.lower()).split())
    if not ta or not tb:
        return 0
    shared = " ".join(sorted(ta & tb))
    rest_a = " ".join(sorted(ta - tb))
    rest_b = " ".join(sorted(tb - ta))
    with_a = f"{shared} {rest_a}".strip()
    with_b = f"{shared} {rest_b}".strip()
    return max(ratio(shared, with_a), ratio(shared, with_b), ratio(with_a, with_b))


def _in_text(value: str, product: Product) -> bool:
    return (value in product.title.lower() or value in " ".join(product.features).lower()
            or value in product.description.lower())


def type_reward(purchased: Product, goal: Mapping[str, Any]) -> dict[str, Any]:
    """WebShop's ``get_type_reward``: ``r_type`` and the facts behind it."""
    query_match = purchased.query == goal["query"]
    purchased_category = {x.strip() for x in purchased.category.split(SEP_CATEGORY.strip())}
    goal_category = {x.strip() for x in str(goal["category"]).split(SEP_CATEGORY.strip())}
    category_match = len(purchased_category & goal_category) >= 2
    desired = set(goal["nouns"])
    title_score = len(set(purchased.nouns) & desired) / len(desired) if desired else 0.2
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def attribute_matches(purchased: Product, goal_attributes: list[str]) -> int:
    """How many goal attributes the purchased product has (fuzzy, then in its text)."""
    matches = 0
    for g_attr in goal_attributes:
        if any(token_set_ratio(p_attr, g_attr) > FUZZY_THRESHOLD for p_attr in purchased.attributes):
            matches += 1
        elif _in_text(g_attr, purchased):
            matches += 1
    return matches


def option_matches(purchased: Product, goal_options: list[str], chosen: Mapping[str, str]) -> int:
    """How many of the purchased options match a goal option (WebShop's ``get_option_reward``)."""
    goal_values = [v.strip().lower() for v in goal_options]
    matches = 0
    for name, value in chosen.items():
        value = value.strip().lower()
        if name.lower() in EXACT_MATCH_OPTS:
            matched = value in goal_values
        else:
            matched = any(token_set_ratio(g, value) > FUZZY_THRESHOLD for g in goal_values)
        if matched or _in_text(value, purchased):
            matches += 1
    return matches


def webshop_reward(purchased: Product, goal: Mapping[str, Any], chosen: Mapping[str, str]) -> tuple[float, dict[str, Any]]:
    """The reward of buying ``purchased`` with options ``chosen`` for ``goal`` (a task payload with
    ``query``, ``category``, ``nouns``, ``attributes``, ``goal_options`` and ``price_upper``), and its parts."""
    types = type_reward(purchased, goal)
    attributes = list(goal["attributes"])
    goal_options = list(dict(goal["goal_options"]).values())
    price_ok = purchased.price <= float(goal["price_upper"])
    n_attr = attribute_matches(purchased, attributes)
    n_opt = option_matches(purchased, goal_options, chosen)
    total = (n_attr + n_opt + int(price_ok)) / (len(attributes) + len(goal_options) + 1) * types["r_type"]
    # WebShop counts matches per *purchased* option, so a product with more option names than the goal
    # could pass 1; the reward space is [0, 1], so it is capped (never reached by a same-type product).
    total = min(1.0, total)
    return total, {**types, "attributes_matched": n_attr, "attributes": len(attributes), "options_matched": n_opt,
                   "options": len(goal_options), "price_ok": price_ok, "price": purchased.price,
                   "price_upper": float(goal["price_upper"])}
