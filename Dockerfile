# syntax=docker/dockerfile:1
# salespulse: multi-stage build, slim non-root runtime.
#   docker build -t salespulse .
#   docker run --rm -p 9464:9464 salespulse            # the live demo
# Base images are pinned (the Rust release the project is tested with,
# Debian 12's dated slim image). The crates and the target directory
# live in BuildKit cache mounts: after a code change only salespulse is
# compiled again, not its ~280 dependencies and librdkafka.
FROM rust:1.95.0-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY examples examples
COPY vendor vendor
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin salespulse \
 && cp target/release/salespulse /usr/local/bin/salespulse

FROM debian:bookworm-20251229-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home salespulse
COPY --from=build /usr/local/bin/salespulse /usr/local/bin/salespulse
USER 10001
WORKDIR /tmp
ENV SALESPULSE_HTTP__LISTEN=0.0.0.0:9464 \
    SALESPULSE_LOG_FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["salespulse", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["salespulse"]
CMD ["run"]
