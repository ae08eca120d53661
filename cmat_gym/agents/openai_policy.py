"""OpenAIPolicy: any OpenAI-compatible chat-completions server as the Assistant.

``make_policy("openai", base_url="http://127.0.0.1:8000/v1", model="smollm2", domain="db")`` (CLI:
``cmat-gym eval --policy openai --base-url URL --model NAME``) plays episodes through
``POST {base_url}/chat/completions``: vLLM, llama.cpp's server, Ollama, a hosted API, or
``cmat-gym serve``. Like :class:`~cmat_gym.agents.chat_agent.ChatAgent` it keeps one chat per slot,
starting with the same system prompt (:func:`~cmat_gym.agents.prompts.assistant_system_prompt`:
the role and the domain's grammar), and adds:

* **tools**: every request carries the domain's tool schemas (``Grammar.tool_schemas()``), so a
  model with function calling may answer with ``tool_calls``; the first call becomes the action as
  the JSON ``{"name": ..., "arguments": ...}`` the grammar parses, and the next observation goes back
  as that call's ``tool`` message. A plain text reply is the action as it is (the text protocols);
* **concurrency**: one ``act`` call sends the requests of all its slots at once, from up to
  ``concurrency`` threads (run the episodes with ``batch_size=N`` to have N in flight);
* **retries**: transport errors, 408, 409, 429 and 5xx are retried with exponential backoff and
  jitter (``Retry-After`` honoured), up to ``max_retries`` times; other errors, or running out of
  retries, raise :class:`PolicyRequestError` (a server that cannot answer is not an agent's
  mistake, so it is not turned into an observation);
* **usage**: :attr:`OpenAIPolicy.usage` sums the ``usage`` objects of the replies (prompt,
  completion and total tokens) with the numbers of requests and retries; ``cmat-gym eval`` reports it.

The API key comes from ``api_key=`` or the ``OPENAI_API_KEY`` environment variable (none: no
``Authorization`` header, as local servers expect).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cmat_gym.agents.policies import resolve_slots
from cmat_gym.agents.prompts import assistant_system_prompt
from cmat_gym.core.domain import get_domain, registered_domains

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_ERROR_CHARS = 500


class PolicyRequestError(RuntimeError):
    """A chat-completions request failed for good (a non-retryable status, or retries exhausted)."""


class OpenAIPolicy:
    """A remote chat model behind an OpenAI-compatible API as a batched Assistant policy (see the
    module docstring).

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"`` (``/chat/completions`` is appended).
        model: the ``model`` field of each request.
        domain: the domain whose grammar the system prompt teaches and whose tools are sent (required).
        seed: sent as the request's ``seed`` (servers that support it sample reproducibly) and seeds
            the retry jitter.
        api_key: the bearer token (default ``$OPENAI_API_KEY``; none: no header).
        temperature: sampling temperature (0: greedy, the evaluation default).
        max_tokens: most tokens per reply.
        tools: send the domain's tool schemas (False: text protocols only, for servers without tools).
        concurrency: most requests in flight at once.
        timeout: seconds per request.
        max_retries: retries of a retryable failure (0: none).
        backoff: the first retry's delay in seconds; it doubles each retry (plus up to 25% jitter).
        extra_body: more fields for every request (e.g. ``{"top_p": 0.9}``).

    Attributes:
        usage: ``requests``, ``retries``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``
            summed over every reply since construction.
        histories: each slot's conversation, without the system message.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        domain: str | None = None,
        seed: int | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        tools: bool = True,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        import httpx  # a core dependency, imported here to keep `import cmat_gym.agents` light

        if domain is None:
            raise ValueError("OpenAIPolicy needs domain=<the env's domain> (env.unwrapped.domain), "
                             f"one of {[d.name for d in registered_domains()]}")
        if not base_url or not model:
            raise ValueError("OpenAIPolicy needs base_url (e.g. http://127.0.0.1:8000/v1) and model")
        if concurrency < 1 or max_retries < 0 or max_tokens < 1:
            raise ValueError(f"Expects concurrency >= 1, max_retries >= 0 and max_tokens >= 1, actual "
                             f"{concurrency}, {max_retries}, {max_tokens}")
        grammar = get_domain(domain).grammar
        self.domain = domain
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.seed = seed
        self.temperature, self.max_tokens = temperature, max_tokens
        self.system_prompt = assistant_system_prompt(grammar)
        self.tool_schemas = grammar.tool_schemas() if tools else None
        self.concurrency, self.max_retries, self.backoff = concurrency, max_retries, backoff
        self.extra_body = dict(extra_body or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._transport_errors: tuple[type[Exception], ...] = (httpx.TransportError,)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-policy")
        self._lock = threading.Lock()
        self._jitter = random.Random(seed)
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self._pending_call: dict[int, str] = {}  # slot -> id of the tool call its next observation answers
        self.usage: dict[str, int] = {"requests": 0, "retries": 0, **dict.fromkeys(USAGE_KEYS, 0)}

    # ------------------------------------------------------------------ the Policy contract
    def act(self, observations: list[str], slots: Sequence[int] | None = None) -> list[str]:
        """Append each observation to its slot's chat and ask the server for every slot's next action
        (the requests run concurrently)."""
        slots = resolve_slots(slots, len(observations))
        for slot, observation in zip(slots, observations, strict=True):
            history = self.histories.setdefault(slot, [])
            call_id = self._pending_call.pop(slot, None)
            if call_id is not None:  # the result of the tool the model called
                history.append({"role": "tool", "tool_call_id": call_id, "content": observation})
            else:
                history.append({"role": "user", "content": observation})
        requests = [self._body(self.histories[slot]) for slot in slots]
        replies = list(self._pool.map(self._complete, requests))
        actions = []
        for slot, reply in zip(slots, replies, strict=True):
            action, message, call_id = read_reply(reply)
            self.histories[slot].append(message)
            if call_id is not None:
                self._pending_call[slot] = call_id
            actions.append(action)
        return actions

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Forget the conversations of ``slots`` (all when None)."""
        for slot in list(self.histories) if slots is None else slots:
            self.histories.pop(slot, None)
            self._pending_call.pop(slot, None)

    def close(self) -> None:
        """Close the HTTP connections and the worker threads."""
        self._pool.shutdown(wait=True)
        self._client.close()

    # ------------------------------------------------------------------ requests
    def _body(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt}, *history],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        if self.tool_schemas:
            body["tools"] = self.tool_schemas
        if self.seed is not None:
            body.setdefault("seed", self.seed)
        return body

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, retried (see the module docstring); returns the decoded reply."""
        attempt = 0
        while True:
            problem, retry_after = None, None
            try:
                response = self._client.post(self.url, json=body)
            except self._transport_errors as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        reply = response.json()
                        _ = reply["choices"][0]["message"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise PolicyRequestError(f"{self.url} answered 200 with no chat completion: "
                                                 f"{response.text[:MAX_ERROR_CHARS]!r}") from None
                    self._count(reply.get("usage"))
                    return reply
                problem = f"HTTP {response.status_code}: {response.text[:MAX_ERROR_CHARS]}"
                if response.status_code not in RETRY_STATUS:
                    raise PolicyRequestError(f"{self.url} refused the request ({problem})")
                retry_after = _seconds(response.headers.get("retry-after"))
            if attempt >= self.max_retries:
                raise PolicyRequestError(f"{self.url} failed after {attempt + 1} attempts; last: {problem}")
            with self._lock:
                self.usage["retries"] += 1
                jitter = 1 + 0.25 * self._jitter.random()
            time.sleep(retry_after if retry_after is not None else self.backoff * 2 ** attempt * jitter)
            attempt += 1

    def _count(self, usage: Any) -> None:
        with self._lock:
            self.usage["requests"] += 1
            if isinstance(usage, dict):
                for key in USAGE_KEYS:
                    value = usage.get(key)
                    if isinstance(value, int):
                        self.usage[key] += value


def read_reply(reply: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(the action text, the assistant message for the history, the id of the tool call the next
    observation answers or None) of a chat-completions reply.

    A reply with ``tool_calls`` acts with its first call, as ``{"name": ..., "arguments": ...}``
    JSON (the grammar's JSON form); the history keeps only that call, so that the conversation stays
    valid (every call answered by one ``tool`` message). Otherwise the text content is the action.
    """
    message = reply["choices"][0]["message"] or {}
    calls = message.get("tool_calls") or []
    call = calls[0] if isinstance(calls, list) and calls and isinstance(calls[0], dict) else None
    function = call.get("function") if call is not None else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        arguments = function.get("arguments", "{}")
        call_id = str(call.get("id") or "call_0")
        action = json.dumps({"name": function["name"], "arguments": arguments})
        kept = {"role": "assistant", "content": message.get("content"),
                "tool_calls": [{"id": call_id, "type": "function",
                                "function": {"name": function["name"],
                                             "arguments": arguments if isinstance(arguments, str)
                                             else json.dumps(arguments)}}]}
        return action, kept, call_id
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    return text, {"role": "assistant", "content": text}, None


def _seconds(value: str | None) -> float | None:
    """A numeric ``Retry-After`` header in seconds (capped at a minute), else None."""
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None
