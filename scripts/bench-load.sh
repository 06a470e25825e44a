#!/usr/bin/env bash
# Load benchmarks through the whole pipeline (release build, standalone
# worker and orchestrator on loopback, tts-loadtest as the client):
#   1. the Piper voice at 1, 4, 8 and 16 concurrent streams;
#   2. capacity at p99 time to first audio <= 500 ms, no underruns at a 60 ms buffer;
#   3. the relay alone (the light espeak-ng voice) at 100, 250 and 500 streams,
#      with the orchestrator's CPU per relayed frame;
#   4. orchestrator memory per idle connection and per active stream.
#
#   bash scripts/bench-load.sh [SECONDS_PER_STEP]     (default 20)
#
# JSON reports are kept in $BENCH_OUT (default: a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
OUT=${BENCH_OUT:-$(mktemp -d -t tts-bench.XXXXXX)}
mkdir -p "$OUT"
W=17101; WM=17191; O=17180; A=17181
BIN=target/release

bash scripts/setup.sh
cargo build --release --bins -q

get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
# Sum of the samples of metric $2 (exact name, any labels) in the scrape of $1.
metric() {
  get "$1" | python3 -c '
import sys
name = sys.argv[1]
total = 0.0
for line in sys.stdin:
    if line.startswith("#"):
        continue
    series, _, value = line.rpartition(" ")
    if series.split("{")[0] == name:
        total += float(value)
print(total)' "$2"
}
wait_ready() {
  for _ in $(seq 1 200); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "http://127.0.0.1:$A/ready" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: the pipeline did not become ready" >&2; exit 1
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # engine
  cleanup; PIDS=()
  "$BIN/tts-worker" --engine "$1" --listen 127.0.0.1:$W --metrics-listen 127.0.0.1:$WM \
    --max-requests 2048 2>"$OUT/worker-$1.log" & PIDS+=($!)
  "$BIN/tts-orchestrator" --listen 127.0.0.1:$O --admin-listen 127.0.0.1:$A --worker http://127.0.0.1:$W \
    --max-requests-per-connection 4 --max-inflight 2048 2>"$OUT/orchestrator-$1.log" & PIDS+=($!)
  wait_ready
}
load() { "$BIN/tts-loadtest" --url ws://127.0.0.1:$O/ws --quiet "$@"; }
summary() { # label json
  python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
t, g, i = r["latency_ms"]["ttfa"], r["latency_ms"]["frame_gap"], r["integrity"]
u60 = next((u for u in r["underruns"] if u["buffer_ms"] == 60), None)
print(f"{label:<14} req {r['requests']['completed']:>5}/{r['requests']['sent']:<5} TTFA p50 {t['p50']:>8.1f} p95 {t['p95']:>8.1f} p99 {t['p99']:>8.1f} ms | "
      f"gap p99 {g['p99']:>7.1f} p99.9 {g['p999']:>7.1f} ms | lost {i['lost']} bad {i['checksum_failures'] + i['malformed']} | "
      f"underrun@60 {u60['underrun_rate'] * 100 if u60 else float('nan'):.2f} % | audio {r['throughput']['audio_seconds_per_second']:.1f} s/s | "
      f"RTT p99 {r['latency_ms']['rtt']['p99']:.2f} ms")
PY
}

echo "== 1. Piper voice, closed loop, ${SECS}s per step (medium texts)"
start piper
for c in 1 4 8 16; do
  load -c "$c" -d "${SECS}s" --ramp-up 2s --mix medium --json "$OUT/piper-c$c.json" >/dev/null
  summary "piper c=$c" "$OUT/piper-c$c.json"
done

echo "== 2. Capacity: p99 TTFA <= 500 ms, 0 late frames at 60 ms"
load --find-capacity --ttfa-p99 500 --underruns 0 --capacity-buffer-ms 60 -d 15s --ramp-up 2s \
  --mix medium --max-concurrency 32 --json "$OUT/capacity.json" 2>&1 | grep -E "concurrency|capacity:"

echo "== 3. Relay alone (espeak-ng voice), ${SECS}s per step"
start espeak
for c in 100 250 500; do
  cpu0=$(metric "http://127.0.0.1:$A/metrics" process_cpu_seconds_total)
  f0=$(metric "http://127.0.0.1:$A/metrics" tts_orchestrator_frames_total)
  load -c "$c" -d "${SECS}s" --ramp-up 5s --mix medium --request-timeout 60s --json "$OUT/relay-c$c.json" >/dev/null
  cpu1=$(metric "http://127.0.0.1:$A/metrics" process_cpu_seconds_total)
  f1=$(metric "http://127.0.0.1:$A/metrics" tts_orchestrator_frames_total)
  summary "relay c=$c" "$OUT/relay-c$c.json"
  python3 -c 'import sys; c0,c1,f0,f1=map(float,sys.argv[1:]); n=(f1-f0)/2; print(f"               orchestrator CPU per relayed frame: {(c1-c0)/max(n,1)*1e6:.1f} us ({n:.0f} frames)")' "$cpu0" "$cpu1" "$f0" "$f1"
done

echo "== 4. Orchestrator memory (fresh processes)"
start espeak
rss() { metric "http://127.0.0.1:$A/metrics" process_resident_memory_bytes; }
base=$(rss)
load -c 1 -d 8s --idle-connections 1000 --mix short >/dev/null 2>&1 & LT=$!
sleep 6; idle=$(rss); wait $LT || true
load -c 100 -d 10s --ramp-up 2s --mix long --request-timeout 60s >/dev/null 2>&1 & LT=$!
peak=0; for _ in 1 2 3 4 5 6 7 8; do sleep 1; v=$(rss); peak=$(python3 -c "print(max($peak, $v))"); done
wait $LT || true
python3 -c 'import sys; b,i,p=map(float,sys.argv[1:]); print(f"baseline {b/2**20:.1f} MiB; 1000 idle connections {i/2**20:.1f} MiB ({(i-b)/1000/1024:.1f} KiB each); 100 active streams peak {p/2**20:.1f} MiB ({(p-b)/100/1024:.1f} KiB each)")' "$base" "$idle" "$peak"
echo "reports in $OUT"
