#!/usr/bin/env bash
# Streamed text input: time from the piece that completes a context's first
# clause to its first audio (the orchestrator's
# tts_orchestrator_context_first_audio_seconds), with `tts-client say
# --stream-input` fed the way a language model writes: a few words, the
# sentence end, then more text after a pause. Release build, standalone
# worker and orchestrator on loopback, one context at a time.
#
#   bash scripts/bench-context.sh [CONTEXTS]      (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-30}
W=17501; WM=17591; O=17580; A=17581

bash scripts/setup.sh
cargo build --release --bins -q
BIN=target/release
OUT=$(mktemp -d -t tts-context.XXXXXX)
source scripts/lib/pipeline.sh
start_pipeline $W $WM $O $A "$OUT" --requests-per-second-per-address 1000
for i in $(seq 1 "$N"); do
  { printf 'The quick brown'; sleep 0.2; printf ' fox jumps. '; sleep 1.5; printf 'Then it rests.'; } |
    "$BIN/tts-client" --url ws://127.0.0.1:$O/ws say --stream-input --json --out "$OUT/c.wav" \
    > "$OUT/context-$i.json"
done
curl -s "http://127.0.0.1:$A/metrics" | grep '^tts_orchestrator_context_first_audio_seconds' > "$OUT/metric.txt"
python3 - "$OUT" <<'PY'
import glob, json, sys
out = sys.argv[1]
buckets, total, count = [], 0.0, 0
for line in open(f"{out}/metric.txt"):
    name, value = line.rsplit(" ", 1)
    if "_bucket" in name:
        le = name.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    elif name.endswith("_sum"):
        total = float(value)
    elif name.endswith("_count"):
        count = float(value)
print(f"contexts: {int(count)}, mean first audio after the completing piece: {1e3 * total / count:.1f} ms")
for le, n in buckets:
    if n > 0:
        print(f"  <= {le * 1e3:g} ms: {int(n)} of {int(count)}")
        if n == count:
            break
reps = [json.load(open(f)) for f in glob.glob(f"{out}/context-*.json")]
print("integrity failures:", sum(r["checksum_failures"] + r["sequence_failures"] + r["malformed_frames"] for r in reps),
      "| frames = end frames in all:", all(r["frames"] == r["end_frames"] for r in reps))
PY
