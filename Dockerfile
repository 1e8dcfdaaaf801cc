# Build stage: the gateway and the demo services, without the gateway's
# dev-dependencies. The cache mounts keep cargo's downloads and target
# directory between builds on one machine (BuildKit: Docker 23 and later by
# default, DOCKER_BUILDKIT=1 before).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# COPY keeps the files' times, which may be older than what the cached
# target directory holds: this repository's two crates always build again.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/lib.rs demo/src/main.rs \
 && cargo build --release --locked -p api-gateway -p demo-services --bins \
 && cp target/release/api-gateway target/release/demo_services /usr/local/bin/ \
 && strip /usr/local/bin/api-gateway /usr/local/bin/demo_services

# The demo services, for docker-compose.yml.
FROM debian:bookworm-slim AS demo
COPY --from=build /usr/local/bin/demo_services /usr/local/bin/
USER 10001
EXPOSE 3001 3002 3003 3004
CMD ["demo_services", "--host", "0.0.0.0"]

# The gateway: the binary, conf/ and the CA bundle (for HTTPS upstreams and
# JWKS), as a non-root user. The binary is its own health check. The bundle
# is copied rather than installed: the ca-certificates package brings
# openssl and libssl (9 MB), which the binary does not use.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /app gateway
WORKDIR /app
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /usr/local/bin/api-gateway /usr/local/bin/
COPY conf ./conf
USER gateway
ENV PORT=3000
EXPOSE 3000
# Pingora drains in-flight requests on SIGTERM (server.grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s CMD ["api-gateway", "--healthcheck"]
CMD ["api-gateway"]
