#!/usr/bin/env bash
# Balancing strategies under load: the gateway in front of three NGINX
# instances, with round_robin, least_request and consistent_hash (on one
# X-Cart key for the whole run: the cost of hashing, and the bounded load
# spreading a hot key), interleaved over passes. oha
# keeps 64 keep-alive connections busy for 10 s after a 2 s warm-up; the
# gateway runs one worker pinned to CPU 0, oha and NGINX share CPU 1. Per
# strategy and pass: req/s and the gateway's CPU µs per request (utime +
# stime from /proc); then medians and each strategy's ratio to round robin.
#
#   apt-get install -y nginx-light && cargo install oha --locked
#   bash benches/balancing_load.sh [passes]     # default 3
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
passes="${1:-3}"
source benches/common.sh
gateway_port=18580
ports=(18581 18582 18583)

cat > "$work/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:${ports[0]}; listen 127.0.0.1:${ports[1]}; listen 127.0.0.1:${ports[2]};
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"id":1,"name":"Ada"}'; } } }
CONF
taskset -c 1 nginx -c "$work/nginx.conf"

config() { # $1: the upstream's balancing keys
    cat <<YAML
server: {threads: 1, work_stealing: false, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: off}
upstreams:
  svc:
    instances: ["http://127.0.0.1:${ports[0]}", "http://127.0.0.1:${ports[1]}", "http://127.0.0.1:${ports[2]}"]
$1
routes:
  - {prefix: /svc, upstream: svc}
YAML
}
config "" > "$work/round_robin.yaml"
config "    load_balancing: least_request" > "$work/least_request.yaml"
config "    load_balancing: consistent_hash
    hash_on: {by: header, name: X-Cart}" > "$work/consistent_hash.yaml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # $1: strategy; prints "req/s cpu_us_per_request"
    taskset -c 0 "$bin" -c "$work/$1.yaml" > "$work/$1.log" 2>&1 &
    local pid=$!
    stop_on_exit+=("$pid")
    until curl -sf -o /dev/null "127.0.0.1:$gateway_port/"; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.05
    done
    local url="http://127.0.0.1:$gateway_port/svc/x"
    taskset -c 1 oha -z 2s -c 64 --no-tui -H "X-Cart: cart-0" "$url" > /dev/null
    local before
    before=$(cpu_ticks "$pid")
    taskset -c 1 oha -z 10s -c 64 --no-tui --output-format json \
        -H "X-Cart: cart-7" "$url" > "$work/$1.json"
    local after
    after=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" || true
    python3 - "$work/$1.json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r.get("statusCodeDistribution", {}).get("200", 0)
if ok == 0 or ok != sum(r.get("statusCodeDistribution", {}).values()):
    sys.exit(f"not every answer was a 200: {r.get('statusCodeDistribution')}")
seconds = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"{r['summary']['requestsPerSec']:.0f} {seconds * 1e6 / ok:.2f}")
PY
}

strategies=(round_robin least_request consistent_hash)
for pass in $(seq "$passes"); do
    for s in "${strategies[@]}"; do
        echo "$s $(measure "$s")" >> "$work/results"
    done
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), float(cpu)))
base_rps = statistics.median(r for r, _ in rows["round_robin"])
base_cpu = statistics.median(c for _, c in rows["round_robin"])
print("| strategy | req/s (median) | vs round_robin | CPU µs/req (median) | vs round_robin |")
print("|---|---|---|---|---|")
for name, values in rows.items():
    rps = statistics.median(r for r, _ in values)
    cpu = statistics.median(c for _, c in values)
    print(f"| {name} | {rps:.0f} | {rps / base_rps:.3f} | {cpu:.2f} | {cpu / base_cpu:.3f} |")
PY
