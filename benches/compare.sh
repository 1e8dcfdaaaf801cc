#!/usr/bin/env bash
# The gateway against what a user could run instead, in one run, under two
# load generators. oha and wrk each drive every target with 64 keep-alive
# connections for 8 s after a 2 s warm-up:
#   direct          the NGINX upstream itself (the limit of one hop)
#   nginx           NGINX proxy_pass: prefix strip, upstream keep-alive, a
#                   CORS header, a buffered access log
#   nginx-full      the same plus limit_req, a JSON access log, $request_id
#                   (to the upstream and back) and X-Forwarded-For
#   nginx-full-jwt  nginx-full's /products route, which verifies an HS256
#                   token in njs (benches/nginx_jwt.js)
#   haproxy, caddy  HAProxy 2.6 and Caddy 2.6 (Debian's) doing NGINX plain's
#                   job with their own access logs (benches/peers.sh)
#   pingap          pingap 0.13.1, the Pingora-based gateway, doing the same
#   pingap-full     pingap with the gateway's features where its plugins
#                   have them: request id, a per-address rate that never
#                   triggers, CORS, a JSON-shaped access log, X-Forwarded-*
#   pingap-jwt      pingap-full's /products route: its jwt plugin checks an
#                   HS256 token on every request (no cache)
#   floor           the least a Pingora proxy does for nginx's job
#                   (examples/pingora_floor.rs): what the gateway's
#                   framework costs before any gateway code runs
#   gw-route        the gateway, routing only (no log)
#   gw-log          routing only with its JSON access log: NGINX plain's job
#   gw-full         the gateway with CORS, a local rate limit that never
#                   triggers, request ids and a JSON access log to a file
#   gw-jwt          gw-full's /products route, which verifies an HS256 token
#                   (the load repeats one token, so after the first request
#                   the gateway's verified-token cache answers)
#   gw-jwt-nocache  gw-jwt with that cache off: an HMAC per request, as njs
#                   and pingap do (neither has such a cache)
#   gw-nolog        gw-full without its access log (what the log costs)
# benches/peers.sh says, peer by peer, where their features differ.
# Before any load, every JWT route must pass the token and answer 401 to no
# token, a tampered one and an expired one. Every proxy runs one worker
# pinned to CPU 0; the load generator and the upstream share CPU 1. Passes
# are interleaved (this VM drifts 20-40% between runs, so only ratios
# within a pass mean much). Per target, generator and pass: req/s, p50/p99,
# non-2xx and errors, the proxy's CPU µs per response (utime+stime of all
# its threads from /proc before and after, with the user/kernel split),
# busy (that CPU over the wall time: below ~95% the load generator, not the
# proxy, set the pace), RSS after start and at its peak, and the load
# generator's own CPU per response. Then medians of
# the per-pass ratios for each generator side by side, the issue's targets,
# and a fixed-rate run per pass (5000 req/s for 15 s, oha's latency
# correction) comparing latency at equal load, where a saturated proxy's
# latency would only be its queue; the floor is in it too, so a tail that
# Pingora or the VM adds shows apart from the gateway's. Markdown tables
# on stdout. benches/scaling.sh measures two worker threads against one.
#
#   apt-get install -y nginx-light libnginx-mod-http-js wrk haproxy caddy protobuf-compiler
#   cargo install oha --locked                           # ~12 minutes, once
#   cargo install pingap --version 0.13.1 --locked       # ~20 minutes, once (needs protoc)
#   pip install pyjwt
#   bash benches/compare.sh [passes]     # default 3; ~10 min a pass
set -euo pipefail
shopt -s inherit_errexit   # a failed step inside $(measure ...) stops the run
cd "$(dirname "$0")/.."
for tool in oha wrk haproxy caddy pingap; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: see the header of $0" >&2; exit 1; }
done
njs_module=/usr/lib/nginx/modules/ngx_http_js_module.so
[ -f "$njs_module" ] || { echo "njs is missing: apt-get install -y libnginx-mod-http-js" >&2; exit 1; }
passes="${1:-3}"
source benches/common.sh
source benches/peers.sh
cargo build --release --quiet --example pingora_floor
floor_bin="${CARGO_TARGET_DIR:-target}/release/examples/pingora_floor"
upstream_port=18481 nginx_port=18482 gateway_port=18483
secret="compare-secret-0123456789abcdefghijk"
start_upstream "$upstream_port" taskset -c 1
# The load's token, and two that must be refused: the same signature over
# another user's claims, and an expired one. Minted by PyJWT, not by either
# verifier.
read -r token tampered expired < <(python3 - "$secret" <<'PY'
import base64, json, sys, time, jwt
secret, now = sys.argv[1], int(time.time())
claims = {"sub": "u-1", "iat": now, "exp": now + 6 * 3600}
token = jwt.encode(claims, secret, algorithm="HS256")
header, _, signature = token.split(".")
other = base64.urlsafe_b64encode(json.dumps(dict(claims, sub="u-2")).encode()).decode().rstrip("=")
expired = jwt.encode(dict(claims, exp=now - 3600), secret, algorithm="HS256")
print(token, f"{header}.{other}.{signature}", expired)
PY
)

