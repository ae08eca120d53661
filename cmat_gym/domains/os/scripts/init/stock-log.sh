#!/bin/bash
# cmat-gym's stand-in for the stock-log data of AgentBench's OS tasks (dev.json task 25 references
# init/stock-log.sh, which is not shipped with the dev file): 400 lines "NAME | ACTION | INDEX | COUNT"
# in /usr/stock.log, names Alice/Bob, actions Purchase/Sell. Seeded, so every run writes the same log
# (the oracle computes its answer in a separate sandbox and must see the same data).
RANDOM=20230807
names=(Alice Bob)
actions=(Purchase Sell)
for _ in $(seq 1 400); do
    echo "${names[RANDOM % 2]} | ${actions[RANDOM % 2]} | $((RANDOM % 100)) | $((RANDOM % 1000 + 1))"
done > /usr/stock.log
