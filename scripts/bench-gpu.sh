#!/usr/bin/env bash
# The real-time benchmark (scripts/bench-realtime.sh: saturation, open loop
# at 70/85/150 % of it, one stream's time to first audio) with the Piper
# voice on a GPU: ONNX Runtime's GPU build and its CUDA provider.
#
#   bash scripts/bench-gpu.sh [SECONDS_PER_STEP]        (default 60)
#
# Needs an NVIDIA GPU with its driver, a worker built with
# `--features cuda`, ONNX Runtime's GPU build (`scripts/setup.sh --gpu`
# puts it in .cache/onnxruntime-gpu) and the CUDA 13 / cuDNN 9 libraries
# it loads: found through CUDA_LIBS (directories, colon-separated; setup
# --gpu fetches them into .cache/cuda). GPU_THREADS synthesis threads
# share the device (default 8); DEVICE picks it (default cuda:0).
# On a machine without a toolchain, PREBUILT=1 BIN=dir runs binaries
# built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PREBUILT:-0}" != 1 ]; then
  bash scripts/setup.sh --gpu
  cargo build --release -q --bins
  cargo build --release -q -p tts-worker --features cuda
fi
export LD_LIBRARY_PATH=".cache/onnxruntime-gpu:${CUDA_LIBS:-.cache/cuda}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export WORKER_FLAGS="--device ${DEVICE:-cuda:0} --onnxruntime .cache/onnxruntime-gpu/libonnxruntime.so \
--synthesis-threads ${GPU_THREADS:-8} --max-requests 4096 ${WORKER_FLAGS:-}"
export SKIP_ESPEAK=1 PREBUILT=${PREBUILT:-1}
exec bash scripts/bench-realtime.sh "${1:-60}"
