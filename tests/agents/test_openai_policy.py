"""OpenAIPolicy against a real HTTP server on the loopback interface.

The server here is a scripted chat-completions endpoint (starlette + uvicorn in a thread): it replays
chosen replies and failures, so the client's handling of tool calls, text replies, retries and
concurrency is checked exactly. The end-to-end run against a real model is ``tests/test_serve.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import cmat_gym
from cmat_gym.agents.openai_policy import OpenAIPolicy, PolicyRequestError, read_reply
from cmat_gym.agents.policies import make_policy
from cmat_gym.core.domain import get_domain
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.evaluation import run_episodes

Handler = Callable[[dict[str, Any], int], tuple[int, dict[str, Any]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedServer:
    """A chat-completions endpoint whose reply to the n-th request is ``handler(body, n)``."""

    def __init__(self, handler: Handler, delay: float = 0.0) -> None:
        self.handler, self.delay = handler, delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _complete(self, request: Request) -> JSONResponse:
        import asyncio

        body = await request.json()
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        status, reply = self.handler(body, n)
        return JSONResponse(reply, status_code=status)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the scripted server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def completion(message: dict[str, Any], usage: tuple[int, int] = (10, 2)) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": json.dumps(args)}}]}


@pytest.fixture(scope="module")
def db_task() -> Any:
    return DBEnv.generate_task(3, "test", 1)


def oracle_tool_calls(task: Any) -> list[tuple[str, dict[str, Any]]]:
    """The oracle's script for ``task`` as (tool, arguments) pairs: what a function-calling model sends."""
    grammar = get_domain("db").grammar
    return [(p.tool, dict(p.args)) for p in map(grammar.parse, DBEnv.oracle_actions(task))]


def test_tool_call_replies_solve_a_db_task(db_task: Any) -> None:
    calls = oracle_tool_calls(db_task)

    def handler(body: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
        name, args = calls[n]
        return 200, completion(tool_call(name, args, f"call_{n}"), usage=(100 + n, 5))

    cmat_gym.register_envs()
    env = gym.make("cmat/DB-v0", tasks=[db_task])
    with ScriptedServer(handler) as server:
        policy = make_policy("openai", base_url=server.url, model="scripted", domain="db", seed=7)
        try:
            (result,) = run_episodes(env, policy, 1, seed=0, progress=False)
        finally:
            policy.close()
            env.close()
    assert result.success and result.steps == len(calls) and result.format_errors == 0
    first = server.requests[0]
    assert first["model"] == "scripted" and first["seed"] == 7 and first["temperature"] == 0.0
    assert first["tools"] == get_domain("db").grammar.tool_schemas()
    assert first["messages"][0]["role"] == "system" and "execute_sql" in first["messages"][0]["content"]
    assert first["messages"][1]["role"] == "user"
    # After a tool call, the observation goes back as that call's tool message.
    second = server.requests[1]["messages"]
    assert second[2]["tool_calls"][0]["id"] == "call_0"
    assert second[3]["role"] == "tool" and second[3]["tool_call_id"] == "call_0" and second[3]["content"]
    n = len(calls)
    assert policy.usage == {"requests": n, "retries": 0, "prompt_tokens": sum(100 + i for i in range(n)),
                            "completion_tokens": 5 * n, "total_tokens": sum(105 + i for i in range(n))}


def test_text_replies_are_actions_as_they_are(db_task: Any) -> None:
    texts = DBEnv.oracle_actions(db_task)  # the text protocol, as a model without tools writes it

    def handler(body: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
        return 200, completion({"content": texts[n]})

    env = gym.make("cmat/DB-v0", tasks=[db_task])
    with ScriptedServer(handler) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db", tools=False)
        (result,) = run_episodes(env, policy, 1, seed=0, progress=False)
        policy.close()
    env.close()
    assert result.success and "tools" not in server.requests[0]
    assert [m["role"] for m in server.requests[1]["messages"]] == ["system", "user", "assistant", "user"]


def test_retries_429_and_5xx_with_backoff_then_succeeds() -> None:
    def handler(body: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
        if n == 0:
            return 429, {"error": {"message": "slow down"}}
        if n == 1:
            return 503, {"error": {"message": "busy"}}
        return 200, completion({"content": "SELECT 1"})

    with ScriptedServer(handler) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db", backoff=0.01)
        assert policy.act(["task"]) == ["SELECT 1"]
        policy.close()
    assert policy.usage["retries"] == 2 and policy.usage["requests"] == 1 and len(server.requests) == 3


def test_a_client_error_is_not_retried_and_a_dead_server_gives_up() -> None:
    with ScriptedServer(lambda body, n: (401, {"error": {"message": "bad key"}})) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db", backoff=0.01)
        with pytest.raises(PolicyRequestError, match="401.*bad key"):
            policy.act(["task"])
        assert len(server.requests) == 1
        policy.close()
    with ScriptedServer(lambda body, n: (503, {})) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db", backoff=0.01, max_retries=2)
        with pytest.raises(PolicyRequestError, match="after 3 attempts"):
            policy.act(["task"])
        assert len(server.requests) == 3
        policy.close()
    policy = OpenAIPolicy(f"http://127.0.0.1:{free_port()}/v1", "m", domain="db", backoff=0.01, max_retries=1)
    with pytest.raises(PolicyRequestError, match="ConnectError"):
        policy.act(["task"])
    policy.close()


def test_slots_are_sent_concurrently_and_keep_their_own_chats() -> None:
    def handler(body: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
        return 200, completion({"content": "echo " + body["messages"][-1]["content"]})

    with ScriptedServer(handler, delay=0.3) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db", concurrency=4)
        assert policy.act(["a", "b", "c", "d"], slots=[0, 1, 2, 3]) == ["echo a", "echo b", "echo c", "echo d"]
        assert server.max_in_flight == 4  # all four requests were open at once
        assert policy.act(["b2"], slots=[1]) == ["echo b2"]
        policy.close()
    assert [m["content"] for m in server.requests[-1]["messages"][1:]] == ["b", "echo b", "b2"]
    policy.reset([1])
    assert 1 not in policy.histories and 0 in policy.histories


def test_read_reply_takes_the_first_tool_call_and_tolerates_odd_replies() -> None:
    two = {"choices": [{"message": {"content": "thinking", "tool_calls": [
        {"id": "a", "function": {"name": "execute_sql", "arguments": '{"sql": "SELECT 1"}'}},
        {"id": "b", "function": {"name": "commit_final_answer", "arguments": "{}"}}]}}]}
    action, message, call_id = read_reply(two)
    assert call_id == "a" and len(message["tool_calls"]) == 1
    parsed = get_domain("db").grammar.parse(action)
    assert (parsed.tool, parsed.value) == ("execute_sql", "SELECT 1")
    assert read_reply({"choices": [{"message": {"content": None}}]})[0] == ""
    assert read_reply({"choices": [{"message": {"tool_calls": [{"function": "junk"}], "content": "x"}}]})[0] == "x"


def test_a_200_without_choices_is_an_error() -> None:
    with ScriptedServer(lambda body, n: (200, {"oops": True})) as server:
        policy = OpenAIPolicy(server.url, "m", domain="db")
        with pytest.raises(PolicyRequestError, match="no chat completion"):
            policy.act(["task"])
        policy.close()


def test_bad_construction_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="domain"):
        OpenAIPolicy("http://x/v1", "m")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIPolicy("http://x/v1", "m", domain="db", concurrency=0)
