"""``cmat-gym serve``: a real model (tiny-random) behind the OpenAI-compatible API, played by
``--policy openai`` through the real CLI process; and the request checks of the app in-process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")

from serve_process import REPO, serving_tiny_random  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from cmat_gym import cli  # noqa: E402
from cmat_gym.agents.chat_agent import STOP  # noqa: E402
from cmat_gym.agents.lm_policy import LMPolicy  # noqa: E402
from cmat_gym.agents.policies import make_policy  # noqa: E402
from cmat_gym.evaluation import env_factory, run_episodes  # noqa: E402
from cmat_gym.serve import MAX_BODY_BYTES, BatchGenerator, build_app, extract_tool_call  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``cmat-gym serve --model tiny-random`` on a free loopback port, in its own process."""
    with serving_tiny_random() as (url, process):
        yield url, process


def test_models_lists_the_served_model(server: tuple[str, Any]) -> None:
    url, _ = server
    assert [m["id"] for m in httpx.get(f"{url}/models").json()["data"]] == ["tiny-random"]


def test_two_db_episodes_through_the_api(server: tuple[str, Any]) -> None:
    url, _ = server
    policy = make_policy("openai", base_url=url, model="tiny-random", domain="db", max_tokens=24, concurrency=2)
    try:
        results = run_episodes(env_factory("cmat/DB-v0", max_rounds=3), policy, 2, seed=0, batch_size=2,
                               progress=False)
    finally:
        policy.close()
    assert len(results) == 2
    assert all(r.steps >= 1 and (r.truncated or r.steps <= 3) for r in results)  # every episode ended
    steps = sum(r.steps for r in results)
    assert policy.usage["requests"] == steps and policy.usage["retries"] == 0
    assert policy.usage["completion_tokens"] > 0 and policy.usage["prompt_tokens"] > policy.usage["completion_tokens"]
    replies = [m for h in policy.histories.values() for m in h if m["role"] == "assistant"]
    assert replies and any(m.get("content") or m.get("tool_calls") for m in replies)  # the model's text came back


def test_cli_eval_policy_openai_reports_token_usage(server: tuple[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    status = cli.main(["eval", "--policy", "openai", "--base-url", url, "--model", "tiny-random", "--tasks",
                       "agentbench:dbbench/dev", "--episodes", "2", "--batch-size", "2", "--max-new-tokens", "16",
                       "--max-rounds", "2", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and report["usage"]["requests"] == sum(r["steps"] for r in report["results"])
    assert report["usage"]["total_tokens"] == report["usage"]["prompt_tokens"] + report["usage"]["completion_tokens"]
    assert cli.main(["eval", "--policy", "openai", "--base-url", url]) == 2  # --model missing: a message
    assert "--policy openai needs" in capsys.readouterr().err
    assert cli.main(["eval", "--policy", "openai", "--base-url", url, "--model", "other", "--episodes", "1"]) == 1
    assert "model_not_found" in capsys.readouterr().err


def test_sigterm_shuts_the_server_down_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "cmat-gym serve: stopped" in err


# ------------------------------------------------------------------------------------ the app in-process
@pytest.fixture(scope="module")
def client() -> Iterator[tuple[TestClient, BatchGenerator]]:
    lm = LMPolicy.from_pretrained("tiny-random", max_new_tokens=8, max_batch=4, stop=STOP)
    generator = BatchGenerator(lm, max_batch=4)
    with TestClient(build_app(generator, "tiny", max_tokens=8)) as test_client:
        yield test_client, generator
    generator.close()


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"model": "tiny", "messages": []}, 400, "non-empty list"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": {"x": 1}}]}, 400, "must be text"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "streaming"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": 3}, 400, "stop"),
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "not served"),
    ([1, 2], 400, "JSON object"),
])
def test_bad_requests_get_openai_style_errors(client: tuple[TestClient, Any], body: Any, status: int, needle: str) -> None:
    response = client[0].post("/v1/chat/completions", json=body)
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_garbage_and_huge_bodies_are_refused(client: tuple[TestClient, Any]) -> None:
    test_client = client[0]
    assert test_client.post("/v1/chat/completions", content=b"\xff{not json").status_code == 400
    huge = test_client.post("/v1/chat/completions", content=b"x" * (MAX_BODY_BYTES + 1))
    assert huge.status_code == 413


