# One image, one binary: `sagaflow` runs every service by subcommand (engine, registry,
# projections, admin-server, participant).
#
#   docker build -t sagaflow .
#   docker run --rm sagaflow engine --help
#
# tests/tests/image.rs keeps this file honest where Docker cannot run: the build command below
# must build the `sagaflow` binary, and the runtime stage must install the Debian package of
# every shared library that binary links (and nothing it does not).

FROM rust:1-bookworm AS build
# RocksDB's bindings need libclang; librdkafka (bundled) a C toolchain and OpenSSL's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev libssl-dev pkg-config cmake g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sagaflow \
 && cp target/release/sagaflow /usr/local/bin/sagaflow

FROM debian:bookworm-slim
# The shared libraries the binary links (libc6, libgcc-s1 and zlib1g come with the base image),
# and CA certificates for TLS to brokers and registries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid, so that a Kubernetes securityContext (runAsNonRoot, fsGroup) can name it.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sagaflow --create-home sagaflow
COPY --from=build /usr/local/bin/sagaflow /usr/local/bin/sagaflow
COPY examples/*.yaml /etc/sagaflow/definitions/
USER 10001:10001
WORKDIR /var/lib/sagaflow
ENV SAGAFLOW_STATE_DIR=/var/lib/sagaflow/state \
    SAGAFLOW_DEFINITIONS_DIR=/etc/sagaflow/definitions
ENTRYPOINT ["sagaflow"]
CMD ["--help"]
