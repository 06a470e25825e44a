# Redis from Debian's package, for machines without an image registry
# (compose.yaml's REDIS_IMAGE; the default is the official redis image).
ARG BASE_IMAGE=localhost/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