# NGINX as a user would configure it; $1 is plain or full. Full checks the
# token with a js_set variable tested by `if` rather than auth_request: njs
# runs only where $jwt_sub is read, once per request (NGINX caches the value
# for the X-User-Id header too), and no subrequest is made.
nginx_conf() {
    local dir="$work/nginx-$1"
    mkdir -p "$dir"
    local proxy='proxy_pass http://users/; proxy_http_version 1.1; proxy_set_header Connection "";'
    local modules="" http="access_log $dir/access.log combined buffer=64k flush=1s;" server="" products=""
    if [ "$1" = full ]; then
        modules="load_module $njs_module;"
        http="log_format json escape=json '{\"timestamp\":\"\$time_iso8601\",\"request_id\":\"\$request_id\",\"client_ip\":\"\$remote_addr\",\"method\":\"\$request_method\",\"path\":\"\$request_uri\",\"upstream\":\"\$proxy_host\",\"upstream_addr\":\"\$upstream_addr\",\"status\":\$status,\"bytes\":\$body_bytes_sent,\"request_time_s\":\$request_time,\"upstream_time_s\":\"\$upstream_response_time\",\"user_agent\":\"\$http_user_agent\"}';
  access_log $dir/access.json json buffer=64k flush=1s;
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
  js_import jwt from $PWD/benches/nginx_jwt.js;
  js_set \$jwt_sub jwt.verify;"
        server="limit_req zone=perip burst=1000 nodelay;
    set \$jwt_secret '$secret';
    add_header X-Request-Id \$request_id always;"
        proxy="$proxy proxy_set_header X-Request-Id \$request_id; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
        products="location /products/ {
      default_type application/json;
      if (\$jwt_sub = '') { return 401 '{\"error\":\"Invalid token\"}'; }
      $proxy proxy_set_header X-User-Id \$jwt_sub;
    }"
    fi
    cat > "$dir/nginx.conf" <<CONF
$modules
worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log;
events { worker_connections 1024; }
http {
  $http
  upstream users { server 127.0.0.1:$upstream_port; keepalive 64; }
  server { listen 127.0.0.1:$nginx_port; keepalive_requests 1000000;
    add_header Access-Control-Allow-Origin * always;
    $server
    location /users/ { $proxy }
    $products
  } }
CONF
}
nginx_conf plain
nginx_conf full

