# Sourced by the benchmark scripts: start_pipeline starts a release worker
# and orchestrator on loopback and waits until the orchestrator is ready;
# both stop when the script exits.
#   start_pipeline WORKER_PORT WORKER_METRICS_PORT WS_PORT ADMIN_PORT LOG_DIR [ORCHESTRATOR_FLAGS…]
#   wait_ready ADMIN_PORT [healthy]   (up to 30 s; `healthy`: every check ok, not degraded)
# Processes started by a script and added to PIPELINE_PIDS stop with it too.
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
  wait_ready "$a" || { echo "logs in $logs" >&2; return 1; }
}

wait_ready() {
  local a=$1 want=${2:-}
  for _ in $(seq 1 300); do
    if python3 -c 'import json, sys, urllib.request as u
r = json.load(u.urlopen(sys.argv[1], timeout=2))
sys.exit(sys.argv[2] == "healthy" and r["status"] != "healthy")' \
      "http://127.0.0.1:$a/ready" "$want" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "the orchestrator on port $a did not become ready" >&2
  return 1
}
