# Build stage: the gateway and the demo services.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin api-gateway --example demo_services \
 && cp target/release/api-gateway target/release/examples/demo_services /usr/local/bin/

# The demo services, for docker-compose.yml.
FROM debian:bookworm-slim AS demo
COPY --from=build /usr/local/bin/demo_services /usr/local/bin/
USER 10001
CMD ["demo_services", "--host", "0.0.0.0"]

# The gateway: only the binary and conf/, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app gateway
WORKDIR /app
COPY --from=build /usr/local/bin/api-gateway /usr/local/bin/
COPY conf ./conf
USER gateway
ENV PORT=3000
EXPOSE 3000
# Pingora drains in-flight requests on SIGTERM (server.grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
CMD ["api-gateway"]
