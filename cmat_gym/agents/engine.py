"""A fast batched generation engine for llama-style models (SmolLM2 and friends).

HF ``generate`` spends most of a decode step in Python: dozens of small ops per layer, each
launched one by one, plus a KV cache that grows by concatenation. For a 135M model on a GPU
that overhead, not the arithmetic, sets the speed. This engine keeps the arithmetic and drops
the overhead:

* **Static KV cache.** ``k_cache``/``v_cache`` hold one preallocated ``[batch, kv_heads,
  max_seq_len, head_dim]`` tensor per layer (separate allocations rather than one 5-d tensor,
  so that ``torch.compile`` sees independent buffers it can update in place rather than views
  of one base it would copy). Row ``b`` holds its tokens in columns ``start[b] ..
  cur[b]-1``; a decode step writes the new key/value at column ``cur[b]`` and attends with a
  mask built from ``start``/``cur``. Every row has its own position, so rows can be replaced
  mid-flight (continuous batching) without moving anything.
* **Own decode forward.** A small llama forward (RMSNorm, RoPE, GQA attention on the static
  cache, SwiGLU MLP) that reads a copy of the HF model's weights, with q/k/v and gate/up fused
  into one matmul each. It follows HF's op order and dtype casts, so fp32 greedy decoding
  matches HF ``generate`` token for token.
* **CUDA graphs.** On CUDA one decode step (all layers, ~1000 kernels) is captured once per
  (batch bucket, KV-length bucket) and replayed: the CPU issues one launch per token instead
  of ~1000, so decoding runs at GPU speed. ``compile=True`` additionally runs the step through
  ``torch.compile`` before capture, which fuses the elementwise ops (fewer, larger kernels).
  Sampling runs eagerly after the replay: a handful of ops on the logits, no host sync.
* **CPU.** The same code runs eagerly, attending only over the columns in use (no buckets), with
  its own thread count (:func:`default_cpu_threads`): with torch's default of one thread per core,
  every OpenMP region of a decode step waits for its slowest thread, and on a machine whose cores
  other processes keep busy that wait is a scheduler time slice per op. Profiled on two busy cores
  (tiny-random, batch 1): 64 ms per token at 2 threads, of which ``logsumexp`` over the 49k-token
  vocabulary took 39 ms and attention 22 ms; 4 ms at 1 thread (see ``docs/results.md``). A batch
  of 4 or more rows, whose step is bound by arithmetic, also takes the cores the load average shows
  idle.

Measured (``benchmarks/rollout_throughput.py``, SmolLM2-135M bf16, batch 256, 64 prompt + 128
new tokens, one H200): HF ``generate`` 9.1-12.4 s, graphs 0.55 s (17-22x), graphs + compile
0.33 s (28-37x). With graphs alone the engine's bf16 logits were bit-identical to a
teacher-forced HF forward over the same sequences; compiled, 98.7% of greedy tokens agreed
with it, the rest being ties within 2 bf16 steps. (Greedy rows also drift from HF
``generate`` itself in bf16: it rounds differently from HF's own full forward.)

**Prompt-lookup drafts** (``speculate``, default 8; greedy calls without CUDA graphs). An agent's reply
copies its prompt (table and column names, the query it wrote last turn) and a small model repeats itself
(the CMAT loop hands a rejected action back; SmolLM2 often proposes it again). Each pass feeds a row its
last token plus up to ``speculate`` tokens that followed the latest earlier occurrence of its last 1-3
tokens, and keeps the greedy tokens up to the first that differs from the draft: the plain greedy reply,
in fewer passes, since a pass over a few tokens costs about one decode step (both read every weight once).
``stats`` counts drafted and accepted tokens. Sampling (``temperature > 0``) decodes one token a step.

**Few-row matmuls on CPU.** ``x @ W.T`` with 1-16 rows of ``x`` goes to MKL kernels that repack or
half-stream the weight; ``(W @ x.T).T`` streams it as stored: a SmolLM2 decode step of 1-2 rows takes
1.35-2.6x less time (see :func:`_weight_times_rows` and ``benchmarks/cpu_matmul_rows.py``).

**Prefill** runs the engine's own forward over the new tokens only, packed (no padding in the
matmuls), writing their keys/values straight into the cache; attention goes row by row on CPU
(exact lengths) and row groups on CUDA (padded, fewer launches). Every row keeps its tokens in
columns ``0 .. len-1``.

**KV reuse (prefix cache and sessions).** The engine remembers the token ids whose keys/values each
cache row holds. A new prompt reuses the longest prefix it shares with any row (copied into its
row when it sits in another) and prefills only the rest, so a conversation that grows by one
observation per turn costs one observation of prefill, not the whole history. Greedy outputs are
the same as without reuse (a prefix's keys/values do not depend on what follows). Callers that
keep conversations alive pass ``sessions=[key, ...]`` to :meth:`RolloutEngine.generate`: a
session keeps its row (prompt + generated tokens) between calls, rows that other prompts need
move it rather than overwrite it, and :meth:`RolloutEngine.release` frees it. A session's prompt
that does not start with the ids the row holds (e.g. history cut to fit the window) is re-encoded
from the first differing token, with an INFO log saying why; so are sessions whose row was
evicted (more sessions than rows) or whose cache went stale (the weights changed). ``stats``
counts prompt, reused and prefilled tokens. ``legacy=True`` runs the engine as it was before
(HF prefill of whole prompts, no reuse, torch's thread count): for before/after benchmarks only.

**Weights and adapters.** The engine decodes with its own copy of the weights, refreshed
automatically before each :meth:`RolloutEngine.generate` when any parameter of the model
changed (detected through the tensors' in-place version counters, which optimizer steps and
``load_state_dict`` bump; call :meth:`RolloutEngine.sync_weights` with ``force=True`` after
edits through ``.data``). peft LoRA adapters are merged into that copy (``W + scale * B @ A``
for each active adapter), leaving the model untouched, so the same model keeps training while
the engine samples from it. Prompt-learning adapters (p-tuning) change the input, not the
weights, and are not supported: use HF ``generate`` for them (``LMPolicy`` does).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

# torch's thread count when this module was imported: a different count later was set on purpose.
_STARTUP_THREADS = torch.get_num_threads()


# Rows decoded at once from which a call takes every idle core. Since the few-row matmuls stream the weights as
# stored (_weight_times_rows), a second thread pays off from one row on: SmolLM2 fp32, one 1,500-token row,
# 42 ms a step at 1 thread, 28 ms at 2 on two idle cores (it was 57 and 54 through F.linear's GEMV).
ALL_CORES_FROM_ROWS = 1


class _OthersLoad:
    """Cores that other processes kept busy since the previous reading, from ``/proc/stat`` (all CPUs' busy
    time, steal included) minus this process's own CPU time; None before a first window of 0.5 s or off Linux.

    The 1-minute load average also counts this process: right after it decoded on two threads it reads ~2
    on an otherwise idle machine, and a load-average rule would then leave a core unused for a minute.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float, float] | None = None
        self.cores: float | None = None
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        if len(fields) < 8:
            return None
        busy = (sum(fields) - fields[3] - fields[4]) / self._tick  # all but idle and iowait
        own, now = sum(os.times()[:2]), time.monotonic()
        if self._last is None:
            self._last = busy, own, now
        elif now - self._last[2] >= 0.5:
            busy0, own0, then = self._last
            self.cores = max(0.0, (busy - busy0) - (own - own0)) / (now - then)
            self._last = busy, own, now
        return self.cores


_OTHERS = _OthersLoad()


