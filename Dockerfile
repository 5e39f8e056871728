# The `tidings` image: one binary for every role, chosen by its arguments
# (`tidings intake`, `tidings worker --channel email`, `tidings scheduler`,
# `tidings topics create`). Configuration: TIDINGS_CONFIG names the TOML
# file, TIDINGS_<SECTION>__<FIELD> overrides any field (secrets come so).

# ---- build ------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source by rdkafka-sys: a C toolchain, make and
# perl; OpenSSL and zlib for TLS and compression.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential perl pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tidings \
    && strip target/release/tidings

# ---- runtime ----------------------------------------------------------
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tidings
COPY --from=build /src/target/release/tidings /usr/local/bin/tidings
COPY templates /app/templates
COPY tidings.example.toml /app/tidings.example.toml
WORKDIR /app
ENV TIDINGS_TEMPLATES__DIR=/app/templates
USER 10001:10001
# /metrics, /healthz and /readyz when `[metrics] listen = "0.0.0.0:9464"`.
EXPOSE 9464
ENTRYPOINT ["tidings"]
CMD ["--help"]
