#!/usr/bin/env bash
# Sets up and runs every check: formatting, lints, unit and end-to-end tests.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
# The optional OpenTelemetry export must keep building.
cargo clippy -q -p tts-telemetry -p tts-worker -p tts-orchestrator --features otel -- -D warnings
# So must the GPU path (CUDA provider, cudarc), and its no-GPU refusal
# holds in that build too (no GPU here: the driver check answers).
cargo clippy -q -p tts-worker --features cuda --all-targets -- -D warnings
cargo test -q -p tts-worker --features cuda --lib gpu::
# So must the client's optional playback (cpal, ALSA).
cargo clippy -q -p tts-client --features play --all-targets -- -D warnings

# Fuzz targets (frame decoder, message parser) replay their corpus, then
# try random inputs for this long each.
export BOLERO_RANDOM_TEST_TIME_MS=${BOLERO_RANDOM_TEST_TIME_MS:-10000}
LOG=$(mktemp -t tts-test.XXXXXX.log)
trap 'rm -f "$LOG" "$LOG.clock"' EXIT
# Every test binary runs even after one fails, so that a log lists every
# failure at once.
cargo test --workspace --no-fail-fast 2>&1 | tee "$LOG"
# The tests that judge a hundred real-time streams by the clock run alone,
# with nothing else on the cores. On a shared machine a neighbour can still
# delay a frame, so a failure is run once more; a real fault fails twice.
CLOCKED=(cargo test -p tts-worker --lib capacity_tests -- --ignored)
if ! "${CLOCKED[@]}" >"$LOG.clock" 2>&1; then
  cat "$LOG.clock"
  echo "test.sh: the clock-judged tests failed once; running them again"
  "${CLOCKED[@]}" >"$LOG.clock" 2>&1 || { cat "$LOG.clock"; exit 1; }
fi
tee -a "$LOG" <"$LOG.clock"
rm -f "$LOG.clock"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
