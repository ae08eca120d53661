"""Does a model act the same through ``cmat-gym serve`` + ``--policy openai`` as in-process?

    python benchmarks/serve_parity.py [--model smollm2] [--tasks 5] [--max-new-tokens 96] [--device cpu] [--threads 1]

Takes the first observation of ``--tasks`` evenly spaced AgentBench dbbench dev tasks (the bundled
split), asks the model for the first action of each twice, greedy, in one batch each time: in-process
(``make_policy(model)``, the ``cmat-gym eval --policy smollm2`` path) and through the API (``cmat-gym serve``
started on a free loopback port, ``make_policy("openai", tools=False)``, so that replies come back as
text, not turned into ``tool_calls``), and prints how many replies are identical, both wall times
(one batch each; the machine may be shared) and the API's token usage. Exits 0 whatever the outcome.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import gymnasium as gym
import httpx

import cmat_gym
from cmat_gym.agents.policies import make_policy


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tasks", type=int, default=5, help="dbbench dev tasks (evenly spaced over the 60)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cmat_gym.register_envs()
    env = gym.make("cmat/DB-v0", tasks="agentbench:dbbench/dev")
    n = env.unwrapped.num_tasks
    indices = [i * n // args.tasks for i in range(args.tasks)]
    observations = [env.reset(options={"task_index": i})[0] for i in indices]
    env.close()

    local = make_policy(args.model, domain="db", max_new_tokens=args.max_new_tokens, max_batch=args.tasks,
                        device=args.device, threads=args.threads)
    start = time.perf_counter()
    in_process = local.act(observations)
    local_s = time.perf_counter() - start

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cmat_gym.cli", "serve", "--model", args.model, "--port", str(port),
         "--max-batch", str(args.tasks), "--max-tokens", str(args.max_new_tokens), "--device", args.device,
         "--threads", str(args.threads)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                print(f"cmat-gym serve exited with status {server.returncode}")
                return 0
            time.sleep(0.5)
        remote = make_policy("openai", base_url=url, model=args.model, domain="db", max_tokens=args.max_new_tokens,
                             concurrency=args.tasks, tools=False)
        start = time.perf_counter()
        through_api = remote.act(observations)
        api_s = time.perf_counter() - start
        remote.close()
    finally:
        server.terminate()
        server.wait(60)

    same = sum(a == b for a, b in zip(in_process, through_api, strict=True))
    print(f"command: python benchmarks/serve_parity.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"model {args.model}, dbbench dev tasks {indices}, greedy, {args.max_new_tokens} new tokens at most")
    print(f"identical first actions: {same}/{len(indices)}")
    print(f"one batch of {len(indices)}: in-process {local_s:.1f} s, through the API {api_s:.1f} s "
          "(shared machine: indicative only)")
    print(f"API token usage: {remote.usage}")
    for index, a, b in zip(indices, in_process, through_api, strict=True):
        if a != b:
            print(f"task {index} differs:\n  in-process: {a[:200]!r}\n  API:        {b[:200]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
