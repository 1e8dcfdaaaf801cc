#!/usr/bin/env bash
# What the access log costs under load: the gateway (routing only, 1 worker
# thread, pinned to CPU 0) with the log off, json to a file and dev to a
# file, against an NGINX upstream that answers a small JSON body, driven by
# wrk over 64 keep-alive connections (pinned to CPU 1). Everything on
# 127.0.0.1, each run 10 s after a 3 s warm-up, passes interleaved.
# Prints requests/s and CPU µs per request of the gateway process, and each
# log format's cost relative to `off` within the same pass.
#
#   apt-get install -y wrk nginx-light && bash benches/access_log.sh [passes]
set -euo pipefail
cd "$(dirname "$0")/.."
passes="${1:-2}"
source benches/common.sh
upstream_port=18081 gateway_port=18080

start_upstream "$upstream_port" taskset -c 1

config() { # $1 = access_log value
    cat <<CONF
server: {threads: 1, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: $1
upstreams: {users: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes: [{prefix: /users, upstream: users}]
CONF
}
config "{format: off}" > "$work/off.yaml"
config "{format: json, output: $work/access.json}" > "$work/json.yaml"
config "{format: dev, output: $work/access.dev}" > "$work/dev.yaml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Prints "rps cpu_us_per_request" for one configuration.
measure() {
    taskset -c 0 "$bin" -c "$work/$1.yaml" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -sf -o /dev/null "127.0.0.1:$gateway_port/" && break; sleep 0.05; done
    taskset -c 1 wrk -t1 -c64 -d3s "http://127.0.0.1:$gateway_port/users/me" >/dev/null
    local before out after
    before=$(cpu_ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c64 -d10s "http://127.0.0.1:$gateway_port/users/me")
    after=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local requests rps hz
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    hz=$(getconf CLK_TCK)
    echo "$rps $(awk -v t=$((after - before)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
}

echo "| pass | log | requests/s | CPU µs/request | vs off |"
echo "|---|---|---|---|---|"
for pass in $(seq "$passes"); do
    read -r rps_off cpu_off < <(measure off)
    echo "| $pass | off | $rps_off | $cpu_off | 1.00 |"
    for format in json dev; do
        read -r rps cpu < <(measure "$format")
        echo "| $pass | $format | $rps | $cpu | $(awk -v a="$cpu" -v b="$cpu_off" 'BEGIN {printf "%.2f", a / b}') |"
    done
done
