#!/usr/bin/env bash
# The gateway against the alternatives, in one run: oha with 64 keep-alive
# connections for 10 s (after a 3 s warm-up) against
#   direct      the NGINX upstream itself (the limit of one hop),
#   nginx       NGINX proxy_pass with prefix strip, upstream keep-alive, a
#               CORS header and a buffered access log,
#   gw-route    the gateway, routing only,
#   gw-full     the gateway with CORS, a local rate limit that never
#               triggers, request ids and a JSON access log to a file, on a
#               route without JWT,
#   gw-jwt      the same on a route that verifies an HS256 token.
# The proxy under test is pinned to CPU 0, oha and the upstream to CPU 1.
# Passes are interleaved. Per target: requests/s, p50/p99, non-2xx and
# errors, the proxy's CPU µs per request (utime+stime from /proc, with the
# user/kernel split), peak RSS, and the ratio of CPU per request to NGINX
# in the same pass. A Markdown table on stdout.
#
#   apt-get install -y nginx-light && cargo install oha --locked
#   pip install pyjwt && bash benches/compare.sh [passes]
#
# Not yet here (issue 7): NGINX with limit_req, a JSON log and njs JWT
# verification, and the fixed-rate latency run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
passes="${1:-3}"
source benches/common.sh
upstream_port=18481 nginx_port=18482 gateway_port=18483
secret="compare-secret-0123456789abcdefghijk"
start_upstream "$upstream_port" taskset -c 1
token=$(python3 -c 'import jwt, sys, time
print(jwt.encode({"sub": "u-1", "iat": int(time.time()), "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$secret")

mkdir -p "$work/proxy"
cat > "$work/proxy.conf" <<CONF
worker_processes 1; pid $work/proxy/nginx.pid; error_log $work/proxy/error.log;
events { worker_connections 1024; }
http {
  access_log $work/proxy/access.log combined buffer=64k flush=1s;
  upstream users { server 127.0.0.1:$upstream_port; keepalive 64; }
  server { listen 127.0.0.1:$nginx_port; keepalive_requests 1000000;
    location /users/ {
      proxy_pass http://users/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      add_header Access-Control-Allow-Origin * always;
    } } }
CONF

cat > "$work/gw-route.yaml" <<CONF
server: {threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: off}
upstreams: {users: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes: [{prefix: /users, upstream: users}]
CONF
cat > "$work/gw-full.yaml" <<CONF
server: {threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: json, output: $work/access.json}
cors: {allow_origins: ['*']}
rate_limit: {requests: 1000000, per: 1s}
jwt: {keys: [{secret: '$secret'}], claim_headers: {sub: X-User-Id}}
upstreams: {users: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes:
  - {prefix: /users, upstream: users}
  - {prefix: /products, upstream: users, auth: required}
CONF

# Starts the proxy for a target on CPU 0; prints its PID and URL.
start() {
    case "$1" in
        # The upstream's own worker: what serving the answer costs NGINX.
        direct) echo "$(pgrep -P "$(cat "$work/nginx.pid")") http://127.0.0.1:$upstream_port/me" ;;
        nginx)
            taskset -c 0 nginx -c "$work/proxy.conf"
            sleep 0.2
            # The worker does the proxying.
            echo "$(pgrep -P "$(cat "$work/proxy/nginx.pid")") http://127.0.0.1:$nginx_port/users/me" ;;
        gw-*)
            local conf=gw-full
            [ "$1" = gw-route ] && conf=gw-route
            taskset -c 0 "$bin" -c "$work/$conf.yaml" >/dev/null 2>&1 &
            local pid=$!
            for _ in $(seq 200); do curl -sf -o /dev/null "127.0.0.1:$gateway_port/" && break; sleep 0.05; done
            local path=/users/me
            [ "$1" = gw-jwt ] && path=/products/me
            echo "$pid http://127.0.0.1:$gateway_port$path" ;;
    esac
}

stop() {
    case "$1" in
        direct) ;;
        nginx) kill "$(cat "$work/proxy/nginx.pid")"; sleep 0.3 ;;
        gw-*) kill -INT "$2"; wait "$2" 2>/dev/null || true ;;
    esac
}

# Prints "rps p50_ms p99_ms bad cpu_us user_us sys_us rss_mb" for one target.
measure() {
    local pid url
    read -r pid url < <(start "$1")
    local auth=(-H "Authorization: Bearer $token" -H "Origin: http://shop.test")
    taskset -c 1 oha -z 3s -c 64 --no-tui "${auth[@]}" "$url" >/dev/null
    local before after
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    taskset -c 1 oha -z 10s -w -c 64 --no-tui --output-format json "${auth[@]}" "$url" > "$work/oha.json"
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    local rss
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    stop "$1" "$pid"
    python3 - "$work/oha.json" "$before" "$after" "$rss" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
codes, errors = r["statusCodeDistribution"], r["errorDistribution"]
n = sum(codes.values())
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errors.values())
(u0, s0), (u1, s1) = [map(int, x.split()) for x in sys.argv[2:4]]
hz = int(sys.argv[5])
us = lambda ticks: ticks * 1e6 / hz / max(n, 1)
p = r["latencyPercentiles"]
print(f'{r["summary"]["requestsPerSec"]:.0f} {p["p50"]*1e3:.2f} {p["p99"]*1e3:.2f} {bad} '
      f'{us(u1 - u0 + s1 - s0):.1f} {us(u1 - u0):.1f} {us(s1 - s0):.1f} {int(sys.argv[4]) / 1024:.1f}')
PY
}

echo "| pass | target | req/s | p50 ms | p99 ms | non-2xx+errors | CPU µs/req | user | kernel | peak RSS MB | CPU vs nginx |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for pass in $(seq "$passes"); do
    nginx_cpu=""
    for target in nginx direct gw-route gw-full gw-jwt; do
        read -r rps p50 p99 bad cpu user sys rss < <(measure "$target")
        [ "$target" = nginx ] && nginx_cpu="$cpu"
        ratio=$(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN {printf "%.2f", a / b}')
        [ "$target" = direct ] && ratio="-"
        echo "| $pass | $target | $rps | $p50 | $p99 | $bad | $cpu | $user | $sys | $rss | $ratio |"
    done
done
