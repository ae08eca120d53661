"""LMPolicy: a language model acting as an agent, one batched call per environment step.

The policy is stateless with respect to environments: each call gets, per row, either the
full text the assistant sees at this step (:meth:`LMPolicy.act`) or a whole chat history
(:meth:`LMPolicy.act_messages`). Prompts go through the model's chat template; completions
come from :class:`~cmat_gym.agents.engine.RolloutEngine` (fast, static KV cache) or, for
prompt-learning adapters the engine cannot run, from HF ``generate``.

**Sessions** (``act_messages(..., sessions=[key, ...])``): a caller that sends the same
conversation again, grown by the reply and new messages, gets a prompt built token-in/token-out:
the previous prompt's ids, then the ids the model sampled (its ``<|im_end|>`` included), then the
template's rendering of what was added. Re-rendering the history instead would re-tokenize the
reply, which need not give back the sampled ids. The engine keeps each session's keys/values, so
a turn prefills only what was added. A conversation that is not such a continuation (e.g. history
cut to fit the window) is rendered afresh and re-encoded from the first differing token.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cmat_gym.agents.engine import GenerationResult, RolloutEngine, return_freed_memory
from cmat_gym.agents.models import DEFAULT_MODEL, load_model

Message = dict[str, str]
logger = logging.getLogger(__name__)

# Every linear layer of a llama block: LoRA on all of them is the usual choice for small models.
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Completion:
    """One action with what is needed to train on it.

    Attributes:
        text: the action text (special tokens removed, cut before the first stop string).
        prompt_ids: the prompt's token ids (chat template applied).
        completion_ids: generated ids; when a stop string ended the action, up to and including the
            token that completed it, so that ``prompt_ids + completion_ids`` is what the model produced.
        logprobs: log-probability of each completion token under the sampling distribution.
        finish_reason: ``"stop"`` (EOS or a stop string) or ``"length"``.
    """

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass
class _Transcript:
    """A session's last turn: the messages and prompt sent, the ids sampled and the reply text returned."""

    messages: list[Message]
    prompt_text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    reply: str


