#!/usr/bin/env bash
# Capacity with one worker against two (and more), by open-loop rate search
# (tts-loadtest --find-capacity --rate-search: the highest Poisson arrival
# rate with time to first audio p99 within 500 ms and no underruns at a
# 60 ms buffer), through one orchestrator on loopback.
#
# The workers serve the fixed-cost test voice: each synthesis step sleeps
# 150 ms for 500 ms of audio (0.3 s of "compute" per second of audio) on
# 2 synthesis threads, so a worker's capacity is set by its threads and the
# scheduler, not by this machine's cores, and what the figures compare is
# the orchestrator's balancing. (Real voices on one machine share its
# cores: run workers on separate machines to measure those.)
#
#   bash scripts/bench-scaleout.sh [SECONDS_PER_STEP] [WORKER_COUNTS]   (default 15, "1 2")
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
COUNTS=${2:-1 2}
OUT=${BENCH_OUT:-$(mktemp -d -t tts-scaleout.XXXXXX)}
mkdir -p "$OUT"
bash scripts/setup.sh
cargo build --release --bins -q
source scripts/lib/pipeline.sh
for n in $COUNTS; do
  stop_pipeline; PIPELINE_PIDS=(); args=()
  for i in $(seq 1 "$n"); do
    target/release/tts-worker --listen 127.0.0.1:$((17400 + i)) --metrics-listen 127.0.0.1:$((17500 + i)) \
      --fixed-cost-voice 500,150,50 2>"$OUT/worker-$n-$i.log" & PIPELINE_PIDS+=($!)
    args+=(--worker "http://127.0.0.1:$((17400 + i))")
  done
  target/release/tts-orchestrator --listen 127.0.0.1:17480 --admin-listen 127.0.0.1:17481 "${args[@]}" \
    --max-inflight 4096 --max-connections 4096 --max-connections-per-address 4096 \
    --requests-per-second-per-address 1000000 2>"$OUT/orchestrator-$n.log" & PIPELINE_PIDS+=($!)
  wait_ready 17481 healthy
  echo "== $n worker(s)"
  target/release/tts-loadtest --url ws://127.0.0.1:17480/ws --quiet --find-capacity --rate-search \
    --ttfa-p99 500 --underruns 0 --capacity-buffer-ms 60 --mix medium -d "${SECS}s" \
    --ping-interval 0s --request-timeout 60s --json "$OUT/capacity-$n.json"
done
echo "reports in $OUT"