cat > "$work/gw-route.yaml" <<CONF
server: {threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: off}
upstreams: {users: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes: [{prefix: /users, upstream: users}]
CONF
sed "s|^access_log: .*|access_log: {format: json, output: $work/access-route.json}|" \
    "$work/gw-route.yaml" > "$work/gw-log.yaml"
everything_on_config "{threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}" \
    "$work/access.json" > "$work/gw-full.yaml"
cat > "$work/floor.yaml" <<CONF
version: 1
threads: 1
work_stealing: false
pid_file: $work/floor.pid
upgrade_sock: $work/floor.sock
CONF
sed 's/^access_log: .*/access_log: {format: off}/' "$work/gw-full.yaml" > "$work/gw-nolog.yaml"
sed 's/^jwt: {/jwt: {cache_size: 0, /' "$work/gw-full.yaml" > "$work/gw-jwt-nocache.yaml"

wait_for() {
    for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done
    echo "not ready: $1" >&2
    exit 1
}

# Starts the proxy for a target on CPU 0; prints the PID to measure (the
# process doing the proxying) and the URL to load.
start() {
    local path=/users/me
    case "$1" in
        *jwt*) path=/products/me ;;
    esac
    case "$1" in
        direct) echo "$(pgrep -P "$(cat "$work/nginx.pid")") http://127.0.0.1:$upstream_port/me" ;;
        nginx*)
            local kind=plain
            [ "$1" = nginx ] || kind=full
            taskset -c 0 nginx -c "$work/nginx-$kind/nginx.conf"
            wait_for "http://127.0.0.1:$nginx_port/users/me"
            echo "$(pgrep -P "$(cat "$work/nginx-$kind/nginx.pid")") http://127.0.0.1:$nginx_port$path" ;;
        haproxy | caddy | pingap*)
            local pid _
            read -r pid _ < <(peer_start "$(peer_of "$1")")
            echo "$pid http://127.0.0.1:$gateway_port$path" ;;
        floor)
            taskset -c 0 "$floor_bin" "127.0.0.1:$gateway_port" "127.0.0.1:$upstream_port" \
                -c "$work/floor.yaml" >/dev/null 2>&1 &
            echo $! > "$work/floor-running.pid"
            wait_for "http://127.0.0.1:$gateway_port/users/me"
            echo "$! http://127.0.0.1:$gateway_port$path" ;;
        gw-*)
            local conf=gw-full
            case "$1" in gw-route | gw-log | gw-nolog | gw-jwt-nocache) conf=$1 ;; esac
            taskset -c 0 "$bin" -c "$work/$conf.yaml" >/dev/null 2>&1 &
            echo $! > "$work/gw-running.pid"   # for stop_all if the run fails
            wait_for "http://127.0.0.1:$gateway_port/"
            echo "$! http://127.0.0.1:$gateway_port$path" ;;
    esac
}

# The peer (benches/peers.sh) a target runs: pingap-jwt is pingap-full's
# /products route.
peer_of() {
    case "$1" in
        pingap) echo pingap-route ;;
        pingap-jwt) echo pingap-full ;;
        *) echo "$1" ;;
    esac
}

stop() {
    local pid signal=INT
    case "$1" in
        direct) return ;;
        haproxy | caddy | pingap*) peer_stop "$(peer_of "$1")" "$2"; return ;;
        nginx) pid=$(cat "$work/nginx-plain/nginx.pid") ;;
        nginx-full*) pid=$(cat "$work/nginx-full/nginx.pid") ;;
        # Pingora's own fast shutdown can spin (README, Operations); the
        # floor has nothing to flush.
        floor) pid=$2 signal=KILL ;;
        gw-*) pid=$2 ;;
    esac
    kill "-$signal" "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$work/gw-running.pid" "$work/floor-running.pid"
}

# On any exit, also stop a proxy that a failed step left running.
stop_all() {
    local f
    for f in "$work"/nginx-*/nginx.pid "$work/gw-running.pid"; do
        [ -f "$f" ] && kill -INT "$(cat "$f")" 2>/dev/null
    done
    for f in "$work/floor-running.pid" "$work/peer-running.pid"; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    cleanup
}
trap stop_all EXIT

# Exits unless $2 answers status $1 (extra arguments go to curl).
expect() {
    local want=$1 url=$2 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
    [ "$got" = "$want" ] || { echo "expected $want, got $got: $url $*" >&2; exit 1; }
}

# A JWT route that refused everything would look fast: before any load,
# check that each one passes the valid token and refuses the others, and
# that the same proxy's /users needs none.
check_auth() {
    local target=$1 pid url
    read -r pid url < <(start "$target")
    expect 200 "$url" -H "Authorization: Bearer $token"
    expect 401 "$url"
    expect 401 "$url" -H "Authorization: Bearer $tampered"
    expect 401 "$url" -H "Authorization: Bearer $expired"
    expect 200 "${url%/products/me}/users/me"
    stop "$target" "$pid"
}
check_auth nginx-full-jwt
check_auth pingap-jwt
check_auth gw-jwt
check_auth gw-jwt-nocache

