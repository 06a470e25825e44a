#!/usr/bin/env bash
# Runs compose.yaml: builds the project's image and starts the stack
# (Redis, two workers, the orchestrator, Prometheus), or stops and removes
# it, or says how it is.
#
#   bash scripts/stack.sh up        # exits 0 once the orchestrator's /ready says healthy
#   bash scripts/stack.sh status
#   bash scripts/stack.sh down      # stops and removes containers, networks and volumes
#
# It installs what it needs where missing (Debian's docker.io and
# docker-compose; it starts dockerd by hand where no service manager does).
# With an image registry it builds on the official images; without one
# (TTS_STACK_BASES=local, or when the official images cannot be pulled) it
# first makes local base images from Debian's packages: Debian itself
# (debootstrap), a Rust build image with this machine's toolchain and CA
# certificates, Redis and Prometheus.
#
# Environment: TTS_STACK_PROJECT (compose project, default tts),
# TTS_PORT / TTS_ADMIN_PORT / TTS_PROMETHEUS_PORT (published ports, default
# 8080 / 8081 / 9090), TTS_STACK_BASES (registry | local | auto),
# TTS_STACK_READY_SECS (how long `up` waits for healthy, default 300),
# TTS_STACK_REUSE_IMAGE=1 (start from the tts-stream image already built,
# when there is one, instead of building it again).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${TTS_STACK_PROJECT:-tts}
BASES=${TTS_STACK_BASES:-auto}
READY_SECS=${TTS_STACK_READY_SECS:-300}
export TTS_PORT=${TTS_PORT:-8080} TTS_ADMIN_PORT=${TTS_ADMIN_PORT:-8081}
export TTS_PROMETHEUS_PORT=${TTS_PROMETHEUS_PORT:-9090}
IMAGE=tts-stream:latest
OFFICIAL=(rust:1-bookworm debian:bookworm-slim redis:7-bookworm prom/prometheus:v2.53.0)

