#!/usr/bin/env bash
# Real time under load (release build, standalone worker and orchestrator on
# loopback, tts-loadtest as the client, Piper voice, medium texts):
#   1. saturation throughput S: SESSIONS (default 4: two per synthesis
#      thread) back to back with fast delivery (the worker never waits for
#      a listener), each waiting retry_after_ms on a refusal, so that S is
#      synthesis, not a storm of refusals (the refusals are printed: S is
#      only meaningful when there are none or few);
#   2. open loop, Poisson arrivals, at 70 %, 85 % and 150 % of S;
#   3. one stream on an idle machine: 100 requests of a 5-word sentence;
#   4. the light espeak-ng voice at 100 concurrent streams.
#
#   bash scripts/bench-realtime.sh [SECONDS_PER_STEP]      (default 60)
#
# BIN=dir runs other builds of the worker and orchestrator (the load tester
# is always this build's), e.g. an earlier commit's target/release, for a
# side-by-side comparison. JSON reports are kept in $BENCH_OUT.
# WORKER_FLAGS adds flags to every worker (scripts/bench-gpu.sh puts the
# voice on a GPU this way); PREBUILT=1 uses $BIN as it is, load tester
# included (no setup, no build: for a machine without a toolchain);
# SKIP_ESPEAK=1 leaves out step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
OUT=${BENCH_OUT:-$(mktemp -d -t tts-realtime.XXXXXX)}
mkdir -p "$OUT"
W=17201; WM=17291; O=17280; A=17281

BIN=${BIN:-target/release}
LOADTEST=target/release/tts-loadtest
if [ "${PREBUILT:-0}" = 1 ]; then
  LOADTEST=$BIN/tts-loadtest
else
  bash scripts/setup.sh
  cargo build --release --bins -q
fi
read -r -a EXTRA <<<"${WORKER_FLAGS:-}"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # worker flags...
  cleanup; PIDS=()
  "$BIN/tts-worker" --listen 127.0.0.1:$W --metrics-listen 127.0.0.1:$WM "${EXTRA[@]}" "$@" \
    2>"$OUT/worker.log" & PIDS+=($!)
  "$BIN/tts-orchestrator" --listen 127.0.0.1:$O --admin-listen 127.0.0.1:$A \
    --worker http://127.0.0.1:$W --max-inflight 4096 --max-connections 4096 \
    --max-connections-per-address 4096 --requests-per-second-per-address 1000000 \
    2>"$OUT/orchestrator.log" & PIDS+=($!)
  for _ in $(seq 1 1200); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$A/ready" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: the pipeline did not become ready" >&2; exit 1
}
load() { "$LOADTEST" --url ws://127.0.0.1:$O/ws --quiet --request-timeout 60s "$@" >/dev/null; }
field() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

SESSIONS=${SESSIONS:-4}
echo "== 1. saturation: $SESSIONS sessions back to back, fast delivery, ${SECS}s"
start
load -c "$SESSIONS" --fast -d "${SECS}s" --ramp-up 2s --mix medium --json "$OUT/saturation.json"
S=$(field "$OUT/saturation.json" 'r["throughput"]["audio_seconds_per_second"]')
MEAN=$(field "$OUT/saturation.json" 'r["audio_seconds"] / max(r["requests"]["completed"], 1)')
REFUSED=$(field "$OUT/saturation.json" 'r["requests"]["refused"]')
echo "S = $S audio s/s ($REFUSED refused); medium texts average $MEAN s of audio"

for pct in 70 85 150; do
  rate=$(python3 -c "print(round($pct / 100 * $S / $MEAN, 3))")
  echo "== 2. open loop at $pct % of S: $rate req/s, ${SECS}s"
  start
  load --rate "$rate" -d "${SECS}s" --mix medium --ping-interval 0s --json "$OUT/open-$pct.json"
done

echo "== 3. one stream, 100 requests of a 5-word sentence"
start
echo "The quick brown fox jumps." >"$OUT/short.txt"
load -c 1 -n 100 --texts "$OUT/short.txt" --ping-interval 0s --json "$OUT/single.json"

if [ "${SKIP_ESPEAK:-0}" != 1 ]; then
  echo "== 4. espeak-ng voice, 100 streams back to back, ${SECS}s"
  start --engine espeak --max-requests 2048
  load -c 100 -d "${SECS}s" --ramp-up 5s --mix medium --ping-interval 0s --json "$OUT/espeak-100.json"
fi

python3 - "$OUT" "$S" <<'PY'
import json, sys
out, S = sys.argv[1], float(sys.argv[2])
def row(label, name):
    r = json.load(open(f"{out}/{name}.json"))
    q, t, g = r["requests"], r["latency_ms"]["ttfa"], r["latency_ms"]["frame_gap"]
    u = next(u for u in r["underruns"] if u["buffer_ms"] == 60)
    i = r["integrity"]
    ref = r["latency_ms"].get("refusal", {})
    print(f"| {label} | {r['config'].get('rate') or r['config'].get('concurrency')} | {q['sent']} | "
          f"{q.get('refused', 0)} ({ref.get('p99', 0):.1f} ms p99) | {q['failed']} | "
          f"{r['throughput']['audio_seconds_per_second']:.1f} | {t['p50']:.1f} / {t['p99']:.1f} | "
          f"{u['requests_with_underrun']} ({u['underrun_rate'] * 100:.1f} %) | "
          f"{g['p999']:.1f} / {g['max']:.1f} | {i['lost']} / {i['checksum_failures'] + i['malformed']} |")
print(f"\nsaturation S = {S:.1f} audio s/s\n")
print("| step | rate or streams | sent | refused (latency) | failed | audio s/s | TTFA p50 / p99 ms "
      "| requests with underrun @60 ms | gap p99.9 / max ms | lost / corrupt |")
print("|---|---|---|---|---|---|---|---|---|---|")
row("saturation (fast, closed)", "saturation")
for pct in (70, 85, 150):
    row(f"open loop {pct} % of S", f"open-{pct}")
row("single stream, 5 words", "single")
import os
if os.path.exists(f"{out}/espeak-100.json"):
    row("espeak, 100 streams", "espeak-100")
PY
echo "reports in $OUT"
