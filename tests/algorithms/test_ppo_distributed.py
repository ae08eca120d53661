"""PPO across processes (issue 18): two CPU processes (gloo) take the same update as one process.

Two ranks are spawned with the environment a launcher sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...),
each calls ``ppo_train.main`` (which joins the group through accelerate's ``PartialState``, as under
``accelerate launch``) and saves its replica's adapter and value head. Checked: (a) the two replicas are
identical, (b) they equal a one-process run with the same total batch, seed and wave size (the
rollouts are then the same episodes with the same sampler seeds, see ``Processes.waves``), up to
floating-point summation order, and the global batch statistics in metrics.jsonl agree.

The configuration makes the update non-trivial: ``--checker none --checker-weight 0.5`` pays every
turn, and ``--max-seq-len 560`` leaves one of the four episodes without room after its first turn, so
the returns differ, the batch has signal, and the advantages are whitened (with global statistics).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from algorithms import ppo_train  # noqa: E402

ARGS = [
    "--model", "tiny-random",
    "--device", "cpu",
    "--episodes-per-iteration", "4",
    "--rollout-batch", "2",  # the wave size of the 2-process run (min(rollout_batch, ceil(4 / 2)))
    "--max-turns", "2",
    "--max-new-tokens", "8",
    "--max-seq-len", "560",
    "--checker", "none",
    "--checker-weight", "0.5",
    "--minibatch-size", "2",
    "--micro-batch-size", "1",
    "--ppo-epochs", "2",
    "--learning-rate", "1e-3",
    "--iterations", "1",
    "--no-progress",
    "--seed", "3",
]  # fmt: skip
# Tolerance of (b). The two runs add the same fp32 terms in another order (per-process partial sums,
# then the all-reduce): gradients agree to ~1e-7 relative, except elements that are near-cancelling
# sums. Adam divides each element by its own RMS, so such an element's step carries its gradient's
# relative error (measured up to ~2e-4) times the learning rate: hence an absolute 1e-6 (= 1e-3 x lr)
# per element, on top of 1e-5 relative; and every whole tensor within 2e-5 relative (norm of the
# difference). Measured on 2026-11-30: largest element difference 4.7e-7, tensors 5.5e-8 .. 5.5e-6
# relative (LoRA B, which starts at 0 and so is all Adam steps, is the largest; value head 3e-7).
RTOL, ATOL, TENSOR_RTOL = 1e-5, 1e-6, 2e-5
TIMING = {"rollout_s", "update_s", "score_s", "tokens_per_s"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replica(result: Any) -> dict[str, Any]:
    """The trained tensors of a run: the adapter (trainable parameters) and the value head."""
    state = ppo_train.trainable_state(result.model)
    state.update({f"value_head.{k}": v.detach().cpu().clone() for k, v in result.value_head.state_dict().items()})
    return state


def worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: the launcher's environment (none for ``world == 1``), then the training script itself.

    One torch thread in every process, the one-process reference included, so that the runs differ
    only by how the batch is split (not by how many threads share each matmul)."""
    if world > 1:
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    result = ppo_train.main([*ARGS, "--output-dir", out])
    from safetensors.torch import save_file

    save_file(replica(result), str(Path(out) / f"replica-{rank}.safetensors"))


def metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from safetensors.torch import load_file

    from cmat_gym.agents.models import load_model

    try:
        load_model("tiny-random")
    except FileNotFoundError as exc:
        pytest.skip(f"tiny-random needs SmolLM2's tokenizer: {exc}")
    root = tmp_path_factory.mktemp("ppo_dist")
    two = root / "two"
    torch.multiprocessing.spawn(worker, args=(2, free_port(), str(two)), nprocs=2, join=True)
    torch.multiprocessing.spawn(worker, args=(1, 0, str(root / "one")), nprocs=1, join=True)
    return {
        "dir_two": two,
        "dir_one": root / "one",
        "replicas": [load_file(str(two / f"replica-{r}.safetensors")) for r in range(2)],
        "one": load_file(str(root / "one" / "replica-0.safetensors")),
    }


def test_two_processes_hold_identical_replicas(runs: dict[str, Any]) -> None:
    a, b = runs["replicas"]
    assert set(a) == set(b) and any("lora_B" in k for k in a) and any(k.startswith("value_head.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the same all-reduced step on both: bit for bit


def test_two_processes_equal_one_process_with_the_same_batch(runs: dict[str, Any]) -> None:
    replica0, one = runs["replicas"][0], runs["one"]
    assert set(replica0) == set(one)
    moved = [k for k in one if "lora_B" in k and bool(one[k].abs().max() > 0)]
    assert moved, "the update must move the adapter (LoRA B starts at 0), or the comparison says nothing"
    for key in one:
        torch.testing.assert_close(replica0[key], one[key], rtol=RTOL, atol=ATOL, msg=lambda m, key=key: f"{key}: {m}")
        diff, norm = float((replica0[key] - one[key]).norm()), float(one[key].norm())
        assert diff <= TENSOR_RTOL * norm, (key, diff, norm)

    # the metrics are those of the global batch: the same episodes, statistics over all of them
    (two,), (single,) = metrics(runs["dir_two"]), metrics(runs["dir_one"])  # one row each: written once
    assert single["policy_update"] == 1.0 and single["max_length_episodes"] >= 1  # whitening was exercised
    for key, value in single.items():
        if key in TIMING:
            continue
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:
            assert two[key] == value, key


def test_main_process_alone_writes_files(runs: dict[str, Any]) -> None:
    two = runs["dir_two"]
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1
    assert (two / "adapter" / "adapter_model.safetensors").is_file()
    assert (two / "checkpoint" / "latest").is_file()
    assert len(list((two / "checkpoint").glob("iter-*"))) == 1


@pytest.mark.slow
def test_accelerate_launch_cli(tmp_path: Path) -> None:
    """The command of docs/scaling.md, end to end. ``--multi_gpu`` is accelerate's torchrun launcher: on a
    machine without GPUs the script's ``--device cpu`` joins a gloo group (``--cpu`` alone starts ONE
    process unless MPI's mpirun is set up)."""
    out = tmp_path / "launch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "algorithms.ppo_train", *ARGS, "--iterations", "2", "--output-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PPO across 2 processes" in proc.stdout, proc.stdout[-2000:]
    rows = metrics(out)
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["episodes"] == 8
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