class LMPolicy:
    """A chat language model as a batched text policy.

    Args:
        model: HF causal LM (possibly a peft model); tokenizer: its tokenizer (see :func:`load_model`).
        system_prompt: prepended as a system message unless a conversation starts with one.
        temperature: 0 for greedy decoding; top_p, top_k: nucleus / top-k sampling (1.0 / 0 = off).
        max_new_tokens: most tokens per action.
        stop: strings that end an action (the text is cut before the first one).
        seed: makes sampling reproducible (each call draws a fresh seed from it).
        backend: ``"engine"`` (RolloutEngine), ``"hf"`` (HF generate) or ``"auto"`` (the engine
            unless a prompt-learning adapter is active).
        max_batch, max_seq_len: RolloutEngine sizes (rows decoded at once; prompt + action tokens).
            Its KV cache is preallocated: SmolLM2 needs 23 KB per row and token in bf16 (46 KB fp32),
            so 16 x 2048 takes 0.75 GB. Larger calls are decoded in chunks of ``max_batch``.
        compile: let the engine ``torch.compile`` its decode step (CUDA; ~1.7x faster decoding,
            ~30 s compile, always runs the full ``max_batch x max_seq_len`` shape).
        threads: torch threads while the engine generates on CPU (default
            :func:`~cmat_gym.agents.engine.default_cpu_threads`).
        legacy: the path before KV reuse (every turn re-rendered and re-encoded whole, the engine's
            ``legacy`` mode): for before/after benchmarks only; may be set after construction.
        speculate: most tokens the engine drafts by prompt lookup per row and pass in greedy decoding
            (the same greedy reply in fewer passes when the reply repeats its prompt or itself; 0: off);
            may be set after construction.

    Example::

        policy = LMPolicy.from_pretrained("smollm2-135m-instruct", system_prompt="You are a SQL agent.")
        actions = policy.act(["Task: count the users.", "Task: list the tables."])
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        seed: int | None = None,
        backend: str = "auto",
        max_batch: int = 16,
        max_seq_len: int = 2048,
        compile: bool = False,
        threads: int | None = None,
        legacy: bool = False,
        speculate: int = 8,
    ) -> None:
        if backend not in ("auto", "engine", "hf"):
            raise ValueError(f"backend must be 'auto', 'engine' or 'hf', not {backend!r}")
        if speculate < 0:
            raise ValueError(f"speculate must be >= 0 (0: off), not {speculate}")
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.max_new_tokens = max_new_tokens
        self.stop = list(stop)
        self.seed = seed
        self.backend = backend
        self.max_batch, self.max_seq_len, self.compile = max_batch, max_seq_len, compile
        self.threads, self.legacy, self.speculate = threads, legacy, speculate
        self._engine: RolloutEngine | None = None
        self._calls = 0
        self._transcripts: OrderedDict[Hashable, _Transcript] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        *,
        adapter: str | Path | None = None,
        trainable: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> LMPolicy:
        """Load a model by name or folder (see :func:`load_model`), optionally with a saved peft adapter.

        ``trainable=True`` leaves the adapter's weights trainable (to continue training it).
        Other keyword arguments go to :class:`LMPolicy`.
        """
        model, tokenizer = load_model(name_or_path, device=device, dtype=dtype)
        policy = cls(model, tokenizer, **kwargs)
        if adapter is not None:
            policy.load_adapter(adapter, trainable=trainable)
        return policy

    # ------------------------------------------------------------------ acting

    def act(
        self, observations: Sequence[str], *, return_details: bool = False, **overrides: Any
    ) -> list[Any]:
        """One action per observation (each the full text the assistant sees, sent as a user turn).

        Returns strings, or :class:`Completion` objects when ``return_details`` is true.
        ``overrides`` replace sampling settings for this call (temperature, top_p, top_k,
        max_new_tokens, stop, seed).
        """
        conversations = [[{"role": "user", "content": obs}] for obs in observations]
        return self.act_messages(conversations, return_details=return_details, **overrides)

    def act_messages(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        return_details: bool = False,
        sessions: Sequence[Hashable | None] | None = None,
        **overrides: Any,
    ) -> list[Any]:
        """One assistant reply per chat history (lists of ``{"role", "content"}`` dicts).

        ``sessions``: a key per conversation (None: none) naming a conversation that later calls
        continue (see the module docstring); :meth:`release` ends them.
        """
        settings = self._settings(overrides)
        if sessions is not None and len(sessions) != len(conversations):
            raise ValueError(f"Expects one session per conversation ({len(conversations)}), actual {len(sessions)}")
        if sessions is None or self.legacy:
            sessions = [None] * len(conversations)
        messages = [self._with_system(c) for c in conversations]
        rendered = [self._session_prompt(key, m) for key, m in zip(sessions, messages, strict=True)]
        prompts = [ids for ids, _ in rendered]
        if not prompts:
            return []
        if self._use_engine():
            results = self.engine.generate(
                prompts,
                settings["max_new_tokens"],
                temperature=settings["temperature"],
                top_p=settings["top_p"],
                top_k=settings["top_k"],
                eos_token_ids=self.eos_token_ids,
                seed=settings["seed"],
                sessions=None if all(key is None for key in sessions) else sessions,
            )
        else:
            results = self._generate_hf(prompts, settings)
        completions = [self._finish(p, r, settings["stop"]) for p, r in zip(prompts, results, strict=True)]
        for key, m, (ids, text), c in zip(sessions, messages, rendered, completions, strict=True):
            if key is not None:
                self._transcripts[key] = _Transcript(m, text, ids, c.completion_ids, c.text)
                self._transcripts.move_to_end(key)
        while len(self._transcripts) > max(1024, 8 * self.max_batch):
            self._transcripts.popitem(last=False)
        return completions if return_details else [c.text for c in completions]

    def release(self, sessions: Iterable[Hashable]) -> None:
        """End these sessions: forget their transcripts and free their engine cache rows."""
        sessions = list(sessions)
        for key in sessions:
            self._transcripts.pop(key, None)
        if self._engine is not None:
            self._engine.release(sessions)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the chat-templated prompt for ``messages``, ending with the assistant header."""
        return self._encode(self._render(self._with_system(messages)))

    def _with_system(self, messages: Sequence[Message]) -> list[Message]:
        messages = list(messages)
        if self.system_prompt is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def _render(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str) -> list[int]:
        # The template already wrote any BOS/special tokens as text: add none twice.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _session_prompt(self, key: Hashable | None, messages: list[Message]) -> tuple[list[int], str]:
        """The prompt ids and text for ``messages``: continuing ``key``'s transcript token-in/token-out when
        ``messages`` extend it by its reply and more, else the chat template's rendering."""
        text = self._render(messages)
        transcript = self._transcripts.get(key) if key is not None else None
        if transcript is not None:
            ids = self._continue(transcript, messages, text)
            if ids is not None:
                return ids, text
            logger.debug("session %r: the conversation does not continue the last turn; rendered afresh", key)
        return self._encode(text), text

    def _continue(self, transcript: _Transcript, messages: list[Message], text: str) -> list[int] | None:
        """Last turn's prompt ids + sampled ids + the ids of what the template renders after the reply;
        None when ``messages`` are not that turn's messages, its reply, then more."""
        n = len(transcript.messages)
        if len(messages) < n + 2 or messages[:n] != transcript.messages:
            return None
        reply = messages[n]
        if reply.get("role") != "assistant" or reply.get("content") != transcript.reply:
            return None
        head = transcript.prompt_text + transcript.reply  # the template wrote the reply right after the prompt
        if not text.startswith(head):
            return None
        rest, sampled = text[len(head) :], transcript.completion_ids
        if sampled and sampled[-1] in self.eos_token_ids:
            end = self.tokenizer.decode(sampled[-1:])  # already sampled: the template's copy is not added
            rest = rest[len(end) :] if rest.startswith(end) else rest
        ids = transcript.prompt_ids + sampled + self._encode(rest)
        return ids if len(ids) < self.max_seq_len else None

    @property
    def eos_token_ids(self) -> list[int]:
        """Tokens that end a reply: the tokenizer's EOS and the model's generation-config EOS."""
        ids = [self.tokenizer.eos_token_id]
        config_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids += [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
        return sorted({i for i in ids if i is not None})

    @property
    def engine(self) -> RolloutEngine:
        """The RolloutEngine over this policy's model (built on first use)."""
        if self._engine is None or self._engine.model is not self.model:
            self._engine = RolloutEngine(
                self.model,
                self.tokenizer,
                max_batch=self.max_batch,
                max_seq_len=self.max_seq_len,
                compile=self.compile,
            )
        self._engine.threads, self._engine.legacy = self.threads, self.legacy
        self._engine.speculate = self.speculate
        return self._engine

    def _use_engine(self) -> bool:
        if self.backend != "auto":
            return self.backend == "engine"
        return not any(
            getattr(c, "is_prompt_learning", False) for c in getattr(self.model, "peft_config", {}).values()
        )

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        settings = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "stop": self.stop,
            "seed": None,
        }
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
        settings.update(overrides)
        if settings["seed"] is None and self.seed is not None:
            settings["seed"] = self.seed * 1_000_003 + self._calls  # a new stream per call, reproducibly
        self._calls += 1
        return settings

    def _finish(self, prompt: list[int], result: GenerationResult, stop: Sequence[str]) -> Completion:
        """Decode a completion and cut it at the first stop string."""
        ids, logprobs, reason = result.completion_ids, result.logprobs, result.finish_reason
        text = self._decode(ids)
        hits = [(i, i + len(s)) for s in stop if s and (i := text.find(s)) >= 0]
        if hits:
            cut, end = min(hits)
            n = self._tokens_to_reach(ids, end)
            ids, logprobs, reason, text = ids[:n], logprobs[:n], "stop", text[:cut]
        return Completion(text, list(prompt), list(ids), list(logprobs), reason)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _tokens_to_reach(self, ids: Sequence[int], n_chars: int) -> int:
        """Fewest leading tokens whose text is at least ``n_chars`` long (the stop string is then complete)."""
        # Decoded text grows with the number of tokens, so binary search.
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self._decode(ids[:mid])) >= n_chars:
                hi = mid
            else:
                lo = mid + 1
        return hi

    @torch.no_grad()
    def _generate_hf(self, prompts: list[list[int]], settings: dict[str, Any]) -> list[GenerationResult]:
        """HF ``generate`` fallback (prompt-learning adapters), with the same result format."""
        device = next(self.model.parameters()).device
        P = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts], device=device)
        sample = settings["temperature"] > 0
        if settings["seed"] is not None:
            torch.manual_seed(settings["seed"])
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update(
                temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"]
            )
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=settings["max_new_tokens"],
                eos_token_id=self.eos_token_ids,
                pad_token_id=pad,
                return_dict_in_generate=True,
                output_scores=sample,
                output_logits=not sample,
                **kwargs,
            )
        finally:
            self.model.train(was_training)
        # Sampling: `scores` are the processed logits, i.e. the sampling distribution. Greedy: raw logits.
        steps = torch.stack(out.scores if sample else out.logits, dim=1).float()  # [n, T, vocab]
        new = out.sequences[:, P:]
        logprobs = steps.log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)
        eos = set(self.eos_token_ids)
        results = []
        for row, lps in zip(new.tolist(), logprobs.tolist(), strict=True):
            end = next((j + 1 for j, t in enumerate(row) if t in eos), None)
            if end is None:
                results.append(GenerationResult(row, lps, "length"))
            else:
                results.append(GenerationResult(row[:end], lps[:end], "stop"))
        return results

    # ------------------------------------------------------------------ adapters

    def add_adapter(self, kind: str = "lora", **cfg: Any) -> None:
        """Wrap the model with a new trainable peft adapter.

        ``kind="lora"``: ``cfg`` goes to ``peft.LoraConfig`` (defaults: r=8, lora_alpha=16, no dropout,
        all linear layers of each block). ``kind="p-tuning"``: ``cfg`` goes to
        ``peft.PromptEncoderConfig`` (defaults: 16 virtual tokens, encoder width 128); such a policy
        generates with HF ``generate``.
        """
        from peft import LoraConfig, PromptEncoderConfig, get_peft_model

        if kind == "lora":
            config = LoraConfig(
                task_type="CAUSAL_LM",
                **{"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": LLAMA_LINEARS, **cfg},
            )
        elif kind in ("p-tuning", "ptuning", "p_tuning"):
            config = PromptEncoderConfig(
                task_type="CAUSAL_LM", **{"num_virtual_tokens": 16, "encoder_hidden_size": 128, **cfg}
            )
        else:
            raise ValueError(f"unknown adapter kind {kind!r}: use 'lora' or 'p-tuning'")
        if getattr(self.model, "peft_config", None):
            raise ValueError("the model already has an adapter; save it, or load the base model again")
        self.model = get_peft_model(self.model, config)
        self._prepare_training()

    def _prepare_training(self) -> None:
        # A trainable adapter means training in this process. On a CPU, glibc would keep each phase's freed
        # activations resident (peak RSS of a SmolLM2 PPO micro-batch 3.9 -> 1.6 GiB without that).
        if next(self.model.parameters()).device.type == "cpu":
            return_freed_memory()

    def save_adapter(self, path: str | Path) -> None:
        """Save the adapter's weights and config (peft format) to the folder ``path``."""
        if not getattr(self.model, "peft_config", None):
            raise ValueError("the policy has no adapter to save (see add_adapter)")
        self.model.save_pretrained(str(path))

    def load_adapter(self, path: str | Path, *, trainable: bool = False) -> None:
        """Wrap the model with the adapter saved in ``path``."""
        from peft import PeftModel

        if getattr(self.model, "peft_config", None):
            raise ValueError("the model already has an adapter")
        self.model = PeftModel.from_pretrained(self.model, str(path), is_trainable=trainable)
        if not trainable:
            self.model.eval()
        else:
            self._prepare_training()