def test_a_conversation_with_tool_messages_is_answered(client: tuple[TestClient, Any]) -> None:
    body = {"model": "tiny", "max_tokens": 5, "temperature": 0, "seed": 1, "stop": ["\n\n"], "messages": [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "How many rows?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "execute_sql", "arguments": "{\"sql\": \"SELECT 1\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "[(1,)]"},
    ], "tools": [{"type": "function", "function": {"name": "execute_sql", "parameters": {}}}]}
    reply = client[0].post("/v1/chat/completions", json=body).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    assert reply["usage"]["completion_tokens"] <= 5 and reply["usage"]["prompt_tokens"] > 10


def test_a_long_conversation_is_cut_to_the_window(client: tuple[TestClient, Any]) -> None:
    turns = [{"role": "user", "content": "task"}]
    for i in range(200):
        turns += [{"role": "assistant", "content": f"action {i} " * 20}, {"role": "user", "content": f"result {i} " * 20}]
    reply = client[0].post("/v1/chat/completions", json={"model": "tiny", "messages": turns, "max_tokens": 4})
    assert reply.status_code == 200
    assert reply.json()["usage"]["prompt_tokens"] <= 2048


def test_tool_call_text_becomes_tool_calls() -> None:
    names = {"execute_sql"}
    for text in ('{"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}',
                 '<tool_call>{"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}</tool_call>',
                 '```json\n{"tool": "execute_sql", "args": {"sql": "SELECT 1"}}\n```'):
        call = extract_tool_call(text, names)
        assert call is not None and call["function"]["name"] == "execute_sql"
        assert json.loads(call["function"]["arguments"]) == {"sql": "SELECT 1"}
    for text in ("SELECT 1", '{"name": "rm_rf", "arguments": {}}', "{broken", '{"name": "execute_sql"'):
        assert extract_tool_call(text, names) is None
    assert extract_tool_call('{"name": "execute_sql", "arguments": {}}', set()) is None


class GatedLM:
    """The real LMPolicy behind a gate: its first generation waits until the test opens the gate, so the
    requests submitted meanwhile are waiting together when the worker is next free."""

    def __init__(self, lm: LMPolicy) -> None:
        import threading

        self.lm, self.gate = lm, threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lm, name)

    def act_messages(self, *args: Any, **kwargs: Any) -> list[Any]:
        assert self.gate.wait(60)
        return self.lm.act_messages(*args, **kwargs)


def test_requests_waiting_together_are_decoded_in_one_batch(client: tuple[TestClient, BatchGenerator]) -> None:
    gated = GatedLM(client[1].lm)
    generator = BatchGenerator(gated, max_batch=4)
    try:
        conversation = [{"role": "user", "content": "Count the rows."}]
        first = generator.submit(conversation, {"max_new_tokens": 3, "temperature": 0.0})
        deadline = time.monotonic() + 30
        while not generator.batches and time.monotonic() < deadline:  # the worker has taken the first one
            time.sleep(0.01)
        rest = [generator.submit(conversation, {"max_new_tokens": 3, "temperature": 0.0}) for _ in range(3)]
        other = generator.submit(conversation, {"max_new_tokens": 2, "temperature": 0.0})  # other settings
        gated.gate.set()
        completions = [f.result(timeout=60) for f in (first, *rest, other)]
    finally:
        generator.close()
    assert generator.batches == [1, 3, 1]
    assert len({c.text for c in completions[1:4]}) == 1  # greedy: the batched rows agree
    assert len(completions[4].completion_ids) <= 2


@pytest.mark.slow  # starts its own server (~20 s on a busy machine)
def test_serve_parity_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_parity", REPO / "benchmarks" / "serve_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--model", "tiny-random", "--tasks", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "identical first actions: " in out and "/2" in out and "'requests': 2" in out


def test_serve_loads_a_lora_adapter_and_answers_with_it(tmp_path: Path) -> None:
    """--adapter: the served model is the base model with the saved LoRA adapter (its weights, not zeros)."""
    import argparse

    import torch

    from cmat_gym.serve import add_arguments, load_generator

    pytest.importorskip("peft")
    trained = LMPolicy.from_pretrained("tiny-random")
    trained.add_adapter("lora", init_lora_weights=False)  # random B: the adapter changes the outputs
    trained.save_adapter(tmp_path / "adapter")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "tiny-random", "--adapter", str(tmp_path / "adapter"), "--device", "cpu",
                              "--max-tokens", "6", "--max-batch", "2"])
    generator = load_generator(args)
    try:
        assert getattr(generator.lm.model, "peft_config", None)  # the adapter is on
        with TestClient(build_app(generator, "tiny+lora", max_tokens=6)) as test_client:
            reply = test_client.post("/v1/chat/completions", json={
                "model": "tiny+lora", "temperature": 0, "messages": [{"role": "user", "content": "Count the rows."}]})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
        ids = torch.tensor([generator.lm.prompt_ids([{"role": "user", "content": "hi"}])])
        with torch.no_grad():
            with_adapter = generator.lm.model(ids).logits
            with generator.lm.model.disable_adapter():
                base = generator.lm.model(ids).logits
        assert not torch.allclose(with_adapter, base)
    finally:
        generator.close()
