#!/usr/bin/env bash
# The main job: sets up, builds, starts tts-pipeline (worker and orchestrator
# in one process, a real gRPC hop on loopback), speaks a real sentence through worker → orchestrator →
# client, writes speech.wav and prints what the client measured.
#
#   bash scripts/demo.sh ["text to speak"]
#
# Environment: PROFILE=debug to skip the release build; TTS_DEMO_PORT
# (default 8080) and TTS_DEMO_ADMIN_PORT (default 8081) to move the ports.
set -euo pipefail
cd "$(dirname "$0")/.."

TEXT=${1:-"The quick brown fox jumps over the lazy dog. This is a streaming speech test."}
PROFILE=${PROFILE:-release}
PORT=${TTS_DEMO_PORT:-8080}
ADMIN_PORT=${TTS_DEMO_ADMIN_PORT:-8081}

bash scripts/setup.sh
if [ "$PROFILE" = release ]; then
  cargo build --release --bins -q
  BIN=target/release
else
  cargo build --bins -q
  BIN=target/debug
fi

LOG=$(mktemp -t tts-orchestrator.XXXXXX.log)
"$BIN/tts-pipeline" \
  --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" 2>"$LOG" &
ORCH=$!
trap 'kill "$ORCH" 2>/dev/null; wait "$ORCH" 2>/dev/null || true' EXIT

# Wait (bounded) for the WebSocket port to accept connections.
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  if ! kill -0 "$ORCH" 2>/dev/null; then
    echo "demo: the orchestrator exited:" >&2; cat "$LOG" >&2; exit 1
  fi
  sleep 0.1
done

echo "demo: speaking: $TEXT" >&2
"$BIN/tts-client" --url "ws://127.0.0.1:$PORT/ws" say "$TEXT" --out speech.wav
echo "demo: orchestrator log: $LOG" >&2
