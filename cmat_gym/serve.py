"""``cmat-gym serve``: a local chat model behind an OpenAI-compatible API, on the loopback interface.

    cmat-gym serve --model smollm2 [--adapter DIR|bundled] [--port 8000] [--max-batch 16] [--max-tokens 256]
    cmat-gym eval --policy openai --base-url http://127.0.0.1:8000/v1 --model smollm2 --batch-size 8

Serves the bundled SmolLM2-135M-Instruct, ``tiny-random`` or any local model folder (optionally with a
saved LoRA adapter) at ``POST /v1/chat/completions`` and ``GET /v1/models`` (starlette + uvicorn).
Generation is the project's own: :class:`~cmat_gym.agents.lm_policy.LMPolicy` over the
:class:`~cmat_gym.agents.engine.RolloutEngine`, the path ``cmat-gym eval --policy smollm2`` takes, so
a model scores the same through the API as in-process. Requests that arrive together are decoded
together: one worker thread owns the model and takes every waiting request (up to ``--max-batch``)
into one batched call (requests with different sampling settings go in separate calls).

What a request may hold: ``messages`` (system, user, assistant and tool messages; an assistant
message's ``tool_calls`` are shown to the model as their JSON, a ``tool`` message as a user turn),
``max_tokens`` / ``max_completion_tokens`` (capped at ``--max-tokens``), ``temperature``, ``top_p``,
``stop``, ``seed`` and ``tools``. With ``tools``, a reply whose text is a JSON call of one of them
(``{"name": ..., "arguments": ...}``, also inside ``<tool_call>`` tags or a fenced block) is returned
as ``tool_calls`` (finish reason ``"tool_calls"``); other text is the ``content``. ``stream`` and
``n > 1`` are refused with 400. Conversations longer than the model's window keep the first user
message and the newest exchanges (:meth:`~cmat_gym.agents.chat_agent.ChatAgent.context`). Request
bodies are limited to ``MAX_BODY_BYTES`` and ``MAX_MESSAGES`` messages; errors are OpenAI-style
``{"error": {"message", "type", "code"}}`` objects, never tracebacks.

KV reuse: the engine prefills only what a prompt adds to the longest prefix its cache rows hold, so a
conversation's next turn reuses its earlier turns while their row has not been taken by other
requests; the server keeps no sessions, so unlike in-process agents (which pin a row per episode) a
busy server can lose them. Not served: streaming, logprobs, embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_MESSAGES = 512
ROLES = ("system", "user", "assistant", "tool")
_TOOL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class RequestError(Exception):
    """A bad request: answered with ``status`` and an OpenAI-style error object."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.code = status, code


