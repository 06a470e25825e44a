#!/usr/bin/env bash
# Time to first audio over HTTP (POST /v1/audio/speech) and over the
# WebSocket, and bytes per second of audio for each wire format (release
# build, standalone worker and orchestrator on loopback, Piper voice, one
# request at a time on an otherwise idle machine).
#
#   bash scripts/bench-formats.sh [REQUESTS]      (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-30}
W=17401; WM=17491; O=17480; A=17481
TEXT="The quick brown fox jumps over the lazy dog."

bash scripts/setup.sh
cargo build --release --bins -q
BIN=target/release
OUT=$(mktemp -d -t tts-formats.XXXXXX)
source scripts/lib/pipeline.sh
start_pipeline $W $WM $O $A "$OUT" --requests-per-second-per-address 1000

# WebSocket: the client's own time to first audio, per format.
for fmt in "pcm_s16le 48000" "pcm_s16le 16000" "mulaw 8000" "opus 48000"; do
  set -- $fmt
  for i in $(seq 1 "$N"); do
    "$BIN/tts-client" --url ws://127.0.0.1:$O/ws say "$TEXT" --encoding "$1" --sample-rate "$2" \
      --json --out "$OUT/ws.wav" > "$OUT/ws-$1-$2-$i.json"
  done
done
# HTTP: curl's time to the first byte of the response (headers leave with
# the first audio), and the body's size.
for fmt in wav opus; do
  for i in $(seq 1 "$N"); do
    curl -s -o "$OUT/http.$fmt" -w '%{time_starttransfer} %{size_download}\n' \
      "http://127.0.0.1:$O/v1/audio/speech" \
      -d "{\"model\":\"tts-1\",\"input\":\"$TEXT\",\"response_format\":\"$fmt\",\"sample_rate\":48000}" \
      >> "$OUT/http-$fmt.txt"
  done
done
# Payload bytes the orchestrator sent, by encoding.
curl -s "http://127.0.0.1:$A/metrics" | grep '^tts_orchestrator_payload_bytes_total' > "$OUT/bytes.txt"

python3 - "$OUT" "$N" <<'PY'
import glob, json, os, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
print(f"{'path':34} {'TTFA p50':>9} {'p95':>8} {'bytes/s of audio':>17}")
for fmt in ["pcm_s16le-48000", "pcm_s16le-16000", "mulaw-8000", "opus-48000"]:
    reps = [json.load(open(f)) for f in glob.glob(f"{out}/ws-{fmt}-*.json")]
    ttfa = [r["time_to_first_audio_ms"] for r in reps]
    enc, rate = fmt.split("-")
    # Per-frame payload bytes: fixed for PCM and µ-law; measured for Opus below.
    print(f"WebSocket {fmt:24} {pct(ttfa,50):7.1f} ms {pct(ttfa,95):6.1f} ms", end="")
    if enc == "pcm_s16le": print(f" {int(rate)*2:17,}")
    elif enc == "mulaw": print(f" {int(rate):17,}")
    else: print()
for fmt in ["wav", "opus"]:
    rows = [l.split() for l in open(f"{out}/http-{fmt}.txt")]
    ttfa = [float(r[0]) * 1e3 for r in rows]
    print(f"HTTP {fmt:29} {pct(ttfa,50):7.1f} ms {pct(ttfa,95):6.1f} ms")
secs = statistics.mean(json.load(open(f))["audio_seconds"] for f in glob.glob(f"{out}/ws-opus-48000-*.json"))
for line in open(f"{out}/bytes.txt"):
    if 'encoding="opus"' in line and 'api="websocket"' in line:
        total = float(line.split()[-1])
        print(f"Opus payload on the WebSocket: {total / (n * secs):,.0f} bytes per second of audio "
              f"(PCM 48 kHz: 96,000)")
PY
