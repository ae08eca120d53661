"""ChatAgent: a chat language model playing the Assistant, one chat history per slot.

:class:`~cmat_gym.agents.lm_policy.LMPolicy` is stateless: it answers whole conversations.
:class:`ChatAgent` turns it into a :class:`~cmat_gym.agents.policies.Policy` for
:func:`~cmat_gym.evaluation.run_episodes` and ``cmat-gym eval``: it keeps each slot's
conversation (the system prompt of :func:`~cmat_gym.agents.prompts.assistant_system_prompt`, then
each observation as a user turn and each action as an assistant turn) and asks the model for the
next action of every slot in one batched call.

Short-term memory: the whole conversation is sent while it fits the model's window
(``max_seq_len - max_new_tokens`` prompt tokens); when it would overflow, only the first user message
(the task) and the last ``history_turns`` exchanges (action + its result) are sent, fewer if need be to
bring the prompt under :data:`LOW_WATER` of the window (never fewer than the newest one; a result too
long even then is cut in the middle). A slot keeps that cut (the same first kept exchange) on later
turns while its prompt fits, so consecutive prompts extend each other and the engine's KV reuse
applies; the slot is cut again only at the next overflow.

Built by name through :func:`~cmat_gym.agents.policies.make_policy`: ``"smollm2"`` (the bundled
SmolLM2-135M-Instruct), ``"tiny-random"`` (a random-weight test model) or a local model folder;
``adapter=PATH`` adds a saved peft adapter. Defaults suit evaluation: greedy decoding, at most 256
new tokens, stop at ``<|im_end|>``, CUDA when available. :func:`make_critic_lm` builds the chat
model of an LLM checker (``checker="llm"``), sharing the agent's model when given one, and
:class:`LMReflectionWriter` lets the Assistant's own model reflect on its failed attempts (Reflexion's
self-reflection; ``make_cmat(..., reflection_writer="lm", reflection_policy=agent)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cmat_gym.agents.lm_policy import Completion, LMPolicy, Message
from cmat_gym.agents.models import SMOLLM2, TINY_RANDOM, resolve_model_name
from cmat_gym.agents.policies import resolve_slots
from cmat_gym.agents.prompts import assistant_system_prompt
from cmat_gym.cmat.memory import template_reflection
from cmat_gym.core.domain import get_domain
from cmat_gym.core.env import render_transcript
from cmat_gym.core.text import sanitize

STOP = ("<|im_end|>",)
TRUNCATED = "\n[... cut to fit the context window ...]\n"
# When a slot's conversation overflows, old exchanges are dropped until the prompt takes at most this
# share of the window. Any cut changes the prompt's prefix, so the engine re-encodes the slot from the
# first dropped token; dropping just enough to fit would repeat that every turn. Cutting to half the
# window leaves the other half for new turns: each re-encode (at most half a window) buys at least half
# a window of turns prefilled incrementally, while the model still sees half a window of recent history
# right after a cut.
LOW_WATER = 0.5


class ChatAgent:
    """A chat LM as a batched, per-slot stateful Assistant policy (see the module docstring).

    Args:
        lm: the language model (its sampling settings apply).
        system_prompt: the system message of every conversation (None: none).
        history_turns: most exchanges kept besides the task when the conversation is cut (at least
            the newest one is always kept); until the next cut, later exchanges are sent as well.

    Attributes:
        last_completions: the :class:`~cmat_gym.agents.lm_policy.Completion` of each row of the
            latest :meth:`act` call (token ids, log-probs, finish reason).
        generated_tokens: completion tokens generated since construction (for throughput figures).
    """

    def __init__(self, lm: LMPolicy, *, system_prompt: str | None = None, history_turns: int = 4) -> None:
        if history_turns < 0:
            raise ValueError(f"Expects history_turns >= 0, actual {history_turns}")
        self.lm = lm
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.histories: dict[int, list[Message]] = {}
        # slot -> index in its history of the first exchange sent after the task (0: none dropped yet)
        self._starts: dict[int, int] = {}
        self.last_completions: list[Completion] = []
        self.generated_tokens = 0
        self._domain_agents: dict[str, ChatAgent] = {}

    def act(self, observations: list[str], slots: Sequence[int] | None = None) -> list[str]:
        """Append each observation to its slot's conversation and generate every slot's next action.

        ``slots`` names the slot of each observation (default ``0 .. n-1``). Each slot is a session of
        the language model (see :class:`~cmat_gym.agents.lm_policy.LMPolicy`): the next turn's prompt
        extends this turn's token ids and only the new observation is prefilled; a slot starting a new
        conversation releases the cache of its previous one.
        """
        slots = resolve_slots(slots, len(observations))
        sessions = [(id(self), slot) for slot in slots]  # one LMPolicy may serve several agents
        fresh = [key for key, slot in zip(sessions, slots, strict=True) if not self.histories.get(slot)]
        if fresh and hasattr(self.lm, "release"):
            self.lm.release(fresh)
        for slot, observation in zip(slots, observations, strict=True):
            if not self.histories.get(slot):
                self._starts.pop(slot, None)
            self.histories.setdefault(slot, []).append({"role": "user", "content": observation})
        conversations = []
        for slot in slots:
            messages, self._starts[slot] = self._cut(self.histories[slot], self._starts.get(slot, 0), LOW_WATER)
            conversations.append(messages)
        completions = self.lm.act_messages(conversations, return_details=True, sessions=sessions)
        self.last_completions = completions
        for slot, completion in zip(slots, completions, strict=True):
            self.histories[slot].append({"role": "assistant", "content": completion.text})
            self.generated_tokens += len(completion.completion_ids)
        return [c.text for c in completions]

    def for_domain(self, domain: str) -> ChatAgent:
        """This agent (same model, sampling and settings, no conversations) prompted with ``domain``'s
        grammar; the agent itself when it already is. ``generated_tokens`` counts per agent."""
        prompt = assistant_system_prompt(get_domain(domain).grammar)
        if prompt == self.system_prompt:
            return self
        if domain not in self._domain_agents:
            self._domain_agents[domain] = ChatAgent(self.lm, system_prompt=prompt, history_turns=self.history_turns)
        return self._domain_agents[domain]

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget the conversations of ``slots`` (all when None)."""
        for slot in list(self.histories) if slots is None else slots:
            self.histories.pop(slot, None)
            self._starts.pop(slot, None)

    def context(self, history: Sequence[Message]) -> list[Message]:
        """The messages sent for ``history`` (a conversation ending with a user turn) by a caller that
        keeps no cut between calls: the whole of it when it fits, else the task and the last
        ``history_turns`` exchanges, fewer if need be to fit the window."""
        return self._cut(history, 0, 1.0)[0]

    def _cut(self, history: Sequence[Message], start: int, low_water: float) -> tuple[list[Message], int]:
        """The messages sent for ``history`` given the slot's cut ``start`` (the index in ``history[1:]``
        of the first exchange sent after the task), and the cut to keep for the next turn.

        While the task and the exchanges from ``start`` fit the window they are sent as they are; else
        the last ``history_turns`` exchanges are kept, fewer while the prompt is over ``low_water`` of
        the window (see :data:`LOW_WATER`).
        """
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        first, rest = list(history[:1]), list(history[1:])  # rest: (assistant, user) exchanges
        start = start if start <= len(rest) else 0  # a history shortened from outside: no cut to keep
        messages = [*system, *first, *rest[start:]]
        if fits_window(self.lm, messages):
            return messages, start
        if rest:
            limit = int(low_water * (self.lm.max_seq_len - self.lm.max_new_tokens))
            keep = max(1, min(self.history_turns, len(rest) // 2))  # the newest exchange always stays
            messages = [*system, *first, *rest[len(rest) - 2 * keep:]]
            while keep > 1 and len(self.lm.prompt_ids(messages)) > limit:
                keep -= 1
                messages = [*system, *first, *rest[len(rest) - 2 * keep:]]
            start = len(rest) - 2 * keep
        # Last resort (huge observations): shorten the newest result, then the task.
        for index in sorted({len(messages) - 1, len(system)}, reverse=True):
            messages = fit_window(self.lm, messages, index)
        return messages, start


def fits_window(lm: LMPolicy, messages: Sequence[Message]) -> bool:
    """Whether the prompt of ``messages`` leaves room for a full reply in ``lm``'s window."""
    return len(lm.prompt_ids(messages)) <= lm.max_seq_len - lm.max_new_tokens


def fit_window(lm: LMPolicy, messages: Sequence[Message], index: int) -> list[Message]:
    """``messages`` with the content of ``messages[index]`` cut in the middle (head and tail kept, a
    marker between) until the prompt fits ``lm``'s window, or the content is down to 256 characters."""
    messages = list(messages)
    content = messages[index]["content"]
    while not fits_window(lm, messages) and len(content) > 256:
        head, _, tail = content.partition(TRUNCATED) if TRUNCATED in content else (content, "", "")
        if not tail:
            head, tail = content[: len(content) // 2], content[len(content) // 2:]
        content = head[: len(head) * 3 // 4] + TRUNCATED + tail[len(tail) // 4:]
        messages[index] = {**messages[index], "content": content}
    return messages


class CriticLM:
    """An LMPolicy for :class:`~cmat_gym.cmat.checkers.LLMChecker` whose prompts always fit the window:
    a too long critic prompt (the task, recent turns, the proposed action) is cut in the middle."""

    def __init__(self, lm: LMPolicy) -> None:
        self.lm = lm

    def act_messages(self, conversations: Sequence[Sequence[Message]], **overrides: Any) -> list[Any]:
        """One reply per conversation (see :meth:`LMPolicy.act_messages`)."""
        fitted = [fit_window(self.lm, c, len(c) - 1) for c in conversations]
        return self.lm.act_messages(fitted, **overrides)


REFLECTION_PROMPT = (
    "Here is your failed attempt at a task.\n\nTask: {instruction}\n\nYour attempt:\n{attempt}\n\n"
    "Write 2-3 sentences: what went wrong and what to do differently next time. "
    "Do not state the answer."
)
_WORD = re.compile(r"[A-Za-z]{2,}")
_ACTION_LIKE = re.compile(r"^\s*(action\s*:|final\s*answer\s*:|\{)|```", re.IGNORECASE | re.MULTILINE)


class LMReflectionWriter:
    """A :data:`~cmat_gym.cmat.memory.ReflectionWriter` that asks the Assistant's own chat model to
    reflect on its failed attempt (:data:`REFLECTION_PROMPT`), with the template as the fallback.

    It sees what every writer sees: the instruction and the Assistant's dialogue with grader feedback
    replaced (the loop's ``reflection_view``), never the Task payload. The reply is used when it reads
    as prose (at least 3 words, not an action or code); an empty or unusable reply falls back to
    ``fallback`` (:func:`~cmat_gym.cmat.memory.template_reflection`). Decoding is greedy and the
    Assistant's conversations are left alone (the model is called directly, not through the agent).

    Args:
        policy: a :class:`ChatAgent` (its model is used), an :class:`LMPolicy`, or anything with
            ``act_messages(conversations, **overrides)`` returning texts or completions.
        max_new_tokens: most tokens of the reflection.
        max_chars: the reflection is cut to this many characters (at a sentence end when possible).
        fallback: the writer used when the model's reply is unusable.
    """

    def __init__(self, policy: Any, *, max_new_tokens: int = 96, max_chars: int = 600,
                 fallback: Callable[[str, list[dict]], str] = template_reflection) -> None:
        self.lm = policy.lm if isinstance(policy, ChatAgent) else policy
        if not hasattr(self.lm, "act_messages"):
            raise TypeError(f"Expects a ChatAgent or a chat model with act_messages, actual {type(policy).__name__}")
        self.max_new_tokens = max_new_tokens
        self.max_chars = max_chars
        self.fallback = fallback

    def prompt(self, instruction: str, trajectory: list[dict]) -> list[Message]:
        """The one-message conversation sent to the model (cut in the middle to fit its window)."""
        attempt = render_transcript(trajectory[1:] if len(trajectory) > 1 else trajectory)
        messages: list[Message] = [{"role": "user", "content": REFLECTION_PROMPT.format(
            instruction=instruction.strip(), attempt=attempt)}]
        if isinstance(self.lm, LMPolicy):
            messages = fit_window(_Budget(self.lm, self.max_new_tokens), messages, 0)  # type: ignore[arg-type]
        return messages

    def __call__(self, instruction: str, trajectory: list[dict]) -> str:
        overrides: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "temperature": 0.0}
        reply = self.lm.act_messages([self.prompt(instruction, trajectory)], **overrides)[0]
        text = self._clean(getattr(reply, "text", reply))
        if text is None:
            return self.fallback(instruction, trajectory)
        return f"Task: {' '.join(instruction.split())}\nReflection: {text}"

    def _clean(self, reply: Any) -> str | None:
        """The reply as one paragraph of at most ``max_chars`` characters, or None when unusable."""
        text = " ".join(str(reply or "").replace("<|im_end|>", " ").split())
        if _ACTION_LIKE.search(str(reply or "")) or len(_WORD.findall(text)) < 3:
            return None
        if len(text) > self.max_chars:
            cut = text[: self.max_chars]
            end = cut.rfind(". ")
            text = cut[: end + 1] if end > self.max_chars // 2 else cut.rstrip() + "..."
        return sanitize(text, self.max_chars + 3)


class _Budget:
    """An LMPolicy seen with another ``max_new_tokens`` (to size the reflection prompt's window)."""

    def __init__(self, lm: LMPolicy, max_new_tokens: int) -> None:
        self._lm, self.max_new_tokens = lm, max_new_tokens
        self.max_seq_len = lm.max_seq_len

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return self._lm.prompt_ids(messages)


def make_chat_agent(
    model: str = SMOLLM2,
    *,
    adapter: str | Path | None = None,
    domain: str | None = None,
    seed: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    max_batch: int = 16,
    max_seq_len: int = 2048,
    history_turns: int = 4,
    threads: int | None = None,
    **lm_kwargs: Any,
) -> ChatAgent:
    """A :class:`ChatAgent` over ``model`` (``"smollm2-135m-instruct"``, ``"tiny-random"`` or a folder).

    Args:
        adapter: a saved peft adapter folder to load on top of the model.
        domain: the domain whose action grammar the system prompt teaches (the env's
            ``env.unwrapped.domain``; required).
        seed: seeds sampling (irrelevant for greedy decoding).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        dtype: e.g. ``"bf16"``; default fp32 on CPU, bf16 on CUDA.
        temperature: 0 = greedy (the evaluation default).
        max_new_tokens, max_batch, max_seq_len: see :class:`~cmat_gym.agents.lm_policy.LMPolicy`.
        history_turns: see :class:`ChatAgent`.
        threads: sets torch's CPU threads for the process (None: leave it). On a machine whose cores
            other processes keep busy, 1 thread decodes several times faster than 2.
        **lm_kwargs: other :class:`~cmat_gym.agents.lm_policy.LMPolicy` settings (top_p, backend, ...).
    """
    if domain is None:
        raise ValueError("Expects domain=<the env's domain> (env.unwrapped.domain): the system prompt teaches "
                         "that domain's action grammar")
    grammar = get_domain(domain).grammar
    lm = LMPolicy.from_pretrained(
        resolve_model_name(model), adapter=adapter, device=resolve_device(device, threads), dtype=dtype,
        temperature=temperature, seed=seed, max_new_tokens=max_new_tokens, max_batch=max_batch,
        max_seq_len=max_seq_len, stop=lm_kwargs.pop("stop", STOP), **lm_kwargs,
    )
    return ChatAgent(lm, system_prompt=assistant_system_prompt(grammar), history_turns=history_turns)


def smollm2(**kwargs: Any) -> ChatAgent:
    """SmolLM2-135M-Instruct (bundled) as the Assistant; ``kwargs`` as :func:`make_chat_agent`."""
    return make_chat_agent(SMOLLM2, **kwargs)


def tiny_random(**kwargs: Any) -> ChatAgent:
    """The tiny random-weight test model as the Assistant (fast, useless: for tests)."""
    return make_chat_agent(TINY_RANDOM, **kwargs)


def make_critic_lm(
    model: str | ChatAgent = "smollm2",
    *,
    max_new_tokens: int = 64,
    device: str = "auto",
    threads: int | None = None,
) -> CriticLM:
    """A greedy chat model for :class:`~cmat_gym.cmat.checkers.LLMChecker` (short one-line verdicts).

    ``model``: a policy name (``"smollm2"``, ``"tiny-random"``), a model name or folder, or a
    :class:`ChatAgent` whose model (adapter included) it shares: nothing is loaded again.
    """
    settings: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "stop": STOP, "max_batch": 4}
    if isinstance(model, ChatAgent):
        lm = model.lm
        return CriticLM(LMPolicy(lm.model, lm.tokenizer, max_seq_len=lm.max_seq_len, backend=lm.backend, **settings))
    model = resolve_model_name(model)
    return CriticLM(LMPolicy.from_pretrained(model, device=resolve_device(device, threads), **settings))


def resolve_device(device: str, threads: int | None = None) -> str:
    """``"auto"`` becomes ``"cuda"`` when available, else ``"cpu"``; ``threads`` sets torch's CPU threads."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
