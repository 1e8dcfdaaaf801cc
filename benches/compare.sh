#!/usr/bin/env bash
# The gateway against what a user could run instead, in one run. oha drives
# each target with 64 keep-alive connections for 10 s after a 3 s warm-up:
#   direct          the NGINX upstream itself (the limit of one hop)
#   nginx           NGINX proxy_pass: prefix strip, upstream keep-alive, a
#                   CORS header, a buffered access log
#   nginx-full      the same plus limit_req, a JSON access log, $request_id
#                   (to the upstream and back) and X-Forwarded-For
#   nginx-full-jwt  nginx-full's /products route, which verifies an HS256
#                   token in njs (benches/nginx_jwt.js)
#   floor           the least a Pingora proxy does for nginx's job
#                   (examples/pingora_floor.rs): what the gateway's
#                   framework costs before any gateway code runs
#   gw-route        the gateway, routing only (no log)
#   gw-full         the gateway with CORS, a local rate limit that never
#                   triggers, request ids and a JSON access log to a file
#   gw-jwt          gw-full's /products route, which verifies an HS256 token
#                   (the load repeats one token, so after the first request
#                   the gateway's verified-token cache answers)
#   gw-jwt-nocache  gw-jwt with that cache off: an HMAC per request, as njs
#                   does (NGINX full has no such cache)
#   gw-nolog        gw-full without its access log (what the log costs)
# Before any load, both JWT routes must pass the token and answer 401 to no
# token, a tampered one and an expired one. Every proxy runs one worker
# pinned to CPU 0; oha and the upstream share CPU 1. Passes are interleaved
# (this VM drifts 20-40% between runs, so only ratios within a pass mean
# much). Per target and pass: req/s, p50/p99, non-2xx and errors, the
# proxy's CPU µs per response (utime+stime from /proc before and after,
# with the user/kernel split), RSS after start (before any load) and at its
# peak, and CPU per request against NGINX plain and NGINX full (JWT targets
# against nginx-full-jwt). Then medians over the passes, and one fixed-rate
# run (5000 req/s, oha's latency correction) comparing latency at equal
# load, where a saturated proxy's latency would only be its queue. Markdown
# tables on stdout.
#
#   apt-get install -y nginx-light libnginx-mod-http-js
#   cargo install oha --locked     # ~12 minutes, once
#   pip install pyjwt
#   bash benches/compare.sh [passes]     # default 3; ~2.7 min a pass + 2 min
set -euo pipefail
shopt -s inherit_errexit   # a failed step inside $(measure ...) stops the run
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
njs_module=/usr/lib/nginx/modules/ngx_http_js_module.so
[ -f "$njs_module" ] || { echo "njs is missing: apt-get install -y libnginx-mod-http-js" >&2; exit 1; }
passes="${1:-3}"
source benches/common.sh
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
claims = {"sub": "u-1", "iat": now, "exp": now + 3600}
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
        floor)
            taskset -c 0 "$floor_bin" "127.0.0.1:$gateway_port" "127.0.0.1:$upstream_port" \
                -c "$work/floor.yaml" >/dev/null 2>&1 &
            echo $! > "$work/floor-running.pid"
            wait_for "http://127.0.0.1:$gateway_port/users/me"
            echo "$! http://127.0.0.1:$gateway_port$path" ;;
        gw-*)
            local conf=gw-full
            case "$1" in gw-route | gw-nolog | gw-jwt-nocache) conf=$1 ;; esac
            taskset -c 0 "$bin" -c "$work/$conf.yaml" >/dev/null 2>&1 &
            echo $! > "$work/gw-running.pid"   # for stop_all if the run fails
            wait_for "http://127.0.0.1:$gateway_port/"
            echo "$! http://127.0.0.1:$gateway_port$path" ;;
    esac
}

stop() {
    local pid signal=INT
    case "$1" in
        direct) return ;;
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
    [ -f "$work/floor-running.pid" ] && kill -KILL "$(cat "$work/floor-running.pid")" 2>/dev/null
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
check_auth gw-jwt
check_auth gw-jwt-nocache

headers=(-H "Authorization: Bearer $token" -H "Origin: http://shop.test")

# Prints "rps p50_ms p99_ms bad cpu_us user_us sys_us idle_rss_mb peak_rss_mb"
# for one target; extra arguments go to oha (e.g. a fixed rate).
measure() {
    local target=$1 pid url
    shift
    read -r pid url < <(start "$target")
    local idle_rss
    idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    taskset -c 1 oha -z 3s -c 64 --no-tui "${headers[@]}" "$url" >/dev/null
    local before after
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    taskset -c 1 oha -z 10s -w -c 64 --no-tui --output-format json "$@" "${headers[@]}" "$url" > "$work/oha.json"
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    local peak_rss
    peak_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    stop "$target" "$pid"
    python3 - "$work/oha.json" "$before" "$after" "$idle_rss" "$peak_rss" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
codes, errors = r["statusCodeDistribution"], r["errorDistribution"]
n = sum(codes.values())
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errors.values())
(u0, s0), (u1, s1) = [map(int, x.split()) for x in sys.argv[2:4]]
hz = int(sys.argv[6])
us = lambda ticks: ticks * 1e6 / hz / max(n, 1)
p = r["latencyPercentiles"]
print(f'{r["summary"]["requestsPerSec"]:.0f} {p["p50"]*1e3:.2f} {p["p99"]*1e3:.2f} {bad} '
      f'{us(u1 - u0 + s1 - s0):.1f} {us(u1 - u0):.1f} {us(s1 - s0):.1f} '
      f'{int(sys.argv[4]) / 1024:.1f} {int(sys.argv[5]) / 1024:.1f}')