def default_cpu_threads(rows: int = 1) -> int:
    """Threads for CPU generation of ``rows`` sequences at once: ``$CMAT_GYM_THREADS``; else torch's count
    when the user chose it (``torch.set_num_threads`` to another value than at start-up, or
    ``$OMP_NUM_THREADS`` / ``$MKL_NUM_THREADS``); else half the usable cores (at least 1), or, for
    ``rows >= ALL_CORES_FROM_ROWS`` on a machine that other processes leave idle (1-minute load average
    minus this process's own running thread; on Linux, once a first reading window has passed, the busy time
    of all CPUs since the previous call minus this process's), every core nobody else uses.

    Decoding a small model runs hundreds of short ops per token. Each op split over threads waits
    for the slowest: with one thread per core and other processes (env workers, a second evaluation,
    test workers) on the cores, that wait is a scheduler time slice, and decoding slows down 10-20x.
    Half the cores leaves room for them; the idle cores, when the load average says they are idle,
    make a step 1.5-2x faster on two cores (measured in ``docs/results/speed.md``).
    """
    env = os.environ.get("CMAT_GYM_THREADS")
    if env:
        return max(1, int(env))
    current = torch.get_num_threads()
    if current != _STARTUP_THREADS or "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
        return current
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    half = max(1, min(current, cores // 2))
    if rows < ALL_CORES_FROM_ROWS or not hasattr(os, "getloadavg"):
        return half
    others = _OTHERS.read()
    if others is None:  # no reading yet: the load average, where this process counts ~1 while it decodes
        others = max(0.0, os.getloadavg()[0] - 1.0)
    free = cores - math.ceil(others - 0.25)  # a neighbour that ran a quarter of the last minute takes a core
    return max(half, min(current, cores, free))


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Make the C allocator (glibc) give big freed blocks back to the OS; returns whether it could.

    By default glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, so blocks
    of a few MB -- a training step's activations and gradients -- come from the heap afterwards and stay
    resident when freed: the heap fragments, and a process's RSS keeps its high-water mark of every phase.
    Measured on one PPO micro-batch of SmolLM2 on CPU (4 x 700 tokens, no-grad scoring then a training
    forward and backward with gradient checkpointing): peak RSS 3.93 GiB as is, 1.61 GiB with blocks from
    128 KB up served by mmap (``docs/results/speed.md``). Here blocks of ``threshold`` bytes or more are
    mmapped (returned on free) and the heap top is trimmed past ``2 * threshold``, then trimmed now. A
    decode step allocates nothing this big (its logits are preallocated), so generation is unaffected.
    No-op (False) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    ok = bool(mallopt(m_mmap_threshold, threshold)) and bool(mallopt(m_trim_threshold, 2 * threshold))
    malloc_trim(0)
    return ok


@dataclass
class GenerationResult:
    """One completion.

    Attributes:
        completion_ids: generated token ids; ends with the EOS token when ``finish_reason == "stop"``.
        logprobs: log-probability of each generated token under the distribution it was drawn from
            (``log_softmax(logits / T)`` after any top-k/top-p truncation, renormalised; for greedy
            decoding, the model's own distribution, T = 1).
        finish_reason: ``"stop"`` (an EOS token was generated) or ``"length"`` (token limit reached).
    """

    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass
class _Weights:
    """The engine's copy of the decoder weights, in the layout its forward wants."""

    embed: Tensor  # [vocab, hidden]
    lm_head: Tensor  # [vocab, hidden]; the same tensor as embed when the model ties them
    norm: Tensor  # [hidden]
    ln1: list[Tensor] = field(default_factory=list)  # per layer [hidden]
    ln2: list[Tensor] = field(default_factory=list)
    qkv: list[Tensor] = field(default_factory=list)  # [(Hq + 2 Hkv) * D, hidden]
    qkv_bias: list[Tensor | None] = field(default_factory=list)
    o: list[Tensor] = field(default_factory=list)  # [hidden, Hq * D]
    gate_up: list[Tensor] = field(default_factory=list)  # [2 * intermediate, hidden]
    down: list[Tensor] = field(default_factory=list)  # [hidden, intermediate]


class RolloutEngine:
    """Batched generation with a static KV cache and (on CUDA) graph-captured decode steps.

    Args:
        model: a HF llama-architecture causal LM (``LlamaForCausalLM``, or a peft LoRA model around one).
        tokenizer: its tokenizer (supplies the pad and default EOS ids); optional.
        max_batch: most sequences decoded at once (rows of the static cache).
        max_seq_len: cache columns per row: prompt plus completion must fit. The cache takes
            ``2 * layers * max_batch * kv_heads * max_seq_len * head_dim`` elements (SmolLM2:
            23 KB per row and column in bf16).
        use_cuda_graph: capture decode steps in CUDA graphs; default: when the model is on CUDA.
        compile: run the decode step through ``torch.compile`` (CUDA only; compiles once per shape,
            so batches are padded to ``max_batch`` and attention spans all ``max_seq_len`` columns).
        threads: torch threads while generating on CPU (restored after each call); default
            :func:`default_cpu_threads`, looked up at each call.
        legacy: generate as the engine did before KV reuse (HF prefill of whole left-padded prompts,
            ``sessions`` ignored, no thread setting, attention over the final length): for before/after
            benchmarks only.
        speculate: most tokens drafted per row and verification pass when decoding greedily without CUDA
            graphs (prompt lookup, see the module docstring); 0 turns it off.

    Example::

        engine = RolloutEngine(model, tokenizer, max_batch=64, max_seq_len=1024)
        results = engine.generate([ids_a, ids_b], max_new_tokens=64)
        # multi-turn: the second call prefills only what was added after turn 1's tokens
        first = engine.generate([ids], 64, sessions=["episode-7"])
        engine.generate([ids + first[0].completion_ids + next_ids], 64, sessions=["episode-7"])
        engine.release(["episode-7"])
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_batch: int = 64,
        max_seq_len: int = 1024,
        use_cuda_graph: bool | None = None,
        compile: bool = False,
        threads: int | None = None,
        legacy: bool = False,
        speculate: int = 8,
    ) -> None:
        if speculate < 0:
            raise ValueError(f"speculate must be >= 0 (0: off), not {speculate}")
        self.model = model
        self.tokenizer = tokenizer
        self._base = _base_model(model)
        cfg = self._base.config
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise ValueError(f"RolloutEngine supports SwiGLU llama models, not hidden_act={cfg.hidden_act!r}")
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.scale = getattr(self._base.model.layers[0].self_attn, "scaling", self.head_dim**-0.5)
        self.vocab_size = self._base.lm_head.out_features
        embed = self._base.model.embed_tokens.weight
        self.device, self.dtype = embed.device, embed.dtype
        self.max_batch = max_batch
        self.max_seq_len = -(-max_seq_len // 64) * 64  # whole blocks of 64 keep attention masks aligned
        on_cuda = self.device.type == "cuda"
        self.use_cuda_graph = on_cuda if use_cuda_graph is None else (use_cuda_graph and on_cuda)
        self.compile = compile and on_cuda

        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else (getattr(cfg, "pad_token_id", None) or 0)
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            eos = getattr(self._base.generation_config, "eos_token_id", None)
        self.default_eos = [eos] if isinstance(eos, int) else list(eos or [])

        B, S, dev = max_batch, self.max_seq_len, self.device
        shape = (B, self.n_kv_heads, S, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=dev) for _ in range(self.n_layers)]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=dev) for _ in range(self.n_layers)]
        # Decode-step inputs. Static tensors: a captured graph reads these addresses.
        self.tokens = torch.full((B,), self.pad_id, dtype=torch.long, device=dev)
        self.cur = torch.zeros(B, dtype=torch.long, device=dev)  # column the next token is written to
        self.start = torch.zeros(B, dtype=torch.long, device=dev)  # first valid column of the row
        self._cols = torch.arange(S, device=dev)
        self._rows = torch.arange(B, device=dev)
        self._cos, self._sin = self._rope_tables(S + 1)
        # CPU eager decode: the step's logits and the sampler's scratch live in buffers made once. Fresh
        # [batch, vocab] fp32 tensors each step (3 MB at batch 16 for a 49k vocabulary) come back from the
        # allocator as new pages: the page faults cost more than the arithmetic on them (profiled in
        # docs/results/speed.md).
        eager_cpu = dev.type == "cpu" and not self.compile
        self._logits_buf = torch.empty((B, self.vocab_size), dtype=torch.float32) if eager_cpu else None
        self._scratch = torch.empty((B, self.vocab_size), dtype=torch.float32) if eager_cpu else None
        self.threads = threads
        self.legacy = legacy
        self.speculate = speculate
        # Prefill: tokens per chunk, and rows attended together (CPU: one, exact lengths; CUDA: all).
        self.prefill_chunk = 8192 if on_cuda else 2048
        self.prefill_group = 1 << 30 if on_cuda else 1
        # Decode on CPU: when rows leave this many bytes of masked keys/values per row and layer unread by
        # attending one by one over their own columns (see _forward_step); ~25 us of extra calls pays for it.
        self.per_row_attention_bytes = 128 * 1024
        # CPU fp32: matmuls of at most this many rows run as weight @ x.T (see _weight_times_rows); 0: never.
        self.few_rows = 16 if eager_cpu else 0
        self._few_limit = self.few_rows  # the limit at the current thread count (set by _threads)

        # What each cache row holds (host side): the ids in columns 0 .. _row_len[r]-1 and the session
        # that owns the row (None: free, its ids still serve as a prefix for any prompt).
        self._row_tokens = torch.zeros((B, S), dtype=torch.long)
        self._row_len = [0] * B
        self._row_session: list[Hashable | None] = [None] * B
        self._sessions: dict[Hashable, int] = {}  # session -> row
        self._dropped: dict[Hashable, str] = {}  # session -> why its cached state went (for the log)
        # Token counts, and host seconds spent placing + prefilling prompts and decoding (on CUDA the host
        # seconds include waiting for the GPU only where a step syncs): where a rollout's time goes.
        self.stats: dict[str, float] = {
            "prompt_tokens": 0, "reused_tokens": 0, "prefilled_tokens": 0, "reencoded_sessions": 0,
            "decode_steps": 0, "prefill_s": 0.0, "decode_s": 0.0,
            "drafted_tokens": 0, "accepted_tokens": 0,
        }

        self.w = self._alloc_weights()
        self._fingerprint: tuple | None = None
        self.sync_weights()

        self._step_fn = self._forward_step
        if self.compile:
            self._step_fn = torch.compile(self._forward_step, dynamic=False, fullgraph=True)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_cuda_graph else None

    # ------------------------------------------------------------------ weights

    def _alloc_weights(self) -> _Weights:
        def empty_like(t: Tensor) -> Tensor:
            return torch.empty(t.shape, dtype=self.dtype, device=self.device)

        src = self._source_weights()
        embed = empty_like(src["embed"])
        tied = src["lm_head"] is src["embed"] or src["lm_head"].data_ptr() == src["embed"].data_ptr()
        w = _Weights(
            embed=embed, lm_head=embed if tied else empty_like(src["lm_head"]), norm=empty_like(src["norm"])
        )
        for layer in src["layers"]:
            w.ln1.append(empty_like(layer["ln1"]))
            w.ln2.append(empty_like(layer["ln2"]))
            w.qkv.append(empty_like(torch.cat([layer["q"], layer["k"], layer["v"]])))
            biases = [layer[f"{n}_bias"] for n in "qkv"]
            has_bias = any(b is not None for b in biases)
            w.qkv_bias.append(
                torch.zeros(w.qkv[-1].shape[0], dtype=self.dtype, device=self.device) if has_bias else None
            )
            w.o.append(empty_like(layer["o"]))
            w.gate_up.append(empty_like(torch.cat([layer["gate"], layer["up"]])))
            w.down.append(empty_like(layer["down"]))
        self._tied = tied
        return w

    def _source_weights(self) -> dict[str, Any]:
        """Effective weights of the model (LoRA deltas merged), as views or fresh tensors."""
        base = self._base
        layers = []
        for block in base.model.layers:
            attn, mlp = block.self_attn, block.mlp
            layer = {"ln1": block.input_layernorm.weight, "ln2": block.post_attention_layernorm.weight}
            for name, lin in [
                ("q", attn.q_proj),
                ("k", attn.k_proj),
                ("v", attn.v_proj),
                ("o", attn.o_proj),
                ("gate", mlp.gate_proj),
                ("up", mlp.up_proj),
                ("down", mlp.down_proj),
            ]:
                layer[name], layer[f"{name}_bias"] = _effective_linear(lin)
            layers.append(layer)
        return {
            "embed": _plain_weight(base.model.embed_tokens),
            "lm_head": _plain_weight(base.lm_head),
            "norm": base.model.norm.weight,
            "layers": layers,
        }

    def _model_fingerprint(self) -> tuple:
        # In-place updates (optimizer steps, load_state_dict) bump a tensor's _version; new adapters
        # add parameters; peft's merge/disable/set_adapter switches are read off the LoRA layers.
        state = [(id(p), p._version) for p in self.model.parameters()]
        for module in self._base.modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
                state.append((module.merged, module.disable_adapters, tuple(module.active_adapters)))
        return tuple(state)

    @torch.no_grad()
    def sync_weights(self, force: bool = False) -> bool:
        """Copy the model's current weights into the engine if they changed; returns whether it copied.

        Copies go into the existing buffers, so captured CUDA graphs stay valid.
        """
        fingerprint = self._model_fingerprint()
        if not force and fingerprint == self._fingerprint:
            return False
        src, w = self._source_weights(), self.w
        w.embed.copy_(src["embed"])
        if not self._tied:
            w.lm_head.copy_(src["lm_head"])
        w.norm.copy_(src["norm"])
        for i, layer in enumerate(src["layers"]):
            w.ln1[i].copy_(layer["ln1"])
            w.ln2[i].copy_(layer["ln2"])
            w.qkv[i].copy_(torch.cat([layer["q"], layer["k"], layer["v"]]))
            if w.qkv_bias[i] is not None:
                sizes = [layer[n].shape[0] for n in "qkv"]
                for part, n in zip(w.qkv_bias[i].split(sizes), "qkv", strict=True):
                    bias = layer[f"{n}_bias"]
                    part.copy_(bias) if bias is not None else part.zero_()
            w.o[i].copy_(layer["o"])
            w.gate_up[i].copy_(torch.cat([layer["gate"], layer["up"]]))
            w.down[i].copy_(layer["down"])
        if self._fingerprint is not None:
            self._forget_all("the weights changed")
        self._fingerprint = fingerprint
        return True

    @torch.no_grad()
    def _rope_tables(self, n_positions: int) -> tuple[Tensor, Tensor]:
        """cos/sin for positions 0..n-1 from the model's own rotary module (its rope_theta and scaling).

        HF computes them per position with elementwise ops, so a table lookup gives identical values.
        The sin table carries rotate_half's sign: rotate_half(x) * sin == roll(x, D/2) * signed_sin.
        """
        rotary = self._base.model.rotary_emb
        rope_type = getattr(rotary, "rope_type", "default")
        if "dynamic" in str(rope_type) or "longrope" in str(rope_type):
            raise ValueError(f"rope_type {rope_type!r} depends on the sequence length; not supported")
        pos = torch.arange(n_positions, device=self.device)[None]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = rotary(probe, pos)
        half = self.head_dim // 2
        sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)
        return cos[0].contiguous(), sin.contiguous()

    # ------------------------------------------------------------------ the decode step

    def _rms_norm(self, x: Tensor, weight: Tensor) -> Tensor:
        # HF's LlamaRMSNorm, op for op (fp32 statistics, round, then scale) so results match it.
        if x.dtype == torch.float32:
            # fp32 (CPU): the casts are no-ops; torch's rms_norm runs the same ops (bit-identical here)
            # from C++, one dispatch instead of eight: ~3 us less per norm, five norms a step.
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def _linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``F.linear`` for 2-d ``x``; on CPU in fp32, ``x`` of at most ``few_rows`` rows goes through
        :func:`_weight_times_rows` (1.35-2.6x less time per decode step at 1-2 rows, see there); not in the
        ``legacy`` mode, which keeps the path before issue 15 for comparisons."""
        if self._streams(x.shape[0]) and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 2:
            y = _weight_times_rows(weight, x)
            return y if bias is None else y + bias
        return F.linear(x, weight, bias)

    def _streams(self, rows: int) -> bool:
        """Whether a matmul over ``rows`` rows runs as :func:`_weight_times_rows` at the current thread count."""
        return rows <= self._few_limit and not self.legacy

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        """One query token per row: q ``[b, Hkv, G, D]``, k/v ``[b, Hkv, kvl, D]``, bias ``[b, 1, 1, kvl]``."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)

    def _forward_step(self, b: int, kvl: int, lens: Sequence[int] | None = None, full: bool = False) -> Tensor:
        """Decode one token for cache rows ``0..b-1`` attending to columns ``0..kvl-1``.

        Reads ``tokens``/``cur``/``start``, writes the new keys/values at column ``cur``, returns
        the next-token logits ``[b, vocab]`` in fp32. Running it twice on the same inputs gives the
        same result (it only reads columns < cur plus the one it writes): graph warm-up relies on it.
        ``lens`` (eager only; rows starting at column 0): each row's columns, ``cur + 1``; attention
        then runs row by row over exactly those, rather than over ``kvl`` columns under a mask.
        ``full`` (eager only): every row starts at column 0 and uses all ``kvl`` columns, so the mask
        would keep everything: no mask is built (6 ops a step, a tenth of a small model's step).
        """
        w, Hq, Hkv, D = self.w, self.n_heads, self.n_kv_heads, self.head_dim
        rows, cur, start = self._rows[:b], self.cur[:b], self.start[:b]
        if full:  # every row at position and column kvl - 1: views and slice copies, no index ops
            cos, sin = self._cos[kvl - 1 : kvl, None], self._sin[kvl - 1 : kvl, None]  # [1, 1, D]
        else:
            pos = cur - start
            cos, sin = self._cos[pos].unsqueeze(1), self._sin[pos].unsqueeze(1)  # [b, 1, D]
        bias = None
        if lens is None and not full:
            cols = self._cols[:kvl]
            mask = (cols >= start[:, None]) & (cols <= cur[:, None])
            # Additive mask, built once per step rather than converted from bool in each layer's attention.
            bias = torch.zeros((b, 1, 1, kvl), dtype=self.dtype, device=self.device)
            bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
        x = F.embedding(self.tokens[:b], w.embed)  # [b, hidden]
        for i in range(self.n_layers):
            h = self._rms_norm(x, w.ln1[i])
            qkv = self._linear(h, w.qkv[i], w.qkv_bias[i]).view(b, Hq + 2 * Hkv, D)
            qk, v = qkv[:, : Hq + Hkv], qkv[:, Hq + Hkv :]
            qk = qk * cos + qk.roll(D // 2, dims=-1) * sin  # RoPE on q and k heads together
            q, k = qk[:, :Hq], qk[:, Hq:]
            kc, vc = self.k_cache[i], self.v_cache[i]
            if full:
                kc[:b, :, kvl - 1] = k
                vc[:b, :, kvl - 1] = v
            else:
                kc[rows, :, cur] = k
                vc[rows, :, cur] = v
            # GQA without copying K/V: the G query heads sharing a KV head act as G query positions
            # (all at the same position, hence no causal mask between them).
            q = q.reshape(b, Hkv, Hq // Hkv, D)
            if lens is None:
                o = self._attention(q, kc[:b, :, :kvl], vc[:b, :, :kvl], bias)
            else:  # long rows of unequal lengths (CPU): no reads or arithmetic over the masked columns
                o = torch.stack(
                    [self._attention(q[r : r + 1], kc[r : r + 1, :, :n], vc[r : r + 1, :, :n], None)[0]
                     for r, n in enumerate(lens)]
                )
            x = x + self._linear(o.reshape(b, Hq * D), w.o[i])
            h = self._rms_norm(x, w.ln2[i])
            gate, up = self._linear(h, w.gate_up[i]).chunk(2, dim=-1)
            x = x + self._linear(F.silu(gate) * up, w.down[i])
        h = self._rms_norm(x, w.norm)
        if self._logits_buf is not None and h.dtype == torch.float32:  # CPU eager: into the step's buffer
            if self._streams(b):
                return self._logits_buf[:b].copy_(_weight_times_rows(w.lm_head, h))
            return torch.mm(h, w.lm_head.t(), out=self._logits_buf[:b])
        return F.linear(h, w.lm_head).float()

    def _decode(self, b: int, kvl: int, lens: Sequence[int] | None = None, full: bool = False) -> Tensor:
        """Run one decode step (replaying its CUDA graph when enabled), advance ``cur``, return logits.

        With graphs the logits live in the graph's output buffer: read them before the next step.
        ``lens``, ``full``: see :meth:`_forward_step` (ignored with graphs).
        """
        if self.use_cuda_graph:
            graph, logits = self._graphs.get((b, kvl)) or self._capture(b, kvl)
            graph.replay()
        else:
            logits = self._step_fn(b, kvl, lens) if lens is not None else (
                self._step_fn(b, kvl, None, True) if full else self._step_fn(b, kvl))
        # Outside the graph so that warm-up runs stay idempotent; clamped so idle rows stay in bounds.
        self.cur[:b].add_(1).clamp_(max=self.max_seq_len - 1)
        return logits

    def _capture(self, b: int, kvl: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up (and compilation) outside the capture
            for _ in range(2):
                self._step_fn(b, kvl)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # All graphs share one pool: their intermediates are dead between replays, which never overlap,
        # and each graph's output stays allocated because we hold it.
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self._step_fn(b, kvl)
        self._graphs[(b, kvl)] = graph, logits
        return graph, logits

    def _buckets(self, n: int, columns: int) -> tuple[int, int]:
        """Batch rows and KV columns to run for ``n`` sequences needing ``columns`` cache columns.

        Rounded up so a few graphs serve all calls; a compiled step is compiled once, at full size.
        """
        if self.compile:
            return self.max_batch, self.max_seq_len
        b = 1 << max(0, math.ceil(math.log2(n))) if self.use_cuda_graph else n
        return min(b, self.max_batch), min(self.max_seq_len, -(-columns // 64) * 64)

    # ------------------------------------------------------------------ prefill

    @torch.no_grad()
    def _extend(
        self,
        rows: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        offsets: Sequence[int],
        every: bool = False,
    ) -> Tensor:
        """Append ``suffixes[j]`` to cache row ``rows[j]``, whose columns ``0 .. offsets[j]-1`` already hold
        the keys/values of the tokens before it; returns each row's next-token logits ``[n, vocab]`` (fp32),
        or with ``every`` the logits after every new token, packed ``[sum of suffix lengths, vocab]`` (suffix
        after suffix: what a speculative pass verifies).

        The new tokens are packed (no padding) through the matmuls, in chunks of ``prefill_chunk``
        tokens; a row's tokens may span chunks (later ones attend to what earlier ones wrote).
        Sets ``cur[rows]`` to the new lengths and ``start[rows]`` to 0.
        """
        n, S = len(rows), self.max_seq_len
        ends = [o + len(s) for o, s in zip(offsets, suffixes, strict=True)]
        if any(len(s) == 0 for s in suffixes):
            raise ValueError("empty prompt (or nothing new after the reused prefix)")
        if max(ends) > S:
            raise ValueError(f"prompt of {max(ends)} tokens does not fit max_seq_len={S}")
        chunks: list[list[tuple[int, int, int]]] = [[]]  # pieces (j, a, e): tokens a..e-1 of suffix j
        used = 0
        for j, suffix in enumerate(suffixes):
            a = 0
            while a < len(suffix):
                if used == self.prefill_chunk:
                    chunks.append([])
                    used = 0
                take = min(len(suffix) - a, self.prefill_chunk - used)
                chunks[-1].append((j, a, a + take))
                used, a = used + take, a + take
        total = sum(len(s) for s in suffixes)
        last = torch.empty((total if every else n, self.w.embed.shape[1]), dtype=self.dtype, device=self.device)
        packed = 0
        for pieces in chunks:
            packed = self._extend_chunk(rows, suffixes, offsets, pieces, last, packed if every else None)
        self.cur[torch.as_tensor(list(rows), device=self.device)] = torch.as_tensor(ends, device=self.device)
        self.start[torch.as_tensor(list(rows), device=self.device)] = 0
        if not every:
            self.stats["prefilled_tokens"] += total
        return self._linear(self._rms_norm(last, self.w.norm), self.w.lm_head).float()

    def _extend_chunk(
        self,
        rows: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        offsets: Sequence[int],
        pieces: list[tuple[int, int, int]],
        last: Tensor,
        packed: int | None = None,
    ) -> int:
        """One prefill chunk through all layers; stores the final hidden state of rows that end in it in
        ``last[j]``, or with ``packed`` (the packed index of the chunk's first token) of every token in
        ``last[packed ...]``. Returns the packed index after the chunk's last token."""
        w, Hq, Hkv, D, dev = self.w, self.n_heads, self.n_kv_heads, self.head_dim, self.device
        G = Hq // Hkv
        ids = [t for j, a, e in pieces for t in suffixes[j][a:e]]
        T = len(ids)
        cols_host = [c for j, a, e in pieces for c in range(offsets[j] + a, offsets[j] + e)]
        rows_host = [rows[j] for j, a, e in pieces for _ in range(a, e)]
        col = torch.tensor(cols_host, device=dev)
        row = torch.tensor(rows_host, device=dev)
        cos, sin = self._cos[col].unsqueeze(1), self._sin[col].unsqueeze(1)  # [T, 1, D]

        # Attention groups: pieces attended together (padded to the longest), with their masks built once.
        groups = []
        first = 0  # packed index of the group's first token
        for g0 in range(0, len(pieces), self.prefill_group):
            group = pieces[g0 : g0 + self.prefill_group]
            lengths = [e - a for _, a, e in group]
            m, C = len(group), max(lengths)
            kvl = max(offsets[j] + e for j, _, e in group)
            starts = torch.tensor([offsets[j] + a for j, a, _ in group], device=dev)
            qcol = starts[:, None] + torch.arange(C, device=dev)  # [m, C] column of each query
            allowed = self._cols[:kvl] <= qcol[:, :, None]  # causal over the row's columns 0..kvl-1
            bias = torch.zeros((m, C, kvl), dtype=self.dtype, device=dev).masked_fill_(~allowed, float("-inf"))
            bias = bias[:, None].expand(m, G, C, kvl).reshape(m, 1, G * C, kvl)
            group_rows = [rows[j] for j, _, _ in group]
            if group_rows == list(range(group_rows[0], group_rows[0] + m)):
                key_rows: slice | Tensor = slice(group_rows[0], group_rows[0] + m)
            else:
                key_rows = torch.tensor(group_rows, device=dev)
            if m == 1:
                index = None
            else:  # packed token -> (piece, position) and back; padding repeats a piece's last token
                offs, total = [], first
                for length in lengths:
                    offs.append(total)
                    total += length
                pos = torch.arange(C, device=dev)
                base = torch.tensor(offs, device=dev)[:, None]
                index = base + torch.minimum(pos, torch.tensor(lengths, device=dev)[:, None] - 1)  # [m, C]
                valid = (pos < torch.tensor(lengths, device=dev)[:, None]).reshape(-1)
                back = torch.arange(m * C, device=dev)[valid]  # padded slot of each packed token
                index = (index, back)
            groups.append((first, sum(lengths), m, C, kvl, bias, key_rows, index))
            first += sum(lengths)

        x = F.embedding(torch.tensor(ids, device=dev), w.embed)  # [T, hidden]
        for i in range(self.n_layers):
            h = self._rms_norm(x, w.ln1[i])
            qkv = self._linear(h, w.qkv[i], w.qkv_bias[i]).view(T, Hq + 2 * Hkv, D)
            qk, v = qkv[:, : Hq + Hkv], qkv[:, Hq + Hkv :]
            qk = qk * cos + qk.roll(D // 2, dims=-1) * sin
            q, k = qk[:, :Hq], qk[:, Hq:]
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc[row, :, col] = k
            vc[row, :, col] = v
            o = torch.empty((T, Hq, D), dtype=q.dtype, device=dev)
            for start, count, m, C, kvl, bias, key_rows, index in groups:
                qg = q[start : start + count] if index is None else q[index[0]]  # [C, Hq, D] / [m, C, Hq, D]
                # G query heads per KV head become G x C query positions (as in the decode step)
                qg = qg.reshape(m, C, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(m, Hkv, G * C, D)
                out = self._attention(qg, kc[key_rows, :, :kvl], vc[key_rows, :, :kvl], bias)
                out = out.reshape(m, Hkv, G, C, D).permute(0, 3, 1, 2, 4).reshape(m * C, Hq, D)
                o[start : start + count] = out if index is None else out[index[1]]
            x = x + self._linear(o.reshape(T, Hq * D), w.o[i])
            h = self._rms_norm(x, w.ln2[i])
            gate, up = self._linear(h, w.gate_up[i]).chunk(2, dim=-1)
            x = x + self._linear(F.silu(gate) * up, w.down[i])
        if packed is not None:
            last[packed : packed + T] = x
            return packed + T
        end = 0
        for j, a, e in pieces:
            end += e - a
            if e == len(suffixes[j]):
                last[j] = x[end - 1]
        return 0

    @torch.no_grad()
    def _prefill_hf(self, prompts: Sequence[Sequence[int]], slots: Tensor) -> tuple[Tensor, int]:
        """The legacy prefill: the HF model on ``prompts`` (left-padded), KV copied into cache rows ``slots``.

        Returns the last-position logits ``[n, vocab]`` (fp32) and the padded length P; row
        ``slots[j]`` then holds its prompt in columns ``P - len_j .. P - 1``.
        """
        n, P = len(prompts), max(len(p) for p in prompts)
        if P > self.max_seq_len:
            raise ValueError(f"prompt of {P} tokens does not fit max_seq_len={self.max_seq_len}")
        ids = torch.full((n, P), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, P), dtype=torch.long)
        for j, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError("empty prompt")
            ids[j, P - len(p) :] = torch.as_tensor(p, dtype=torch.long)
            mask[j, P - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()  # no dropout in rollouts
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=1,
            )
        finally:
            self.model.train(was_training)
        contiguous = bool(torch.equal(slots.cpu(), torch.arange(int(slots[0]), int(slots[0]) + n)))
        # transformers renamed the output field past_key_values -> cache (5.2x); accept both.
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        for i, (k, v) in enumerate(_cache_layers(cache)):
            if contiguous:  # plain slice copy; the index form below is a scatter
                s0 = int(slots[0])
                self.k_cache[i][s0 : s0 + n, :, :P].copy_(k)
                self.v_cache[i][s0 : s0 + n, :, :P].copy_(v)
            else:
                self.k_cache[i][slots, :, :P] = k.to(self.dtype)
                self.v_cache[i][slots, :, :P] = v.to(self.dtype)
        lens = torch.tensor([len(p) for p in prompts], device=self.device)
        self.start[slots] = P - lens
        self.cur[slots] = P
        return out.logits[:, -1].float(), P

    # ------------------------------------------------------------------ what the cache rows hold

    def _prefix_lengths(self, prompt: Sequence[int]) -> Tensor:
        """How many leading ids of ``prompt`` each cache row holds (``[max_batch]``, host)."""
        m = min(len(prompt), self.max_seq_len)
        same = self._row_tokens[:, :m] == torch.as_tensor(prompt[:m], dtype=torch.long)
        same &= torch.arange(m) < torch.tensor(self._row_len)[:, None]
        differ = ~same
        return torch.where(differ.any(1), differ.int().argmax(1), m)

    def _place(self, prompts: Sequence[Sequence[int]], keys: Sequence[Hashable | None]) -> list[int]:
        """Give prompt ``j`` cache row ``j`` holding its longest cached prefix; returns the prefix lengths.

        The prefix comes from the prompt's session row or any row holding more of it (copied). Sessions
        not in this call that sit in rows ``0 .. n-1`` move to free rows, or are evicted when none is left.
        """
        n, B = len(prompts), self.max_batch
        wanted = {k for k in keys if k is not None}
        if len(wanted) != sum(k is not None for k in keys):
            raise ValueError("a session appears twice in one call")
        donors, offsets = [], []
        for j, (prompt, key) in enumerate(zip(prompts, keys, strict=True)):
            if len(prompt) == 0:
                raise ValueError("empty prompt")
            if len(prompt) > self.max_seq_len:
                raise ValueError(f"prompt of {len(prompt)} tokens does not fit max_seq_len={self.max_seq_len}")
            lengths = self._prefix_lengths(prompt)
            own = self._sessions.get(key) if key is not None else None
            best = own if own is not None else j
            if int(lengths.max()) > int(lengths[best]):
                best = int(lengths.argmax())
            reuse = min(int(lengths[best]), len(prompt) - 1)  # at least one token to prefill: its logits
            donors.append(best if reuse > 0 else None)
            offsets.append(max(reuse, 0))
            if key is not None:
                self._explain(key, prompt, own, int(lengths[own]) if own is not None else 0, reuse)
        self.stats["prompt_tokens"] += sum(map(len, prompts))
        self.stats["reused_tokens"] += sum(offsets)

        moves = [(src, j, offsets[j]) for j, src in enumerate(donors) if src is not None and src != j]
        free = [r for r in range(n, B) if self._row_session[r] is None or self._row_session[r] in wanted]
        free.sort(key=lambda r: (self._row_session[r] is None, self._row_len[r]))  # vacated, then least held
        displaced = []
        for r in range(n):
            key = self._row_session[r]
            if key is None or key in wanted:
                continue
            if free:
                target = free.pop(0)
                moves.append((r, target, self._row_len[r]))
                displaced.append((key, target, self._row_len[r]))
            else:
                self._forget(key, "evicted: more sessions than cache rows")
        self._move_rows(moves)

        for key in wanted:  # sessions of this call leave their old rows (the ids there stay usable)
            if key in self._sessions:
                self._row_session[self._sessions.pop(key)] = None
        for key, target, length in displaced:
            self._sessions[key] = target
            self._row_session[target], self._row_len[target] = key, length
        for j, key in enumerate(keys):
            self._row_session[j], self._row_len[j] = key, offsets[j]
            if key is not None:
                self._sessions[key] = j
                self._dropped.pop(key, None)
        return offsets

    def _explain(self, key: Hashable, prompt: Sequence[int], own: int | None, held: int, reuse: int) -> None:
        """Log why a session's prompt is not a continuation of what its row holds (INFO)."""
        if own is not None:
            cached = self._row_len[own]
            if held < min(cached, len(prompt)):
                self.stats["reencoded_sessions"] += 1
                logger.info(
                    "session %r: the prompt differs from its cached ids at token %d of %d; "
                    "re-encoding %d of %d prompt tokens", key, held, cached, len(prompt) - reuse, len(prompt)
                )
        elif key in self._dropped:
            self.stats["reencoded_sessions"] += 1
            logger.info(
                "session %r: no cached state (%s); encoding %d of %d prompt tokens",
                key, self._dropped.pop(key), len(prompt) - reuse, len(prompt),
            )

    @torch.no_grad()
    def _move_rows(self, moves: Sequence[tuple[int, int, int]]) -> None:
        """Copy the first ``n`` columns of row ``src`` into row ``dst`` for each ``(src, dst, n)`` (all
        reads happen before any write, so rows may swap)."""
        moves = [m for m in moves if m[2] > 0]
        if not moves:
            return
        src = torch.tensor([m[0] for m in moves])
        dst = torch.tensor([m[1] for m in moves])
        n = max(m[2] for m in moves)
        for cache in (*self.k_cache, *self.v_cache):
            cache[dst.to(self.device), :, :n] = cache[src.to(self.device), :, :n]
        self._row_tokens[dst, :n] = self._row_tokens[src, :n]

    def _forget(self, key: Hashable, reason: str) -> None:
        row = self._sessions.pop(key, None)
        if row is not None:
            self._row_session[row] = None
            if len(self._dropped) > 4 * self.max_batch + 1024:
                self._dropped.clear()
            self._dropped[key] = reason

    def _forget_all(self, reason: str) -> None:
        """Invalidate every row (the cached keys/values no longer match their ids)."""
        for key in list(self._sessions):
            self._forget(key, reason)
        self._row_len = [0] * self.max_batch

    def release(self, sessions: Iterable[Hashable]) -> None:
        """End these sessions: their rows become free (their ids stay usable as a prefix until overwritten)."""
        for key in sessions:
            row = self._sessions.pop(key, None)
            if row is not None:
                self._row_session[row] = None
            self._dropped.pop(key, None)

    @property
    def sessions(self) -> dict[Hashable, int]:
        """Live sessions and the cache row each holds (a copy)."""
        return dict(self._sessions)

    @contextlib.contextmanager
    def _threads(self, rows: int = 1) -> Iterator[None]:
        """Run with the engine's CPU thread count for ``rows`` sequences (CPU only; restored afterwards)."""
        if self.device.type != "cpu" or self.legacy:
            yield
            return
        wanted, before = self.threads or default_cpu_threads(rows), torch.get_num_threads()
        # Past 4 rows, one thread runs x @ W.T faster through F.linear's kernels than as W @ x.T (measured
        # per row count over SmolLM2's matmuls; two threads gain from W @ x.T up to 16 rows and more).
        self._few_limit = self.few_rows if wanted > 1 else min(self.few_rows, 4)
        if wanted == before:
            yield
            return
        torch.set_num_threads(wanted)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # ------------------------------------------------------------------ sampling

    @staticmethod
    def _sample(
        logits: Tensor,
        temperature: float,
        top_p: float,
        top_k: int,
        generator: torch.Generator | None,
        legacy: bool = False,
        scratch: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Pick the next tokens and their log-probs; no host sync.

        On CUDA sampling uses the exponential-race trick (argmax of log p - log E, E ~ Exp(1)), which
        draws from softmax exactly, in one pass, without multinomial's host round-trip; on CPU, the
        inverse CDF (``legacy``: the race there too, and greedy log-probs through ``logsumexp``).
        ``scratch`` (CPU, greedy): a float32 buffer of the logits' shape for the log-softmax, so that
        no [batch, vocab] tensor is allocated.
        """
        if temperature <= 0:
            if legacy:
                token = logits.argmax(-1)
                return token, logits.gather(-1, token[:, None]).squeeze(-1) - logits.logsumexp(-1)
            if scratch is not None and logits.dtype == torch.float32 and logits.is_contiguous():
                # CPU: torch's max-with-index reduction is scalar code (~2 ns per logit), and exp_ is slower
                # than the fused log-softmax kernel; 3x less time for 16 x 49k logits, same tokens.
                token = _first_argmax(logits)
                torch._log_softmax(logits, -1, False, out=scratch)
                return token, scratch.gather(-1, token[:, None]).squeeze(-1)
            # One pass for the max and its (first) index; log p(argmax) = -log sum exp(logits - max).
            best, token = logits.max(-1, keepdim=True)
            return token.squeeze(-1), (logits - best).exp_().sum(-1).log_().neg_()
        x = logits / temperature
        index = None
        if top_k > 0 or top_p < 1.0:
            if top_k > 0:
                x, index = x.topk(min(top_k, x.shape[-1]), dim=-1)  # sorted, largest first
            else:
                x, index = x.sort(dim=-1, descending=True)
            if top_p < 1.0:
                probs = x.softmax(-1)
                # Drop a token when the tokens before it already cover top_p; the first always stays.
                x = x.masked_fill(probs.cumsum(-1) - probs > top_p, float("-inf"))
        if x.device.type == "cpu" and not legacy:
            # On CPU drawing an exponential per vocabulary entry costs 4-5x more than the whole inverse-CDF
            # draw: one uniform per row, searched in the cumulative (unnormalised) probabilities.
            top = x.amax(-1, keepdim=True)
            probs = (x - top).exp_()
            norm = probs.sum(-1)
            cdf = probs.cumsum_(-1)
            u = torch.rand((x.shape[0], 1), generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
            choice = torch.searchsorted(cdf, u, right=True).clamp_(max=x.shape[-1] - 1).squeeze(-1)
            logprob = x.gather(-1, choice[:, None]).squeeze(-1) - top.squeeze(-1) - norm.log()
            token = choice if index is None else index.gather(-1, choice[:, None]).squeeze(-1)
            return token, logprob
        noise = torch.empty_like(x).exponential_(generator=generator).clamp_min_(1e-20).log_()
        choice = (x - noise).argmax(-1)
        logprob = x.gather(-1, choice[:, None]).squeeze(-1) - x.logsumexp(-1)
        token = choice if index is None else index.gather(-1, choice[:, None]).squeeze(-1)
        return token, logprob

    def _generator(self, seed: int | None) -> torch.Generator | None:
        return None if seed is None else torch.Generator(device=self.device).manual_seed(seed)

    def _eos(self, eos_token_ids: Iterable[int] | int | None) -> list[int]:
        if eos_token_ids is None:
            return self.default_eos
        return [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_token_ids: Iterable[int] | int | None = None,
        seed: int | None = None,
        sessions: Sequence[Hashable | None] | None = None,
    ) -> list[GenerationResult]:
        """Complete each prompt; greedy when ``temperature == 0``.

        Args:
            prompt_ids: token ids of each prompt (any lengths; more than ``max_batch`` is fine).
            max_new_tokens: most tokens generated per prompt (fewer if the cache would overflow).
            temperature, top_p, top_k: sampling settings; ``top_k=0`` and ``top_p=1`` disable them.
            eos_token_ids: tokens that end a completion (default: the tokenizer's EOS; ``()`` for none).
            seed: seeds a private generator, for reproducible sampling.
            sessions: a key per prompt (None: none) whose cache row is kept after the call, holding the
                prompt and its generated tokens, for the next prompt of the same key to continue
                (see the module docstring). Keys must differ within a call.
        """
        self.sync_weights()
        if sessions is not None and len(sessions) != len(prompt_ids):
            raise ValueError(f"Expects one session per prompt ({len(prompt_ids)}), actual {len(sessions)}")
        eos = torch.tensor(self._eos(eos_token_ids), dtype=torch.long, device=self.device)
        generator = self._generator(seed)
        results: list[GenerationResult] = []
        with self._threads(min(len(prompt_ids), self.max_batch)):
            for i in range(0, len(prompt_ids), self.max_batch):
                chunk = prompt_ids[i : i + self.max_batch]
                sampling = (max_new_tokens, temperature, top_p, top_k, eos, generator)
                if self.legacy:
                    self._forget_all("a legacy generate call")
                    results += self._generate_chunk_legacy(chunk, *sampling)
                else:
                    keys = list(sessions[i : i + self.max_batch]) if sessions is not None else [None] * len(chunk)
                    results += self._generate_chunk(chunk, keys, *sampling)
        return results

    def _generate_chunk(
        self,
        prompts: Sequence[Sequence[int]],
        keys: Sequence[Hashable | None],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        eos: Tensor,
        generator: torch.Generator | None,
    ) -> list[GenerationResult]:
        n, S = len(prompts), self.max_seq_len
        started = time.perf_counter()
        offsets = self._place(prompts, keys)
        logits = self._extend(range(n), [p[o:] for p, o in zip(prompts, offsets, strict=True)], offsets)
        decoding = time.perf_counter()
        for j, (p, o) in enumerate(zip(prompts, offsets, strict=True)):
            self._row_tokens[j, o : len(p)] = torch.as_tensor(p[o:], dtype=torch.long)
            self._row_len[j] = len(p)
        P = max(map(len, prompts))
        max_new = min(max_new_tokens, S + 1 - P)  # the last token is never written
        if self._speculating(temperature) and max_new > 1:
            return self._speculate_chunk(prompts, logits, max_new, eos, started, decoding)
        b, kvl = self._buckets(n, P + max_new - 1)
        if b > n:  # padding rows of a graph bucket write garbage past the ids they hold, never over them
            lens = [min(self._row_len[r], S - 1) for r in range(n, b)]
            self._row_len[n:b] = lens
            self.start[n:b], self.cur[n:b] = 0, torch.tensor(lens, device=self.device)
        # Masked columns per row (the same at every step, as all rows grow together) times their bytes per layer.
        masked = (P - sum(map(len, prompts)) / n) * 2 * self.n_kv_heads * self.head_dim * self.k_cache[0].element_size()
        per_row = b == n > 1 and masked >= self.per_row_attention_bytes
        # Rows of one length (batch 1 always) start at column 0 here and fill the same columns: no mask.
        full = b == n and all(len(p) == P for p in prompts)
        tokens = torch.empty((n, max(max_new, 0)), dtype=torch.long, device=self.device)
        logprobs = torch.empty((n, max(max_new, 0)), dtype=torch.float32, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        steps = 0
        scratch = self._scratch[:n] if self._scratch is not None else None
        poll = 1 if self.device.type == "cpu" else 16
        for t in range(max_new):
            token, logprob = self._sample(logits, temperature, top_p, top_k, generator, scratch=scratch)
            tokens[:, t], logprobs[:, t] = token, logprob
            steps = t + 1
            done |= torch.isin(token, eos)
            # Poll for "all finished" only now and then on a GPU (each poll is a host sync that stalls its queue);
            # on a CPU at every step (a poll costs microseconds, a wasted step of a 135M model tens of ms).
            if t == max_new - 1 or (t % poll == poll - 1 and bool(done.all())):
                break
            self.tokens[:n] = token
            if self.use_cuda_graph:
                logits = self._decode(b, kvl)[:n]
            elif per_row:  # rows of very unequal lengths: each over its own columns
                logits = self._decode(b, P + t + 1, [len(p) + t + 1 for p in prompts])
            else:  # attend over the columns written so far only (the longest row's)
                logits = self._decode(b, P + t + 1, None, full)[:n]
        generated = tokens[:, :steps].tolist()
        self._count_time(started, decoding, steps)
        fed = max(steps - 1, 0)  # every token but the last went through a decode step: its KV is cached
        self._hold_replies(prompts, [ids[:fed] for ids in generated])
        return _collect(generated, logprobs[:, :steps].tolist(), set(eos.tolist()))

    def _speculating(self, temperature: float) -> bool:
        """Whether greedy calls draft tokens by prompt lookup (eager decoding only: a captured graph has
        one token per row)."""
        return self.speculate > 0 and temperature <= 0 and not self.use_cuda_graph and not self.legacy

    def _speculate_chunk(
        self,
        prompts: Sequence[Sequence[int]],
        logits: Tensor,
        max_new: int,
        eos: Tensor,
        started: float,
        decoding: float,
    ) -> list[GenerationResult]:
        """Greedy decoding of cache rows ``0 .. n-1`` (prompts already prefilled, ``logits`` after them) with
        prompt-lookup drafts.

        Each pass feeds every unfinished row its last token plus up to ``speculate`` drafted ones (what
        followed the latest earlier occurrence of the row's last 1-3 tokens in its prompt and reply) and
        computes the logits after each; the row keeps the greedy tokens up to and including the first one
        that differs from the draft. Every kept token is the argmax of logits over exactly the tokens before
        it, so the reply is the plain greedy one (up to float rounding of a pass over several tokens vs one);
        a pass costs little more than a one-token step while the weights' memory reads dominate, so each
        accepted draft token saves most of a step. The keys/values written for rejected draft tokens lie
        past the row's length and are overwritten by the next pass.
        """
        n, eos_ids = len(prompts), set(eos.tolist())
        scratch = self._scratch[:n] if self._scratch is not None else None
        token, logprob = self._sample(logits, 0.0, 1.0, 0, None, scratch=scratch)
        generated = [[t] for t in token.tolist()]
        logprobs = [[lp] for lp in logprob.tolist()]
        # Each row's context (prompt + reply) in a preallocated array, for the n-gram lookup.
        context = [np.empty(len(p) + max_new, dtype=np.int64) for p in prompts]
        for j, p in enumerate(prompts):
            context[j][: len(p)] = p
            context[j][len(p)] = generated[j][0]
        draft_len = [self.speculate] * n
        active = [j for j in range(n) if generated[j][0] not in eos_ids]
        passes = 0
        while active:
            drafts, suffixes, offsets = [], [], []
            for j in active:
                size = len(prompts[j]) + len(generated[j])
                room = max_new - len(generated[j]) - 1  # the pass yields len(draft) + 1 tokens at most
                draft = _lookup_draft(context[j][:size], min(draft_len[j], room)) if room > 0 else []
                drafts.append(draft)
                suffixes.append([generated[j][-1], *draft])
                offsets.append(size - 1)
            logits = self._extend(active, suffixes, offsets, every=True)
            best = _first_argmax(logits)
            best_logprob = torch.log_softmax(logits, -1).gather(-1, best[:, None]).squeeze(-1)
            best_ids, best_lps = best.tolist(), best_logprob.tolist()
            passes += 1
            still, at = [], 0
            for j, draft, suffix in zip(active, drafts, suffixes, strict=True):
                accepted, finished = 0, False
                for i in range(len(suffix)):
                    t = best_ids[at + i]
                    context[j][len(prompts[j]) + len(generated[j])] = t
                    generated[j].append(t)
                    logprobs[j].append(best_lps[at + i])
                    if t in eos_ids or len(generated[j]) >= max_new:
                        finished = True
                        break
                    if i == len(draft) or draft[i] != t:
                        break
                    accepted += 1
                at += len(suffix)
                self.stats["drafted_tokens"] += len(draft)
                self.stats["accepted_tokens"] += accepted
                if draft:  # longer drafts while whole drafts pass, shorter after a miss (HF's heuristic)
                    grow = accepted == len(draft)
                    draft_len[j] = min(self.speculate, draft_len[j] + 2) if grow else max(1, draft_len[j] - 1)
                if not finished:
                    still.append(j)
            active = still
        self._count_time(started, decoding, passes + 1)
        # Every token but the last went through a pass: its keys/values are cached.
        self._hold_replies(prompts, [ids[:-1] for ids in generated])
        return _collect(generated, logprobs, eos_ids)

    def _hold_replies(self, prompts: Sequence[Sequence[int]], fed: Sequence[Sequence[int]]) -> None:
        """Record that cache row ``j`` now also holds ``fed[j]`` (reply tokens whose keys/values a step or
        pass wrote) after ``prompts[j]``."""
        for j, (p, ids) in enumerate(zip(prompts, fed, strict=True)):
            if ids:
                self._row_tokens[j, len(p) : len(p) + len(ids)] = torch.as_tensor(ids)
                self._row_len[j] = len(p) + len(ids)

    def _generate_chunk_legacy(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        eos: Tensor,
        generator: torch.Generator | None,
    ) -> list[GenerationResult]:
        """The generation loop before KV reuse (``legacy=True``), unchanged."""
        n = len(prompts)
        started = time.perf_counter()
        logits, P = self._prefill_hf(prompts, self._rows[:n])
        decoding = time.perf_counter()
        self.stats["prompt_tokens"] += sum(map(len, prompts))
        self.stats["prefilled_tokens"] += n * P  # padded: HF prefills every row to the longest
        max_new = min(max_new_tokens, self.max_seq_len + 1 - P)  # the last token is never written
        b, kvl = self._buckets(n, P + max_new - 1)
        self.start[n:b], self.cur[n:b] = 0, 0  # padding rows: harmless, in-bounds work
        tokens = torch.empty((n, max(max_new, 0)), dtype=torch.long, device=self.device)
        logprobs = torch.empty((n, max(max_new, 0)), dtype=torch.float32, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        steps = 0
        for t in range(max_new):
            token, logprob = self._sample(logits, temperature, top_p, top_k, generator, legacy=True)
            tokens[:, t], logprobs[:, t] = token, logprob
            steps = t + 1
            done |= torch.isin(token, eos)
            if t == max_new - 1 or (t % 16 == 15 and bool(done.all())):
                break
            self.tokens[:n] = token
            logits = self._decode(b, kvl)[:n]
        generated = tokens[:, :steps].tolist()
        self._count_time(started, decoding, steps)
        return _collect(generated, logprobs[:, :steps].tolist(), set(eos.tolist()))

    def _count_time(self, started: float, decoding: float, steps: int) -> None:
        """Add a call's prefill and decode seconds (from ``started`` / ``decoding`` to now) to ``stats``."""
        self.stats["prefill_s"] += decoding - started
        self.stats["decode_s"] += time.perf_counter() - decoding
        self.stats["decode_steps"] += max(steps - 1, 0)


class ContinuousBatcher:
    """Keeps up to ``engine.max_batch`` sequences decoding, refilling finished slots from a queue.

    Newcomers are prefilled as a group (all slots freed by the same step) into the free cache
    rows; rows already decoding are not disturbed. Each decode step pays a small host sync (which
    rows finished), in exchange for never decoding a finished row for long. The batcher owns the
    whole cache while it runs: the engine's sessions and cached prefixes are dropped.

    Example::

        batcher = ContinuousBatcher(engine, max_new_tokens=128)
        for index, result in batcher.run(prompts):  # results arrive as they finish
            ...
    """

    def __init__(
        self,
        engine: RolloutEngine,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_token_ids: Iterable[int] | int | None = None,
        seed: int | None = None,
    ) -> None:
        self.engine = engine
        self.max_new_tokens = max_new_tokens
        self.sampling = (temperature, top_p, top_k)
        self.eos = set(engine._eos(eos_token_ids))
        self.generator = engine._generator(seed)

    @torch.no_grad()
    def run(self, prompts: Iterable[Sequence[int]]) -> Iterator[tuple[int, GenerationResult]]:
        """Yield ``(index of the prompt, result)`` for every prompt, in order of completion."""
        engine = self.engine
        engine.sync_weights()
        engine._forget_all("the cache was used by a ContinuousBatcher")
        queue = deque(enumerate(prompts))
        B, S = engine.max_batch, engine.max_seq_len
        free = list(range(B))
        slots: dict[int, _Slot] = {}  # cache row -> sequence in it
        with engine._threads(B):
            while queue or slots:
                if queue and free:
                    free.sort()  # lowest rows first keeps the active rows, and the batch bucket, small
                    group = [queue.popleft() for _ in range(min(len(free), len(queue)))]
                    rows, free = free[: len(group)], free[len(group) :]
                    logits = engine._extend(rows, [p for _, p in group], [0] * len(group))
                    for row, (index, prompt) in zip(rows, group, strict=True):
                        slots[row] = _Slot(index, limit=min(self.max_new_tokens, S + 1 - len(prompt)))
                    yield from self._advance(rows, logits, slots, free)
                    continue  # fill every free row before the next decode step
                if not slots:
                    break
                active = sorted(slots)
                columns = int(engine.cur[active].max()) + 1
                b, kvl = engine._buckets(active[-1] + 1, columns)
                logits = engine._decode(b, kvl if engine.use_cuda_graph else columns)
                yield from self._advance(active, logits[active], slots, free)

    def _advance(
        self, rows: list[int], logits: Tensor, slots: dict[int, _Slot], free: list[int]
    ) -> Iterator[tuple[int, GenerationResult]]:
        """Sample the next token of each row in ``rows``; retire the sequences that finished."""
        engine = self.engine
        token, logprob = engine._sample(logits, *self.sampling, self.generator)
        row_index = torch.tensor(rows, device=engine.device)
        engine.tokens[row_index] = token
        for row, t, lp in zip(rows, token.tolist(), logprob.tolist(), strict=True):
            slot = slots[row]
            slot.ids.append(t)
            slot.logprobs.append(lp)
            if t in self.eos or len(slot.ids) >= slot.limit:
                del slots[row]
                free.append(row)
                reason = "stop" if t in self.eos else "length"
                yield slot.index, GenerationResult(slot.ids, slot.logprobs, reason)

    def generate(self, prompts: Sequence[Sequence[int]]) -> list[GenerationResult]:
        """All results, in the order of ``prompts``."""
        out: list[GenerationResult | None] = [None] * len(prompts)
        for index, result in self.run(prompts):
            out[index] = result
        return out  # type: ignore[return-value]


@dataclass
class _Slot:
    """A sequence decoding in one cache row of a ContinuousBatcher."""

    index: int
    limit: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------- helpers


def _first_argmax(x: Tensor, block: int = 1024) -> Tensor:
    """``x.argmax(-1)`` of a 2-d tensor (the first index of each row's maximum), through a vectorised ``amax``
    over blocks of the row and the scalar argmax over the one block holding the maximum only."""
    b, n = x.shape
    if n % block or n < 4 * block:
        return x.argmax(-1)
    blocks = x.view(b, n // block, block)
    which = blocks.amax(-1).argmax(-1)  # the first block holding the row's maximum
    inner = blocks[torch.arange(b, device=x.device), which].argmax(-1)
    return which * block + inner


def _lookup_draft(context: np.ndarray, limit: int, ngrams: Sequence[int] = (3, 2, 1)) -> list[int]:
    """Prompt lookup: the (up to ``limit``) tokens that followed the latest earlier occurrence of the
    context's last ``n`` tokens, for the longest ``n`` in ``ngrams`` that occurred before; [] if none."""
    size = len(context)
    if limit <= 0:
        return []
    for n in ngrams:
        if size <= n:
            continue
        tail = context[size - n :]
        # Earlier occurrences: starting before the tail does (they may overlap it: a loop of period < n).
        starts = np.flatnonzero(context[: size - n] == tail[0])
        for k in range(1, n):
            starts = starts[context[starts + k] == tail[k]]
        if starts.size:
            after = int(starts[-1]) + n
            return context[after : after + limit].tolist()
    return []


def _weight_times_rows(weight: Tensor, x: Tensor) -> Tensor:
    """``x @ weight.T`` (contiguous ``[rows, out]``) computed as ``(weight @ x.T).T``, for a few rows of ``x``.

    On CPU, torch hands ``x @ W.T`` with 2-16 rows of ``x`` to a GEMM that repacks the transposed weight on
    every call, and one row to a GEMV that reads it at about half the memory bandwidth; ``W @ x.T`` streams the
    weight once, as stored. Measured on two cores (SmolLM2 fp32, 1,500-token rows, one decode step): 2 rows
    102 -> 51 ms at 1 thread and 104 -> 33 ms at 2; the 49,152 x 576 LM head alone, 2 rows: 23 -> 5.5 ms.
    One row is padded to two. The sums run in another order than ``F.linear``'s: equal up to float rounding.
    """
    rows = x.shape[0]
    if rows == 1:
        x = torch.cat([x, x])
    return torch.mm(weight, x.t()).t()[:rows].contiguous()


def _collect(tokens: list[list[int]], logprobs: list[list[float]], eos: set[int]) -> list[GenerationResult]:
    """Cut each row after its first EOS."""
    results = []
    for ids, lps in zip(tokens, logprobs, strict=True):
        end = next((j + 1 for j, t in enumerate(ids) if t in eos), None)
        if end is None:
            results.append(GenerationResult(ids, lps, "length"))
        else:
            results.append(GenerationResult(ids[:end], lps[:end], "stop"))
    return results


def _base_model(model: Any) -> Any:
    """The HF model under a peft wrapper (or the model itself)."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        for cfg in peft_config.values():
            if getattr(cfg, "is_prompt_learning", False):
                raise NotImplementedError(
                    "prompt-learning adapters (p-tuning) need HF generate, not RolloutEngine"
                )
        model = model.get_base_model()
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        raise ValueError(f"RolloutEngine needs a llama-style causal LM, got {type(model).__name__}")
    return model


def _plain_weight(module: Any) -> Tensor:
    return module.base_layer.weight if hasattr(module, "base_layer") else module.weight


def _effective_linear(linear: Any) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of a Linear, with the active, unmerged peft LoRA deltas added to the weight."""
    if not (hasattr(linear, "get_delta_weight") and hasattr(linear, "base_layer")):
        return linear.weight, linear.bias
    base = linear.base_layer
    weight = base.weight
    if not linear.merged and not linear.disable_adapters:
        for name in linear.active_adapters:
            if name in linear.lora_A:
                if getattr(linear, "use_dora", {}).get(name, False):
                    raise NotImplementedError("DoRA adapters are not supported by RolloutEngine")
                weight = weight + linear.get_delta_weight(name)
    return weight, base.bias


def _cache_layers(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """Per-layer (keys, values) ``[batch, kv_heads, seq, head_dim]`` from any HF cache flavour."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]