# ------------------------------------------------------------------------------------ the batcher
class BatchGenerator:
    """Owns a chat model; batches the requests waiting when it is free into one generation call.

    Args:
        lm: the :class:`~cmat_gym.agents.lm_policy.LMPolicy` (only this object's thread touches it).
        max_batch: most conversations per generation call.
        history_turns: exchanges kept besides the first user message when a conversation overflows
            the window (see :class:`~cmat_gym.agents.chat_agent.ChatAgent`).
    """

    def __init__(self, lm: Any, *, max_batch: int = 16, history_turns: int = 4) -> None:
        self.lm, self.max_batch, self.history_turns = lm, max_batch, history_turns
        self.batches: list[int] = []  # the size of every generation call (for tests and logs)
        self._queue: queue.Queue[tuple[list[dict[str, str]], dict[str, Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="cmat-gym-serve-generator", daemon=True)
        self._thread.start()

    def submit(self, messages: list[dict[str, str]], settings: dict[str, Any]) -> Future[Any]:
        """Queue one conversation; the future gets its :class:`~cmat_gym.agents.lm_policy.Completion`."""
        future: Future[Any] = Future()
        if "stop" in settings:  # a request's stop strings add to the model's own (its end-of-turn token)
            settings = {**settings, "stop": [*self.lm.stop, *settings["stop"]]}
        self._queue.put((messages, settings, future))
        return future

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            groups: dict[str, list[tuple[list[dict[str, str]], dict[str, Any], Future[Any]]]] = {}
            for item in batch:
                groups.setdefault(json.dumps(item[1], sort_keys=True), []).append(item)
            for items in groups.values():
                self._generate(items)

    def _generate(self, items: list[tuple[list[dict[str, str]], dict[str, Any], Future[Any]]]) -> None:
        try:
            conversations = [self._fit(messages) for messages, _, _ in items]
            self.batches.append(len(items))
            completions = self.lm.act_messages(conversations, return_details=True, **items[0][1])
        except Exception as exc:  # noqa: BLE001 -- reported to each waiting request, the server lives on
            for _, _, future in items:
                future.set_exception(exc)
            return
        for (_, _, future), completion in zip(items, completions, strict=True):
            future.set_result(completion)

    def _fit(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """``messages`` cut to the model's window as ChatAgent cuts its own (system prompt kept)."""
        from cmat_gym.agents.chat_agent import ChatAgent

        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        history = messages[1:] if system is not None else messages
        if not history:
            return messages
        return ChatAgent(self.lm, system_prompt=system, history_turns=self.history_turns).context(history)


# ------------------------------------------------------------------------------------ requests
def chat_messages(raw: Any) -> list[dict[str, str]]:
    """The request's messages as plain ``{"role", "content"}`` text turns the chat template takes."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list")
    if len(raw) > MAX_MESSAGES:
        raise RequestError(f"at most {MAX_MESSAGES} messages per request, got {len(raw)}")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] must be an object whose role is one of {', '.join(ROLES)}")
        role, content = message["role"], message.get("content")
        text = content_text(content, i)
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            call = calls[0].get("function") if isinstance(calls, list) and isinstance(calls[0], dict) else None
            if not isinstance(call, dict):
                raise RequestError(f"messages[{i}].tool_calls must be a list of {{'function': ...}} objects")
            # What the model would have written to make that call: its own output, as it sees it.
            text = json.dumps({"name": call.get("name"), "arguments": call.get("arguments")})
        if role == "tool":
            role = "user"  # small chat templates have no tool role: the result is the next user turn
        if messages and role == "user" and messages[-1]["role"] == "user":
            messages[-1]["content"] += "\n\n" + text  # several tool results in a row: one turn
            continue
        messages.append({"role": role, "content": text})
    if messages[-1]["role"] == "assistant":
        raise RequestError("the last message must not be the assistant's (nothing to reply to)")
    return messages


def content_text(content: Any, index: int) -> str:
    """A message's content as text: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(f"messages[{index}].content must be text (a string or text parts)")


def sampling(body: dict[str, Any], max_tokens_cap: int) -> dict[str, Any]:
    """The LMPolicy settings of a request (OpenAI's defaults: temperature 1, top_p 1)."""
    if body.get("stream"):
        raise RequestError("streaming is not supported (send stream=false)")
    if body.get("n", 1) != 1:
        raise RequestError("n must be 1")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", max_tokens_cap))
    temperature, top_p, seed = body.get("temperature", 1.0), body.get("top_p", 1.0), body.get("seed")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError("max_tokens must be a positive integer")
    for name, value, low, high in (("temperature", temperature, 0.0, 2.0), ("top_p", top_p, 0.0, 1.0)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise RequestError(f"{name} must be a number in [{low}, {high}]")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError("seed must be an integer")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise RequestError("stop must be a string or a list of at most 4 strings")
    settings: dict[str, Any] = {"max_new_tokens": min(max_tokens, max_tokens_cap), "temperature": float(temperature),
                                "top_p": float(top_p)}
    if stop:
        settings["stop"] = stop
    if seed is not None:
        settings["seed"] = seed
    return settings


def tool_names(tools: Any) -> set[str]:
    """The function names a request's ``tools`` declares."""
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise RequestError("tools must be a list")
    names = set()
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError("each tool must be {'type': 'function', 'function': {'name': ...}}")
        names.add(function["name"])
    return names


def extract_tool_call(text: str, names: set[str]) -> dict[str, Any] | None:
    """A ``tool_calls`` entry when ``text`` is a JSON call of a tool in ``names``, else None."""
    if not names:
        return None
    candidate = text.strip()
    if (tag := _TOOL_TAG.search(candidate)) is not None:
        candidate = tag.group(1).strip()
    elif (fence := _FENCE.match(candidate)) is not None:
        candidate = fence.group(1).strip()
    if not candidate.startswith("{"):
        return None
    try:
        obj = json.loads(candidate)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name", obj.get("tool"))
    if name not in names:
        return None
    arguments = obj.get("arguments", obj.get("args", obj.get("parameters", {})))
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}


# ------------------------------------------------------------------------------------ the app
def build_app(generator: BatchGenerator, model_name: str, *, max_tokens: int = 256) -> Any:
    """The Starlette app serving ``generator``'s model as ``model_name``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    created = int(time.time())

    def error(message: str, status: int, code: str) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": created, "owned_by": "cmat-gym"}]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            raw = await read_body(request)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise RequestError("the body must be a JSON object") from None
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object")
            if body.get("model") not in (None, model_name):
                raise RequestError(f"model {body.get('model')!r} is not served; this server serves {model_name!r}",
                                   404, "model_not_found")
            messages = chat_messages(body.get("messages"))
            settings = sampling(body, max_tokens)
            names = tool_names(body.get("tools"))
        except RequestError as exc:
            return error(str(exc), exc.status, exc.code)
        try:
            completion = await asyncio.wrap_future(generator.submit(messages, settings))
        except Exception as exc:  # noqa: BLE001 -- a generation failure is a 500 with its reason
            return error(f"generation failed: {type(exc).__name__}: {exc}", 500, "generation_failed")
        call = extract_tool_call(completion.text, names)
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        finish = completion.finish_reason
        if call is not None:
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        prompt_tokens, completion_tokens = len(completion.prompt_ids), len(completion.completion_ids)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


async def read_body(request: Any) -> bytes:
    """The request body, refused past :data:`MAX_BODY_BYTES` (read in chunks: never all of a huge one)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(f"the body exceeds {MAX_BODY_BYTES} bytes", 413, "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------ the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``cmat-gym serve``."""
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 (bundled SmolLM2-135M-Instruct), tiny-random, or a local model folder")
    parser.add_argument("--adapter", default=None, metavar="DIR",
                        help="a saved peft (LoRA) adapter folder, or 'bundled' (the tuned DB agent shipped with the package)")
    parser.add_argument("--served-model-name", default=None, metavar="NAME",
                        help="the name clients send as 'model' (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests decoded in one batch (default 16)")
    parser.add_argument("--max-tokens", type=int, default=256, help="most new tokens per reply (default 256)")
    parser.add_argument("--max-seq-len", type=int, default=2048, help="prompt + reply tokens (default 2048)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def load_generator(args: argparse.Namespace) -> BatchGenerator:
    """Load the model the flags name into a :class:`BatchGenerator` (needs the ``[train]`` extra)."""
    try:
        from cmat_gym.agents.chat_agent import STOP, resolve_device
        from cmat_gym.agents.lm_policy import LMPolicy
        from cmat_gym.agents.models import resolve_model_name
        from cmat_gym.agents.policies import resolve_adapter
    except ModuleNotFoundError as exc:
        raise ImportError(f"cmat-gym serve needs {exc.name}, which is not installed: "
                          "pip install 'cmat-gym[train]'") from exc
    lm = LMPolicy.from_pretrained(
        resolve_model_name(args.model), adapter=resolve_adapter(args.adapter), device=resolve_device(args.device, args.threads),
        max_new_tokens=args.max_tokens, max_batch=args.max_batch, max_seq_len=args.max_seq_len, stop=STOP,
    )
    return BatchGenerator(lm, max_batch=args.max_batch)


def serve(args: argparse.Namespace, *, err: Any = sys.stderr) -> int:
    """Run the server until interrupted (Ctrl-C or SIGTERM: uvicorn finishes open requests, then exits)."""
    import uvicorn

    for flag in ("port", "max_batch", "max_tokens", "max_seq_len"):
        value = getattr(args, flag)
        if value < (0 if flag == "port" else 1) or (flag == "port" and value > 65535):
            raise ValueError(f"--{flag.replace('_', '-')} out of range: {value}")
    generator = load_generator(args)
    name = args.served_model_name or args.model
    app = build_app(generator, name, max_tokens=args.max_tokens)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=30))
    err.write(f"cmat-gym serve: {name} at http://{args.host}:{args.port}/v1 (Ctrl-C to stop)\n")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        err.write("cmat-gym serve: warning: the API has no authentication; anyone who reaches "
                  f"{args.host}:{args.port} can use the model\n")
    err.flush()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that
    # was there before it: make that handler end the run normally, so that the generator is closed
    # and the exit status is 0.
    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        server.run()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        generator.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    err.write("cmat-gym serve: stopped\n")
    return 0


class _Stopped(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown)."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cmat_gym.serve``: the same as ``cmat-gym serve``."""
    parser = argparse.ArgumentParser(prog="cmat-gym serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
