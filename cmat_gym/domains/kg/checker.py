"""The KG rule checker and hindsight hooks.

:class:`KGRuleChecker` is gold-free: it reads the live env's state (bound variables, the question's
entity names, the store's relations), never the task payload's answer or actions. It rejects

1. a malformed action (the parser's message);
2. a call the env would refuse (:meth:`~cmat_gym.domains.kg.env.KGEnv.check_call`, the same code
   the env runs, so checker and env never disagree): an unbound variable, an unknown entity, a
   relation or attribute the entity or variable does not have (with the closest valid names,
   difflib), an intersection of variables of different types, a count used as a set;
3. a call whose dry run (the same call, nothing bound) lists no relations or attributes, or would
   bind a variable with no entities (an intersection of disjoint sets: a wrong path);
4. a final answer naming a variable never bound, or a variable that has no member.

:class:`KGHooks` gives the loop its hindsight: an executed call was fine when it ran, and a call
that lists relations/attributes listed some and one that binds a variable bound a non-empty set.
A KG call has no side effects, so a rejected call is judged by a dry run (nothing is bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cmat_gym.core.actions import ANSWER, ActionError, ParsedAction
from cmat_gym.core.checking import Checker, DomainHooks, Turn, Verdict, parsed_or_parse
from cmat_gym.core.task import Task
from cmat_gym.domains.kg.grammar import VARIABLE

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv


def _kg_env(env: Any) -> Any:
    inner = getattr(env, "unwrapped", env)
    return inner if hasattr(inner, "check_call") else None


class KGRuleChecker(Checker):
    """Gold-free review of a KG tool call or final answer (see the module docstring)."""

    name = "rule"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        parsed = parsed_or_parse(action, env, parsed)
        if isinstance(parsed, ActionError):
            return Verdict(False, parsed.message, 0.0)
        kg = _kg_env(env)
        if kg is None or kg.task is None:
            return Verdict(True, "", 0.5)
        if parsed.kind == ANSWER:
            return self._review_answer(kg, parsed)
        fine, text = kg.dry_run(parsed)
        if not fine:
            if "cannot be executed" in text:
                return Verdict(False, text, 0.1)
            what = "lists nothing" if parsed.tool in ("get_relations", "get_attributes") else \
                "would bind a variable with no entities"
            return Verdict(False, f"{parsed.tool}({', '.join(map(str, parsed.args.values()))}) {what}: take "
                                  "another relation or variable.", 0.2)
        return Verdict(True, "", 0.9)

    @staticmethod
    def _review_answer(kg: Any, parsed: ParsedAction) -> Verdict:
        answers = [str(a).strip() for a in parsed.value]
        unbound = kg.unbound(answers)
        if unbound:
            bound = f"#0 to #{len(kg.variables) - 1}" if kg.variables else "no variable yet"
            return Verdict(False, f"The final answer names {', '.join(unbound)}, which was never bound "
                                  f"(bound: {bound}).", 0.0)
        empty = [a for a in answers if (m := VARIABLE.fullmatch(a)) and kg.variables[int(m.group(1))].empty]
        if empty:
            return Verdict(False, f"The final answer names {', '.join(empty)}, which has no entities: go back to "
                                  "a non-empty variable or try another relation.", 0.1)
        if not answers:
            return Verdict(False, "The final answer is empty: name the variable that holds the answer "
                                  "(Final Answer: #n).", 0.0)
        return Verdict(True, "", 0.8 if kg.variables else 0.3)


class KGHooks(DomainHooks):
    """The KG rule checker, and hindsight from what a call returned (see the module docstring)."""

    def rule_checker(self) -> Checker:
        return KGRuleChecker()

    def executed_ok(self, env: TextEnv, action: ParsedAction, observation: str, snapshot: Any) -> bool | None:
        kg = _kg_env(env)
        if "cannot be executed" in observation or kg is None:
            return False
        if action.tool in ("get_relations", "get_attributes"):
            return not observation.rstrip().endswith("[]")
        return kg.last_bound is not None and not kg.last_bound.empty

    def dry_run_ok(self, env: TextEnv, action: ParsedAction) -> bool | None:
        kg = _kg_env(env)
        return None if kg is None else kg.dry_run(action)[0]

    def dry_run_text(self, env: TextEnv, action: ParsedAction) -> str | None:
        kg = _kg_env(env)
        return None if kg is None else kg.dry_run(action)[1]
