#!/usr/bin/env bash
# Time to first audio and real-time factors, measured through the whole
# pipeline (release build, tts-pipeline: worker and orchestrator in one
# process with a real gRPC hop on loopback), one request at a time.
#
#   bash scripts/bench-ttfa.sh [RUNS]
#
# RUNS (default 10) runs of a 5-word sentence, at most 20 of a medium
# sentence and at most 10 of a 1,000-character paragraph, with fast delivery
# (so that the path real-time factor measures synthesis, not the playout
# clock). Worker settings come from the environment, e.g.
# TTS_STREAM_IN_CLAUSE=false.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
PORT=${TTS_BENCH_PORT:-18180}
ADMIN_PORT=${TTS_BENCH_ADMIN_PORT:-18181}

bash scripts/setup.sh
cargo build --release --bins -q
BIN=target/release

SHORT="The quick brown fox jumps."
MEDIUM="The quick brown fox jumps over the lazy dog, and the dog, unimpressed, goes back to sleep."
PARAGRAPH=$(python3 - <<'PY'
text = ("Streaming speech must start quickly and never stall. A listener notices a gap of a "
        "tenth of a second, and a silence of half a second feels like a dropped call. That is "
        "why the worker speaks clause by clause, sending each piece as soon as it exists, "
        "while the orchestrator checks every frame and passes it on without waiting for the "
        "rest. The client measures what a person would hear: how long until the first sound, "
        "whether every frame arrived in order, and whether any of them was damaged on the way. "
        "When a reader falls behind, bounded queues push back on the worker instead of filling "
        "memory, and when a request is cancelled, synthesis stops at the next frame. These "
        "numbers are written down with the command that produced them, so that anyone can run "
        "it again and compare. Each frame carries two timestamps, one from the worker and one "
        "from the orchestrator, and a checksum that only the worker computes. If any of them "
        "is wrong, the request fails loudly instead of playing damaged sound to a listener.")
print(text[:1000].rsplit(' ', 1)[0])
PY
)

LOG=$(mktemp -t tts-bench.XXXXXX.log)
"$BIN/tts-pipeline" --listen "127.0.0.1:$PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" 2>"$LOG" &
ORCH=$!
trap 'kill "$ORCH" 2>/dev/null; wait "$ORCH" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

OUT=$(mktemp -d)
run() { # label runs text
  "$BIN/tts-client" --url "ws://127.0.0.1:$PORT/ws" say "$3" --fast --out "$OUT/warmup.wav" --json >/dev/null
  for i in $(seq 1 "$2"); do
    # 65: the audio raised a quality event (counted below), not a failure
    # of the run.
    "$BIN/tts-client" --url "ws://127.0.0.1:$PORT/ws" say "$3" --fast --out "$OUT/$1.wav" --json \
      >"$OUT/$1-$i.json" || [ $? -eq 65 ]
  done
  echo "$1 $2 ${#3}" >>"$OUT/index"
}
run short "$RUNS" "$SHORT"
run medium "$(( RUNS < 20 ? RUNS : 20 ))" "$MEDIUM"
run paragraph "$(( RUNS < 10 ? RUNS : 10 ))" "$PARAGRAPH"
python3 - "$OUT" <<'PY'
import json, sys, statistics as st
out = sys.argv[1]
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
print(f"{'text':<12}{'chars':>6}{'runs':>6}{'audio s':>9}{'TTFA p50 ms':>13}{'p95':>8}{'min':>8}{'max':>8}{'path RTF':>10}")
for line in open(f"{out}/index"):
    label, runs, chars = line.split()
    reports = [json.load(open(f"{out}/{label}-{i}.json")) for i in range(1, int(runs) + 1)]
    ttfa = [r["time_to_first_audio_ms"] for r in reports]
    rtf = [r["real_time_factor"] for r in reports]
    bad = sum(r["checksum_failures"] + r["sequence_failures"] + r["malformed_frames"] for r in reports)
    events = sum(r[k] for r in reports for k in
                 ("clipping_events", "dc_offset_events", "dead_air_events", "leading_silence_events"))
    print(f"{label:<12}{chars:>6}{runs:>6}{reports[0]['audio_seconds']:>9.2f}{st.median(ttfa):>13.1f}"
          f"{pct(ttfa, 95):>8.1f}{min(ttfa):>8.1f}{max(ttfa):>8.1f}{st.median(rtf):>10.3f}"
          f"   ({bad} bad frames, {events} quality events)")
PY
# The worker's own real-time factor per step (synthesis time / audio time).
exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
python3 -c '
import sys
m = {}
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 2 and parts[0].startswith(("tts_worker_synthesis_real_time_factor_", "tts_worker_step_seconds_")):
        m[parts[0]] = float(parts[1])
n = m.get("tts_worker_synthesis_real_time_factor_count", 0)
if n:
    rtf = m["tts_worker_synthesis_real_time_factor_sum"] / n
    step_ms = 1e3 * m["tts_worker_step_seconds_sum"] / m["tts_worker_step_seconds_count"]
    print(f"worker: {int(n)} steps, mean real-time factor per step {rtf:.3f}, mean step {step_ms:.1f} ms")
' <&3
