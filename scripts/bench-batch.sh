#!/usr/bin/env bash
# Batching on the CPU, measured through the whole pipeline (release build,
# worker and orchestrator on loopback, tts-loadtest as the client): the
# worker serves a GPU-like test voice (`--fixed-cost-voice
# 200,20,40,0.5`: 200 ms of audio per step; a call of b steps sleeps
# 20 + (b − 1) × 0.5 ms) with `--decode-batch 64`, so its capacity is set
# by the call model, not by this machine's speed:
#   1. one stream, 20 requests of 4 s of audio;
#   2. open loop, Poisson arrivals of 4 s requests, at rates that keep
#      STREAMS (default "100 200 400 800") streams playing at once on
#      average: the worker should keep every admitted stream on time and
#      refuse only what exceeds its capacity.
#
#   bash scripts/bench-batch.sh [SECONDS_PER_STEP]      (default 30)
#
# THREADS sets the worker's synthesis threads (default 2); COST the voice
# (default 200,20,40,0.5); JSON reports are kept in $BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
OUT=${BENCH_OUT:-$(mktemp -d -t tts-batch.XXXXXX)}
mkdir -p "$OUT"
W=17401; WM=17491; O=17480; A=17481
COST=${COST:-200,20,40,0.5}
THREADS=${THREADS:-2}

bash scripts/setup.sh
cargo build --release --bins -q
source scripts/lib/pipeline.sh

start() {
  stop_pipeline; PIPELINE_PIDS=()
  target/release/tts-worker --listen 127.0.0.1:$W --metrics-listen 127.0.0.1:$WM \
    --fixed-cost-voice "$COST" --decode-batch 64 --synthesis-threads "$THREADS" \
    --max-requests 4096 2>"$OUT/worker.log" & PIPELINE_PIDS+=($!)
  target/release/tts-orchestrator --listen 127.0.0.1:$O --admin-listen 127.0.0.1:$A \
    --worker http://127.0.0.1:$W --max-inflight 8192 --max-connections 8192 \
    --max-connections-per-address 8192 --requests-per-second-per-address 1000000 \
    2>"$OUT/orchestrator.log" & PIPELINE_PIDS+=($!)
  wait_ready $A
}
load() { target/release/tts-loadtest --url ws://127.0.0.1:$O/ws --quiet --request-timeout 60s \
  --texts "$OUT/text.txt" --ping-interval 0s "$@" >/dev/null; }
# 100 characters: 4 s of audio at 40 ms a character.
python3 -c 'print("x" * 99 + ".")' >"$OUT/text.txt"

echo "== 1. one stream, 20 requests"
start
load -c 1 -n 20 --json "$OUT/single.json"

for streams in ${STREAMS:-100 200 400 800}; do
  rate=$(python3 -c "print($streams / 4)")
  echo "== 2. open loop: $rate req/s of 4 s (about $streams streams at once), ${SECS}s"
  start
  load --rate "$rate" -d "${SECS}s" --ramp-up 2s --json "$OUT/open-$streams.json"
  curl -s "http://127.0.0.1:$WM/metrics" | grep -E '^tts_worker_call_(cost_seconds|observed)' \
    >"$OUT/model-$streams.txt" || true
done

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def row(label, name):
    r = json.load(open(f"{out}/{name}.json"))
    q, t, g = r["requests"], r["latency_ms"]["ttfa"], r["latency_ms"]["frame_gap"]
    u = next(u for u in r["underruns"] if u["buffer_ms"] == 60)
    ref = r["latency_ms"].get("refusal", {})
    i = r["integrity"]
    print(f"| {label} | {q['sent']} | {q.get('refused', 0)} ({ref.get('p99', 0):.1f} ms p99) | "
          f"{q['failed']} | {r['throughput']['audio_seconds_per_second']:.1f} | "
          f"{t['p50']:.1f} / {t['p99']:.1f} | {u['requests_with_underrun']} | "
          f"{g['p999']:.1f} / {g['max']:.1f} | {i['lost']} / {i['checksum_failures'] + i['malformed']} |")
print("| step | sent | refused (latency) | failed | audio s/s | TTFA p50 / p99 ms "
      "| requests with underrun @60 ms | gap p99.9 / max ms | lost / corrupt |")
print("|---|---|---|---|---|---|---|---|---|")
row("one stream", "single")
for name in sorted((n[5:-5] for n in os.listdir(out) if n.startswith("open-")), key=int):
    row(f"open loop, ≈{name} streams", f"open-{name}")
    model = f"{out}/model-{name}.txt"
    if os.path.exists(model):
        print("  " + " ".join(l.strip() for l in open(model)))
PY
echo "reports in $OUT"
