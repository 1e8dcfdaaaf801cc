#!/usr/bin/env bash
# Zero-downtime reloads under load: oha keeps 64 keep-alive connections busy
# against the gateway for 30 s while scripts/upgrade.sh reloads it three
# times, each time with a config that adds a route (checked right after).
# Prints a Markdown table: requests, status codes, errors, reloads.
# Everything on 127.0.0.1, bounded in time.
#
#   apt-get install -y nginx-light && cargo install oha --locked
#   bash benches/reload_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
source benches/common.sh
upstream_port=18281 gateway_port=18280

start_upstream "$upstream_port"
# Whichever process holds the sockets at the end is named in the pid file.
stop_last_gateway() { kill "$(cat "$work/gw.pid" 2>/dev/null)" 2>/dev/null || true; cleanup; }
trap stop_last_gateway EXIT

config() { # routes beyond /a: $@
    cat <<CONF
server: {threads: 2, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock, grace_period: 2s, graceful_shutdown_timeout: 1s}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: off}
upstreams: {svc: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes:
  - {prefix: /a, upstream: svc}
CONF
    for prefix in "$@"; do echo "  - {prefix: $prefix, upstream: svc}"; done
}
config > "$work/gw.yaml"
"$bin" -c "$work/gw.yaml" >/dev/null 2>&1 &
for _ in $(seq 200); do curl -sf -o /dev/null "127.0.0.1:$gateway_port/" && break; sleep 0.05; done

oha -z 30s -w -c 64 --no-tui --output-format json "http://127.0.0.1:$gateway_port/a/x" > "$work/oha.json" &
oha_pid=$!
sleep 3
routes=() reloads=0 new_routes_ok=0
for n in 1 2 3; do
    routes+=("/new$n")
    config "${routes[@]}" > "$work/gw.yaml"
    scripts/upgrade.sh -c "$work/gw.yaml" -b "$bin" -l "$work/upgrade.log" >/dev/null
    reloads=$((reloads + 1))
    status=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$gateway_port/new$n/x")
    [ "$status" = 200 ] && new_routes_ok=$((new_routes_ok + 1))
done
wait "$oha_pid"

python3 - "$work/oha.json" "$reloads" "$new_routes_ok" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
codes = report.get("statusCodeDistribution", {})
errors = report.get("errorDistribution", {})
total = sum(codes.values()) + sum(errors.values())
print("| requests | status codes | errors | reloads | new route answered |")
print("|---|---|---|---|---|")
print(f"| {total} | {codes} | {sum(errors.values())} {errors or ''} | {sys.argv[2]} | {sys.argv[3]} of {sys.argv[2]} |")
PY
