#!/usr/bin/env bash
# Every GPU measurement of the project, in one script, for a lent GPU machine (see README, "GPU").
#
#   bash benchmarks/gpu_suite.sh                 # rollout, cmat_loop, train_throughput, ppo_smoke (limits sum to 550 s: one 600-s call)
#   bash benchmarks/gpu_suite.sh demo            # the training demonstration, GPU preset (its own call)
#   bash benchmarks/gpu_suite.sh rollout cmat_loop
#
# Expects: the carried wheels installed into /tmp/site (PYTHONPATH=/tmp/site) and the SmolLM2
# GGUF reassembled at /tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf. Writes figures to $OUT.
# Each benchmark runs under its own time limit so one hang cannot eat the whole lease.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-/tmp/site}:$PWD"
export CMAT_GYM_SMOLLM2_GGUF=${CMAT_GYM_SMOLLM2_GGUF:-/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf}
export CMAT_GYM_CACHE=${CMAT_GYM_CACHE:-/tmp/cmat_cache}
PARTS=${*:-rollout cmat_loop train_throughput ppo_smoke}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

chosen() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

run() {  # run NAME SECONDS CMD...: one benchmark, its own limit, its log in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  chosen "$name" || return 0
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=KILL "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name exit ${PIPESTATUS[0]}"
}

# Issue 4: rollout engine vs HF generate (SmolLM2-135M, bf16, batch 256, 128 new tokens).
run rollout 180 python3 benchmarks/rollout_throughput.py --model smollm2-135m-instruct --device cuda \
    --dtype bf16 --batch 256 --new-tokens 128 --prompt-len 64 --json "$OUT/rollout.json"

# Issue 4: episodes/s of SmolLM2 on DB-v0, bare and through the CMAT loop with the rule checker
# (64 episodes in flight, at most 5 actions each).
run cmat_loop 120 python3 benchmarks/agentbench_table.py --policy smollm2 --envs DB --episodes 128 \
    --dbbench-tasks 0 --ablations rule --max-rounds 5 --max-new-tokens 128 --batch-size 64 --quiet \
    --json "$OUT/cmat_loop.json"

# Issue 5: one PPO iteration (rollout / scoring / update breakdown) vs TRL GRPOTrainer, same env,
# model and batch; then a short real PPO run to check the CUDA path end to end (bf16, engine).
run train_throughput 150 python3 benchmarks/train_throughput.py --model smollm2-135m-instruct --device cuda \
    --json "$OUT/train_throughput.json"
run ppo_smoke 100 python3 -m algorithms.ppo_train --env cmat/DB-v0 --model smollm2-135m-instruct --device cuda \
    --iterations 2 --episodes-per-iteration 64 --max-turns 3 --max-new-tokens 128 --checker rule \
    --checker-weight 0.1 --output-dir /tmp/ppo_smoke
cp /tmp/ppo_smoke/metrics.jsonl "$OUT/ppo_smoke_metrics.jsonl" 2>/dev/null || true

# Issue 14: zero-shot, SFT and SFT+PPO (3 seeds x no / rule / learned checker reward) on the same 200
# held-out tasks, bare and in the CMAT loop (with and without memory), paired McNemar + bootstrap against
# SFT. Sized for one 600-s call (estimate in train_demo.py); stages already done in /tmp/demo are
# skipped, so a second call on the still-warm machine continues it.
run demo 570 python3 benchmarks/train_demo.py --preset gpu --output-dir /tmp/demo --time-limit 530
chosen demo && mkdir -p "$OUT/demo" && cp -r /tmp/demo/summary.* /tmp/demo/commands.sh /tmp/demo/stage_walls.json \
    /tmp/demo/eval /tmp/demo/logs "$OUT/demo/" 2>/dev/null
chosen demo && for run_dir in /tmp/demo/ppo-* /tmp/demo/grpo-* /tmp/demo/sft /tmp/demo/checker; do
  [ -d "$run_dir" ] && mkdir -p "$OUT/demo/$(basename "$run_dir")" && \
    cp "$run_dir"/*.json "$run_dir"/*.jsonl "$run_dir"/*.png "$OUT/demo/$(basename "$run_dir")/" 2>/dev/null
done
true
