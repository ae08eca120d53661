#!/usr/bin/env bash
# Every GPU measurement of the project, in one script, for a lent GPU machine (see README, "GPU").
# Expects: the carried wheels installed into /tmp/site (PYTHONPATH=/tmp/site) and the SmolLM2
# GGUF reassembled at /tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf. Writes figures to $OUT.
# Each benchmark runs under its own time limit so one hang cannot eat the whole lease.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-/tmp/site}:$PWD"
export CMAT_GYM_SMOLLM2_GGUF=${CMAT_GYM_SMOLLM2_GGUF:-/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf}
export CMAT_GYM_CACHE=${CMAT_GYM_CACHE:-/tmp/cmat_cache}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

run() {  # run NAME SECONDS CMD...: one benchmark, its own limit, its log in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=KILL "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name exit ${PIPESTATUS[0]}"
}

# Issue 4: rollout engine vs HF generate (SmolLM2-135M, bf16, batch 256, 128 new tokens).
run rollout 300 python3 benchmarks/rollout_throughput.py --model smollm2-135m-instruct --device cuda \
    --dtype bf16 --batch 256 --new-tokens 128 --prompt-len 64 --json "$OUT/rollout.json"

# Issue 5: one PPO iteration (rollout / scoring / update breakdown) vs TRL GRPOTrainer, same env,
# model and batch; then a short real PPO run to check the CUDA path end to end (bf16, engine).
if [ -f benchmarks/train_throughput.py ]; then
  run train_throughput 240 python3 benchmarks/train_throughput.py --model smollm2-135m-instruct --device cuda \
      --json "$OUT/train_throughput.json"
fi
run ppo_smoke 180 python3 -m algorithms.ppo_train --env cmat/DB-v0 --model smollm2-135m-instruct --device cuda \
    --iterations 2 --episodes-per-iteration 64 --max-turns 3 --max-new-tokens 128 --checker rule \
    --checker-weight 0.1 --output-dir /tmp/ppo_smoke
cp /tmp/ppo_smoke/metrics.jsonl "$OUT/ppo_smoke_metrics.jsonl" 2>/dev/null || true