headers=(-H "Authorization: Bearer $token" -H "Origin: http://shop.test")

# Runs generator $1 against URL $2 for $3 seconds; extra arguments go to
# the generator. Prints "responses rps p50_ms p99_ms bad".
load() {
    local generator=$1 url=$2 seconds=$3
    shift 3
    if [ "$generator" = oha ]; then
        taskset -c 1 oha -z "${seconds}s" -w -c 64 --no-tui --output-format json "$@" "${headers[@]}" "$url" |
            python3 benches/compare.py oha
    else
        taskset -c 1 wrk -t1 -c64 -d"${seconds}s" --latency "$@" "${headers[@]}" "$url" |
            python3 benches/compare.py wrk
    fi
}

# Prints "rps p50_ms p99_ms bad cpu_us user_us sys_us busy idle_rss_mb
# peak_rss_mb generator_us" for target $2 under generator $1 loaded for $3
# seconds (the last is the generator's own CPU per response); extra
# arguments go to the generator (e.g. a fixed rate).
measure() {
    local generator=$1 target=$2 seconds=$3 pid url
    shift 3
    read -r pid url < <(start "$target")
    local idle_rss
    idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    load "$generator" "$url" 2 >/dev/null
    local before after t0 t1 g0 g1 result me=$BASHPID
    # The generator's CPU: what this shell's reaped children used.
    g0=$(awk '{print $16 + $17}' "/proc/$me/stat")
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    t0=$(date +%s.%N)
    result=$(load "$generator" "$url" "$seconds" "$@")
    t1=$(date +%s.%N)
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    g1=$(awk '{print $16 + $17}' "/proc/$me/stat")
    local peak_rss
    peak_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    stop "$target" "$pid"
    python3 - $result "$before" "$after" "$t0" "$t1" "$idle_rss" "$peak_rss" "$(getconf CLK_TCK)" \
        "$((g1 - g0))" <<'PY'
import sys
n, rps, p50, p99, bad = sys.argv[1:6]
(u0, s0), (u1, s1) = [map(int, x.split()) for x in sys.argv[6:8]]
wall = float(sys.argv[9]) - float(sys.argv[8])
hz = int(sys.argv[12])
n = max(int(n), 1)
us = lambda ticks: ticks * 1e6 / hz / n
busy = (u1 - u0 + s1 - s0) / hz / wall * 100
print(f'{rps} {p50} {p99} {bad} {us(u1 - u0 + s1 - s0):.2f} {us(u1 - u0):.2f} {us(s1 - s0):.2f} '
      f'{busy:.0f} {int(sys.argv[10]) / 1024:.1f} {int(sys.argv[11]) / 1024:.1f} {us(int(sys.argv[13])):.2f}')
PY
}

targets=(direct nginx nginx-full nginx-full-jwt haproxy caddy pingap pingap-full pingap-jwt
    floor gw-route gw-log gw-nolog gw-full gw-jwt gw-jwt-nocache)
fixed_targets=(nginx nginx-full nginx-full-jwt haproxy caddy pingap-full pingap-jwt floor
    gw-route gw-full gw-jwt gw-jwt-nocache)
results="$work/results"
for pass in $(seq "$passes"); do
    for generator in oha wrk; do
        for target in "${targets[@]}"; do
            row=$(measure "$generator" "$target" 8)   # not inside echo, which would hide a failure
            echo "$pass $generator $target $row" >> "$results"
        done
    done
    for target in "${fixed_targets[@]}"; do
        # 75,000 responses a run: a p99 resting on 750 of them, where 8 s
        # left it to 400 and one stall of the VM could move it by a
        # millisecond.
        row=$(measure oha "$target" 15 -q 5000 --latency-correction)
        echo "$pass fixed $target $row" >> "$results"
    done
done

python3 benches/compare.py report "$results"
