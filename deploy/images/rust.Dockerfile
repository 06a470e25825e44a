# A local stand-in for the official rust:1-bookworm image, for machines
# that reach Debian's package mirror but no image registry: Debian, a C
# toolchain, the machine's own CA certificates (HTTPS may be re-signed by
# a local authority) and this machine's Rust toolchain, copied in by
# scripts/stack.sh (context: toolchain/, certs/).
ARG BASE_IMAGE=localhost/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc g++ libc6-dev make pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:$PATH \
    CARGO_HOME=/usr/local/cargo
