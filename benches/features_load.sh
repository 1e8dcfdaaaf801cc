#!/usr/bin/env bash
# What the per-request features cost under load: one gateway (1 worker
# thread, pinned to CPU 0) with routes to the same NGINX upstream: nothing,
# a local rate limit, a Redis rate limit (a redis-server on CPU 1), HS256
# required, RS256 (2048-bit) required; limits high enough never to refuse.
# Each route is driven by wrk over 64 keep-alive connections (pinned to CPU
# 1) with the same valid token on every request. Everything on 127.0.0.1,
# 10 s per route after a 3 s warm-up, passes interleaved. Prints requests/s
# and the gateway's CPU µs per request, and each route's cost relative to
# the plain route in the same pass.
#
#   apt-get install -y wrk nginx-light redis-server
#   pip install pyjwt cryptography
#   bash benches/features_load.sh [passes]
set -euo pipefail
cd "$(dirname "$0")/.."
passes="${1:-2}"
source benches/common.sh
upstream_port=18081 gateway_port=18080 redis_port=18082
secret="load-test-secret-0123456789abcdef"

start_upstream "$upstream_port" taskset -c 1
taskset -c 1 redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null &
stop_on_exit+=($!)

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs.key" 2>/dev/null
openssl pkey -in "$work/rs.key" -pubout -out "$work/rs.pem"
mint() { # $1 = alg, $2 = key
    python3 -c 'import jwt, sys, time
print(jwt.encode({"sub": "u-1", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[2], algorithm=sys.argv[1]))' "$1" "$2"
}
hs_token=$(mint HS256 "$secret")
rs_token=$(mint RS256 "$(cat "$work/rs.key")")

cat > "$work/gw.yaml" <<CONF
server: {threads: 1, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: off}
rate_limit_backends: {redis: {url: "redis://127.0.0.1:$redis_port"}}
jwt:
  keys:
    - {secret: "$secret", algorithms: [HS256]}
    - {public_key_file: "$work/rs.pem", algorithms: [RS256]}
  claim_headers: {sub: X-User-Id}
upstreams: {svc: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes:
  - {prefix: /open, upstream: svc}
  - {prefix: /local, upstream: svc, rate_limit: {requests: 1000000, backend: local}}
  - {prefix: /redis, upstream: svc, rate_limit: {requests: 1000000, backend: redis}}
  - {prefix: /hs, upstream: svc, auth: required}
  - {prefix: /rs, upstream: svc, auth: required}
CONF
taskset -c 0 "$bin" -c "$work/gw.yaml" >/dev/null 2>&1 &
gateway_pid=$!
stop_on_exit+=("$gateway_pid")
for _ in $(seq 200); do curl -sf -o /dev/null "127.0.0.1:$gateway_port/" && break; sleep 0.05; done
# Until the gateway has reached Redis, the redis route passes unlimited.
for _ in $(seq 100); do
    curl -si "127.0.0.1:$gateway_port/redis/me" | grep -qi '^ratelimit-limit' && break
    sleep 0.1
done
for check in "hs $hs_token" "rs $rs_token" "local -" "redis -"; do
    set -- $check
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "127.0.0.1:$gateway_port/$1/me")
    [ "$status" = 200 ] || { echo "/$1 answered $status, not 200" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$gateway_pid/stat"; }

# Prints "rps cpu_us_per_request" for one route and token.
measure() {
    local url="http://127.0.0.1:$gateway_port/$1/me" auth="Authorization: Bearer $2"
    taskset -c 1 wrk -t1 -c64 -d3s -H "$auth" "$url" >/dev/null
    local before out after requests rps non2xx
    before=$(cpu_ticks)
    out=$(taskset -c 1 wrk -t1 -c64 -d10s -H "$auth" "$url")
    after=$(cpu_ticks)
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    [ -z "$non2xx" ] || { echo "/$1: $non2xx non-2xx responses" >&2; exit 1; }
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    echo "$rps $(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
}

echo "| pass | route | requests/s | CPU µs/request | vs plain |"
echo "|---|---|---|---|---|"
for pass in $(seq "$passes"); do
    read -r rps_open cpu_open < <(measure open "$hs_token")
    echo "| $pass | plain | $rps_open | $cpu_open | 1.00 |"
    for route in "local $hs_token local-limit" "redis $hs_token redis-limit" "hs $hs_token HS256" "rs $rs_token RS256"; do
        set -- $route
        read -r rps cpu < <(measure "$1" "$2")
        echo "| $pass | $3 | $rps | $cpu | $(awk -v a="$cpu" -v b="$cpu_open" 'BEGIN {printf "%.2f", a / b}') |"
    done
done