PY
}

targets=(direct nginx nginx-full nginx-full-jwt floor gw-route gw-nolog gw-full gw-jwt gw-jwt-nocache)
results="$work/results"
for pass in $(seq "$passes"); do
    for target in "${targets[@]}"; do
        row=$(measure "$target")   # not inside echo, which would hide a failure
        echo "$pass $target $row" >> "$results"
    done
done
for target in nginx nginx-full nginx-full-jwt gw-route gw-full gw-jwt gw-jwt-nocache; do
    row=$(measure "$target" -q 5000 --latency-correction)
    echo "$target $row" >> "$work/fixed"
done

python3 - "$results" "$work/fixed" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cols = "rps p50 p99 bad cpu user sys idle peak".split()
data = {}  # (pass, target) -> dict
for pass_, target, *values in rows:
    data[(pass_, target)] = dict(zip(cols, map(float, values)))
passes = sorted({p for p, _ in data}, key=int)
targets = list(dict.fromkeys(t for _, t in data))
def full_peer(target):
    return "nginx-full-jwt" if "jwt" in target else "nginx-full"
def ratios(p, t):
    cpu = data[(p, t)]["cpu"]
    if t == "direct":
        return None, None
    return cpu / data[(p, "nginx")]["cpu"], cpu / data[(p, full_peer(t))]["cpu"]

print("| pass | target | req/s | p50 ms | p99 ms | non-2xx+errors | CPU µs/req | user | kernel | RSS idle/peak MB | CPU vs nginx | vs nginx-full |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for p in passes:
    for t in targets:
        d = data[(p, t)]
        plain, full = ratios(p, t)
        fmt = lambda x: "-" if x is None else f"{x:.2f}"
        print(f'| {p} | {t} | {d["rps"]:.0f} | {d["p50"]:.2f} | {d["p99"]:.2f} | {d["bad"]:.0f} | '
              f'{d["cpu"]:.1f} | {d["user"]:.1f} | {d["sys"]:.1f} | {d["idle"]:.1f}/{d["peak"]:.1f} | {fmt(plain)} | {fmt(full)} |')

print()
print(f"Medians over {len(passes)} passes (ratios: the median of the per-pass ratios):")
print()
print("| target | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs nginx | vs nginx-full | RSS idle MB | RSS peak MB |")
print("|---|---|---|---|---|---|---|---|---|")
med = lambda xs: statistics.median(xs)
for t in targets:
    m = {c: med([data[(p, t)][c] for p in passes]) for c in cols}
    if t == "direct":
        plain = full = "-"
    else:
        plain = f'{med([ratios(p, t)[0] for p in passes]):.2f}'
        full = f'{med([ratios(p, t)[1] for p in passes]):.2f}'
    print(f'| {t} | {m["rps"]:.0f} | {m["p50"]:.2f} | {m["p99"]:.2f} | {m["cpu"]:.1f} | {plain} | {full} | {m["idle"]:.1f} | {m["peak"]:.1f} |')

print()
gw = {c: med([data[(p, "gw-full")][c] for p in passes]) for c in ("idle", "peak")}
print(f'gw-full memory (median): {gw["idle"]:.1f} MB RSS after start, before any load; '
      f'{gw["peak"]:.1f} MB peak RSS after the load.')
print()
print("Where the CPU goes (median of the per-pass CPU ratios):")
print()
print("| comparison | CPU ratio |")
print("|---|---|")
for label, a, b in [("routing only / Pingora floor", "gw-route", "floor"),
                    ("everything on / Pingora floor", "gw-full", "floor"),
                    ("Pingora floor / nginx", "floor", "nginx"),
                    ("everything on / routing only", "gw-full", "gw-route"),
                    ("JSON access log (gw-full / gw-nolog)", "gw-full", "gw-nolog"),
                    ("HS256 JWT, cached (gw-jwt / gw-full)", "gw-jwt", "gw-full"),
                    ("HS256 JWT, verified every time (gw-jwt-nocache / gw-full)", "gw-jwt-nocache", "gw-full")]:
    print(f'| {label} | {med([data[(p, a)]["cpu"] / data[(p, b)]["cpu"] for p in passes]):.2f} |')

print()
print("Fixed rate, 5000 req/s for 10 s, latency corrected:")
print()
print("| target | req/s | p50 ms | p99 ms | p99 - nginx p99 ms | non-2xx+errors | CPU µs/req |")
print("|---|---|---|---|---|---|---|")
fixed = {t: dict(zip(cols, map(float, v))) for t, *v in (l.split() for l in open(sys.argv[2]))}
for t, d in fixed.items():
    print(f'| {t} | {d["rps"]:.0f} | {d["p50"]:.2f} | {d["p99"]:.2f} | {d["p99"] - fixed["nginx"]["p99"]:+.2f} | {d["bad"]:.0f} | {d["cpu"]:.1f} |')
PY
