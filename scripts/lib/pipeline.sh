# Sourced by the benchmark scripts: start_pipeline starts a release worker
# and orchestrator on loopback and waits until the orchestrator is ready;
# both stop when the script exits.
#   start_pipeline WORKER_PORT WORKER_METRICS_PORT WS_PORT ADMIN_PORT LOG_DIR [ORCHESTRATOR_FLAGS…]
PIPELINE_PIDS=()
stop_pipeline() {
  for p in "${PIPELINE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_pipeline EXIT

start_pipeline() {
  local w=$1 wm=$2 o=$3 a=$4 logs=$5
  shift 5
  target/release/tts-worker --listen 127.0.0.1:$w --metrics-listen 127.0.0.1:$wm \
    2>"$logs/worker.log" & PIPELINE_PIDS+=($!)
  target/release/tts-orchestrator --listen 127.0.0.1:$o --admin-listen 127.0.0.1:$a \
    --worker http://127.0.0.1:$w "$@" 2>"$logs/orchestrator.log" & PIPELINE_PIDS+=($!)
  for _ in $(seq 1 300); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$a/ready" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "the pipeline did not become ready; logs in $logs" >&2
  return 1
}
