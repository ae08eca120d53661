"""The Web rule checker (gold-free review of a shop action before it runs) and hindsight hooks.

:class:`WebRuleChecker` reads the public task (the instruction), the live page and the episode's
earlier searches, never the goal. It rejects, with feedback that names the fix:

1. a malformed action (the parser's message);
2. clicking what the page does not show, or searching where there is no search bar (the page's
   clickables are listed);
3. a search repeated word for word in the same episode (it shows nothing new: page with
   ``Next >``, or search other words);
4. ``Buy Now`` before an option of every name is chosen (which ones are missing);
5. ``Buy Now`` of an item whose price is above the instruction's bound ("price lower than X dollars").

Everything else is approved (score 0.8; a purchase that passes every rule, 0.9).

:class:`WebHooks` give the loop its hindsight, from the reward a purchase would get now (the shop's
``quote``, which reads the goal: a training signal, never shown to a checker): an executed action
was fine unless it was invalid, or it chose an option value that scores below another value of the
same option (the *reward delta* against the best choice); a rejected one is judged the same way
without effects (each value is quoted, nothing is clicked; a repeated search counts as not fine: it
shows nothing new). ``snapshot`` keeps the reward before the action, for callers that log deltas.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cmat_gym.core.actions import ANSWER, ActionError, ParsedAction
from cmat_gym.core.checking import Checker, DomainHooks, Turn, Verdict, parsed_or_parse
from cmat_gym.core.task import Task
from cmat_gym.domains.web.env import WebEnv, element_name, normalize_query

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv

_PRICE_BOUND = re.compile(r"price lower than (\d+(?:\.\d+)?) dollars", re.IGNORECASE)
_PRICE = re.compile(r"^Price: \$(\d+(?:\.\d+)?)$")


def price_bound(instruction: str) -> float | None:
    """The price bound an instruction states, or None."""
    match = _PRICE_BOUND.search(instruction)
    return float(match.group(1)) if match else None


class WebRuleChecker(Checker):
    """Gold-free rules for WebShop actions (see the module docstring)."""

    name = "rule"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        parsed = parsed_or_parse(action, env, parsed)
        if isinstance(parsed, ActionError):
            return Verdict(False, f"malformed action: {parsed.message}", 0.0)
        if not isinstance(env, WebEnv):
            return Verdict(True, "", 0.5)  # no page to check against
        reason = env.invalid_reason(parsed)
        if reason is not None:
            return Verdict(False, reason, 0.0)
        if parsed.tool == "search":
            query = normalize_query(str(parsed.args["query"]))
            if query in env.searches:
                return Verdict(False, f"you already searched '{query}': click Next > for more results, or "
                                      "search other words", 0.1)
            return Verdict(True, "", 0.8)
        if parsed.kind == ANSWER:
            page = env.page
            missing = [name for name in page.option_groups() if name not in page.selected_options()]
            if missing:
                return Verdict(False, f"choose the {' and '.join(missing)} first (click one of its values)", 0.1)
            bound = price_bound(task.instruction)
            price = next((float(m.group(1)) for e in page.elements if (m := _PRICE.match(e.text))), None)
            if bound is not None and price is not None and price > bound:
                return Verdict(False, f"this item costs ${price:.2f}, above the ${bound:.2f} the instruction allows: "
                                      "go back and pick a cheaper one", 0.1)
            return Verdict(True, "", 0.9)
        return Verdict(True, "", 0.8)


class WebHooks(DomainHooks):
    """The Web domain's rule checker and hindsight (see the module docstring)."""

    def rule_checker(self) -> Checker:
        return WebRuleChecker()

    def snapshot(self, env: TextEnv, action: ParsedAction) -> Any:
        return _quote(env)

    def executed_ok(self, env: TextEnv, action: ParsedAction, observation: str, snapshot: Any) -> bool | None:
        if observation.startswith("Error"):
            return False
        if action.tool == "click" and observation.startswith("You have clicked") and isinstance(env, WebEnv):
            option = _option(env, action)
            return option is None or _best_choice(env, *option)
        return True

    def dry_run_ok(self, env: TextEnv, action: ParsedAction) -> bool | None:
        if not isinstance(env, WebEnv) or env.invalid_reason(action) is not None:
            return False
        if action.tool == "search":
            return normalize_query(str(action.args["query"])) not in env.searches
        option = _option(env, action)
        return option is None or _best_choice(env, *option)


def _quote(env: TextEnv) -> float:
    return env.quote()[0] if isinstance(env, WebEnv) else 0.0


def _option(env: WebEnv, action: ParsedAction) -> tuple[str, str, list[str]] | None:
    """(name, value, every value of that name) when ``action`` clicks an option of the page."""
    wanted = element_name(action).lower()
    for name, elements in env.page.option_groups().items():
        for element in elements:
            if element.text.lower() == wanted:
                return name, element.text, [e.text for e in elements]
    return None


def _best_choice(env: WebEnv, name: str, value: str, values: list[str]) -> bool:
    """Whether choosing ``value`` for ``name`` scores as well as the best value of that name would
    (the reward delta against the best alternative: a wrong value is not fine even when nothing was
    chosen before)."""
    scores = {v: env.quote({name: v})[0] for v in values}
    return scores[value] >= max(scores.values())
