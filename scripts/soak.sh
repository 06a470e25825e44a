#!/usr/bin/env bash
# Soak: a steady, sustainable load through the whole pipeline (release
# build, standalone worker and orchestrator on loopback, tts-loadtest as
# the client: closed loop, sessions paced to real time like listeners)
# for a long time, with both processes' resident memory and open
# descriptors sampled every 10 s. A leak shows as a slope after warm-up;
# a high-water mark as a plateau.
#
#   bash scripts/soak.sh [MINUTES] [SESSIONS]     (default 30 minutes, 4 sessions)
#
# Samples go to $BENCH_OUT/soak.csv (default: a new temporary directory);
# the summary (first and last sample after the first 2 minutes, and the
# least-squares slope of each series over that span) is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
SESSIONS=${2:-4}
OUT=${BENCH_OUT:-$(mktemp -d -t tts-soak.XXXXXX)}
mkdir -p "$OUT"
W=17301; WM=17391; O=17380; A=17381
BIN=target/release

bash scripts/setup.sh
cargo build --release --bins -q

# shellcheck source=lib/pipeline.sh
source scripts/lib/pipeline.sh
start_pipeline $W $WM $O $A "$OUT"
WORKER=${PIPELINE_PIDS[0]}
ORCH=${PIPELINE_PIDS[1]}

sample() { # pid -> "rss_kib fds"
  echo "$(awk '/^VmRSS/ {print $2}' "/proc/$1/status") $(ls "/proc/$1/fd" | wc -l)"
}
echo "seconds,worker_rss_kib,worker_fds,orchestrator_rss_kib,orchestrator_fds" >"$OUT/soak.csv"
"$BIN/tts-loadtest" --url ws://127.0.0.1:$O/ws --quiet -c "$SESSIONS" --pace playout --think-time 500ms \
  --mix mixed -d "${MINUTES}m" --ramp-up 10s --json "$OUT/soak-load.json" >/dev/null &
LOAD=$!
PIPELINE_PIDS+=("$LOAD")
START=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
  read -r wr wf < <(sample "$WORKER")
  read -r orr of < <(sample "$ORCH")
  echo "$(( $(date +%s) - START )),$wr,$wf,$orr,$of" >>"$OUT/soak.csv"
  sleep 10
done
wait "$LOAD"

python3 - "$OUT/soak.csv" "$OUT/soak-load.json" "$MINUTES" "$SESSIONS" <<'PY'
import csv, json, sys
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
load = json.load(open(sys.argv[2]))
warm = [r for r in rows if r["seconds"] >= 120] or rows
def slope(key):
    xs = [r["seconds"] / 60 for r in warm]
    ys = [r[key] for r in warm]
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
req = load["requests"]
print(f"soak: {sys.argv[3]} min, {sys.argv[4]} sessions paced to real time; "
      f"{req['completed']}/{req['sent']} requests completed, "
      f"{load['throughput']['audio_seconds_per_second']:.2f} audio-s/s, "
      f"TTFA p99 {load['latency_ms']['ttfa']['p99']:.0f} ms; {len(rows)} samples")
for name, key, unit in [("worker RSS", "worker_rss_kib", "KiB"), ("worker fds", "worker_fds", ""),
                        ("orchestrator RSS", "orchestrator_rss_kib", "KiB"),
                        ("orchestrator fds", "orchestrator_fds", "")]:
    values = [r[key] for r in warm]
    print(f"{name:<17} at 2 min {warm[0][key]:>9.0f} {unit:<3} | end {warm[-1][key]:>9.0f} {unit:<3} | "
          f"min {min(values):>9.0f} max {max(values):>9.0f} | slope {slope(key):+8.2f} {unit}/min")
PY
echo "samples: $OUT/soak.csv"
