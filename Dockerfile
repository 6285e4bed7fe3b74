# salespulse: multi-stage build, slim non-root runtime.
#   docker build -t salespulse .
#   docker run --rm -p 9464:9464 salespulse            # the live demo
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --bin salespulse

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home salespulse
COPY --from=build /src/target/release/salespulse /usr/local/bin/salespulse
USER 10001
WORKDIR /tmp
ENV SALESPULSE_HTTP__LISTEN=0.0.0.0:9464 \
    SALESPULSE_LOG_FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["salespulse", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["salespulse"]
CMD ["run"]
