#!/usr/bin/env bash
# The demo: four sample services (user, product, order, notification) on
# 127.0.0.1:3001-3004 and the gateway in front of them on :${PORT:-3000}.
# Ctrl-C stops both. Extra arguments go to api-gateway (e.g. -c my.yaml).
# The services and the gateway share JWT_SECRET (a demo value unless set);
# `POST /users/login` returns a token to call the protected routes with.
set -euo pipefail
cd "$(dirname "$0")/.."
export JWT_SECRET="${JWT_SECRET:-demo-secret-not-for-production}"

./scripts/install-deps.sh
# Two builds: one would unify the two packages' dependency features and
# give a gateway binary other than the one `cargo build` makes.
cargo build --release --bin api-gateway
cargo build --release -p demo-services
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/demo_services" &
demo=$!
trap 'kill "$demo" 2>/dev/null || true' EXIT INT TERM
"$bin/api-gateway" "$@"