say() { echo "stack: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
now() { date +%s; }
took() { echo "$(($(now) - $1)) s"; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The container engine and compose, installed and running.
engine() {
  command -v docker >/dev/null 2>&1 || apt_install docker.io
  if ! docker compose version >/dev/null 2>&1; then
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
  fi
  if ! docker info >/dev/null 2>&1; then
    say "starting dockerd"
    mkdir -p .cache
    as_root sh -c 'nohup dockerd --host=unix:///var/run/docker.sock >"$1" 2>&1 &' sh "$PWD/.cache/dockerd.log"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { say "dockerd did not start: see .cache/dockerd.log"; exit 69; }
  fi
}

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -p "$PROJECT" -f compose.yaml "$@"
  else
    docker-compose -p "$PROJECT" -f compose.yaml "$@"
  fi
}

# Whether the official base images are there or can be pulled.
registry() {
  for image in "${OFFICIAL[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 && continue
    timeout 60 docker pull -q "$image" >/dev/null 2>&1 || return 1
  done
}

# The Debian mirror this machine's apt uses.
mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +http[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v security | head -n 1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

# Local base images from Debian's packages, each made once.
local_bases() {
  local t
  if ! docker image inspect localhost/debian:bookworm >/dev/null 2>&1; then
    t=$(now)
    apt_install debootstrap
    local root
    root=$(mktemp -d)
    say "making localhost/debian:bookworm with debootstrap from $(mirror)"
    as_root debootstrap --variant=minbase bookworm "$root" "$(mirror)" >/dev/null
    as_root tar -C "$root" -c . | docker import - localhost/debian:bookworm >/dev/null
    as_root rm -rf "$root"
    say "localhost/debian:bookworm made in $(took "$t")"
  fi
  if ! docker image inspect localhost/rust:1-bookworm >/dev/null 2>&1; then
    t=$(now)
    local ctx sysroot
    ctx=$(mktemp -d)
    sysroot=$(rustc --print sysroot)
    mkdir -p "$ctx/toolchain/bin" "$ctx/toolchain/lib/rustlib" "$ctx/certs"
    cp "$sysroot"/bin/cargo "$sysroot"/bin/rustc "$ctx/toolchain/bin/"
    cp -a "$sysroot"/lib/*.so* "$ctx/toolchain/lib/"
    cp -a "$sysroot"/lib/rustlib/x86_64-unknown-linux-gnu "$sysroot"/lib/rustlib/etc "$ctx/toolchain/lib/rustlib/"
    # The machine's own authorities (HTTPS may be re-signed locally).
    cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
    cp deploy/images/rust.Dockerfile "$ctx/Dockerfile"
    say "making localhost/rust:1-bookworm with $(rustc --version)"
    docker build -q -t localhost/rust:1-bookworm "$ctx" >/dev/null
    rm -rf "$ctx"
    say "localhost/rust:1-bookworm made in $(took "$t")"
  fi
  for name in redis prometheus; do
    if ! docker image inspect "localhost/$name:bookworm" >/dev/null 2>&1; then
      t=$(now)
      docker build -q -t "localhost/$name:bookworm" -f "deploy/images/$name.Dockerfile" deploy/images >/dev/null
      say "localhost/$name:bookworm made in $(took "$t")"
    fi
  done
}

# Which bases to build on; exports what compose and the build read.
choose_bases() {
  if [ "$BASES" = registry ] || { [ "$BASES" = auto ] && registry; }; then
    say "building on the official images"
    export BUILD_IMAGE=rust:1-bookworm RUNTIME_IMAGE=debian:bookworm-slim
    export REDIS_IMAGE=redis:7-bookworm PROMETHEUS_IMAGE=prom/prometheus:v2.53.0
  else
    say "no image registry: building on local images made from Debian's packages"
    local_bases
    export BUILD_IMAGE=localhost/rust:1-bookworm RUNTIME_IMAGE=localhost/debian:bookworm
    export REDIS_IMAGE=localhost/redis:bookworm PROMETHEUS_IMAGE=localhost/prometheus:bookworm
  fi
}

build() {
  local t
  if [ "${TTS_STACK_REUSE_IMAGE:-0}" = 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "reusing $IMAGE as built $(docker image inspect -f '{{.Created}}' "$IMAGE")"
    return 0
  fi
  t=$(now)
  say "building $IMAGE (from $BUILD_IMAGE, running on $RUNTIME_IMAGE)"
  docker build -q -t "$IMAGE" \
    --build-arg BUILD_IMAGE="$BUILD_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" . >/dev/null
  say "$IMAGE built in $(took "$t"), $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

ready() {
  curl -fsS --max-time 3 "http://127.0.0.1:$TTS_ADMIN_PORT/ready" 2>/dev/null | grep -q '"status":"healthy"'
}

up() {
  engine
  choose_bases
  build
  local t
  t=$(now)
  compose up -d --no-build >&2
  say "waiting for the orchestrator's /ready to say healthy (at most $READY_SECS s)"
  for _ in $(seq "$READY_SECS"); do
    if ready; then
      say "healthy $(took "$t") after start: ws://127.0.0.1:$TTS_PORT/ws, admin http://127.0.0.1:$TTS_ADMIN_PORT, Prometheus http://127.0.0.1:$TTS_PROMETHEUS_PORT"
      return 0
    fi
    sleep 1
  done
  say "not healthy after $READY_SECS s; the containers' state and their last log lines:"
  compose ps >&2 || true
  compose logs --tail 20 >&2 || true
  exit 69
}

down() {
  docker info >/dev/null 2>&1 || { say "no container engine runs: nothing to stop"; return 0; }
  compose down --volumes --remove-orphans >&2
}

status() {
  engine
  compose ps
  if ready; then say "orchestrator: healthy"; else say "orchestrator: not healthy (or not running)"; exit 69; fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: scripts/stack.sh up|down|status" >&2; exit 64 ;;
esac
