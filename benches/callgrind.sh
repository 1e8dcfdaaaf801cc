#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable where timings
# are not (the same binary and inputs give the same count within a fraction
# of a percent, whatever else the machine does), so small changes to the
# request path can be judged one against another.
#
# Each target runs the gateway under valgrind with one worker thread against
# the NGINX upstream of benches/common.sh. One keep-alive client sends 300
# requests to warm up, the counters are zeroed, 2000 more are sent, and the
# counters are dumped: the dump's total over 2000 is the figure.
#   route   routing only: one route, no plugins, no access log
#   full    CORS, a local rate limit that never triggers, request ids and a
#           JSON access log to a file, on a route without JWT
#   jwt     full, on a route that verifies an HS256 token (one token
#           repeated, so the verified-token cache answers after the first)
#   trace   full, with tracing on (every request sampled, spans exported
#           over OTLP/HTTP to the NGINX upstream, which answers 200)
#   floor   examples/pingora_floor.rs, the least a Pingora proxy does for
#           routing only's job: what the gateway's framework costs
#
#   apt-get install -y valgrind nginx-light
#   bash benches/callgrind.sh [target ...]     # default: route full jwt trace
#   GATEWAY_BIN=/tmp/old-api-gateway bash benches/callgrind.sh   # a baseline
#   FLOOR_BIN=/tmp/old-pingora_floor bash benches/callgrind.sh floor
#   CALLGRIND_KEEP=/tmp/dumps bash benches/callgrind.sh full   # keep the dumps
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
source benches/common.sh
cargo build --release --quiet --example pingora_floor
floor_bin="${FLOOR_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/pingora_floor}"
# GATEWAY_BIN=path/to/other/api-gateway measures another build (a baseline).
bin="${GATEWAY_BIN:-$bin}"
targets=("${@:-route full jwt trace}")
read -r -a targets <<<"${targets[*]}"
upstream_port=18491 gateway_port=18492
secret="callgrind-secret-0123456789abcdefghij"
start_upstream "$upstream_port"

config() {
    local extra="" routes="  - {prefix: /users, upstream: users}"
    if [ "$1" != route ]; then
        extra="access_log: {format: json, output: $work/access.log}
cors: {allow_origins: ['http://localhost:5173'], expose_headers: [X-Request-Id]}
rate_limit: {requests: 1000000, per: 1s}
jwt: {keys: [{secret: '$secret'}], claim_headers: {sub: X-User-Id}}"
        routes="  - {prefix: /users, upstream: users}
  - {prefix: /products, upstream: users, auth: required}"
        if [ "$1" = trace ]; then
            extra="$extra
tracing: {endpoint: 'http://127.0.0.1:$upstream_port/v1/traces'}"
        fi
    else
        extra="access_log: {format: off}"
    fi
    cat <<YAML
server: {threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
$extra
upstreams:
  users: {instances: ["http://127.0.0.1:$upstream_port"]}
routes:
$routes
YAML
}

token=$(python3 -c 'import jwt,sys,time; print(jwt.encode({"sub":"u-1","exp":int(time.time())+3600}, sys.argv[1], algorithm="HS256"))' "$secret")

# Sends $2 keep-alive GETs of $1 (with an Origin and a token) and checks
# every answer is a 200.
load() {
    python3 - "$gateway_port" "$1" "$2" "$token" <<'PY'
import http.client, sys
port, path, count, token = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
headers = {"Origin": "http://localhost:5173", "Authorization": f"Bearer {token}"}
for _ in range(count):
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"{path}: status {response.status}")
PY
}

echo "| target | instructions per request |"
echo "|---|---|"
for target in "${targets[@]}"; do
    config "$target" > "$work/$target.yaml"
    path=/users/me
    [ "$target" = jwt ] && path=/products/1
    command=("$bin" -c "$work/$target.yaml")
    if [ "$target" = floor ]; then
        printf 'version: 1\nthreads: 1\nwork_stealing: false\npid_file: %s\nupgrade_sock: %s\n' \
            "$work/floor.pid" "$work/floor.sock" > "$work/floor.yaml"
        command=("$floor_bin" "127.0.0.1:$gateway_port" "127.0.0.1:$upstream_port" -c "$work/floor.yaml")
    fi
    valgrind --tool=callgrind --callgrind-out-file="$work/$target.%p.out" \
        "${command[@]}" > "$work/$target.stdout" 2>&1 &
    pid=$!
    stop_on_exit+=("$pid")
    until curl -sf -o /dev/null "http://127.0.0.1:$gateway_port/users/me"; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$target.stdout" >&2; exit 1; }
        sleep 0.1
    done
    load "$path" 300
    callgrind_control --zero "$pid" >/dev/null 2>&1
    load "$path" 2000
    callgrind_control --dump="$target" "$pid" >/dev/null 2>&1
    # The floor has nothing to flush, and Pingora's own fast shutdown can
    # spin (README, Operations).
    signal=INT
    [ "$target" = floor ] && signal=KILL
    kill "-$signal" "$pid"
    wait "$pid" || true
    total=$(grep -h '^totals:\|^summary:' "$work/$target.$pid.out".* | awk '{print $2}' | sort -n | tail -1)
    # CALLGRIND_KEEP=dir keeps the dumps, for callgrind_annotate.
    [ -n "${CALLGRIND_KEEP:-}" ] && cp "$work/$target.$pid.out".* "$CALLGRIND_KEEP/"
    echo "| $target | $(python3 -c "print(f'{$total / 2000 / 1000:.1f}k')") |"
done
