#!/usr/bin/env bash
# Live reloads (SIGHUP, `api-gateway -s reload`) measured:
#   1. how long a reload of the shipped conf/gateway.yaml takes in the
#      running process (20 reloads; the gateway reports each one's time)
#      and how long `-s reload` takes end to end;
#   2. latency under a fixed load of 2000 req/s for 20 s with a reload every
#      second, against the same load without reloads, in one run: p50, p99,
#      p99.9, errors and non-2xx.
# The load config is the shipped one without its per-address limit (one
# client address at 2000 req/s would be refused), with a token on
# /products, so requests reach the NGINX upstream. Markdown on stdout;
# everything on 127.0.0.1 and bounded in time.
#
#   apt-get install -y nginx-light && cargo install oha --locked
#   bash benches/live_reload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
source benches/common.sh
upstream_port=18381 gateway_port=18380
secret="live-reload-secret-0123456789abcdef"
start_upstream "$upstream_port"

export PORT=$gateway_port JWT_SECRET=$secret
for service in USER PRODUCT ORDER NOTIFICATION; do
    export "${service}_SERVICE_URL=http://127.0.0.1:$upstream_port"
done
# Private pid and status files, so nothing else is signalled.
shipped="$work/shipped.yaml"
sed "s|/tmp/api-gateway|$work/gw|" conf/gateway.yaml > "$shipped"
python3 - "$shipped" "$work/load.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
# The per-address limit goes: the load comes from one address.
text = re.sub(r"\nrate_limit:\n(  .*\n)+", "\n", text)
open(sys.argv[2], "w").write(text.replace("format: dev", "format: off"))
PY
token=$(python3 -c 'import jwt,sys,time; print(jwt.encode({"sub":"u-1","exp":int(time.time())+3600}, sys.argv[1], algorithm="HS256"))' "$secret")

start_gateway() {
    "$bin" -c "$1" > "$work/gw.log" 2>&1 &
    gateway_pid=$!
    stop_on_exit+=("$gateway_pid")
    until curl -sf -o /dev/null "127.0.0.1:$gateway_port/"; do
        kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gw.log" >&2; exit 1; }
        sleep 0.05
    done
}
stop_gateway() { kill "$gateway_pid"; wait "$gateway_pid" || true; }

echo "## Reload time, shipped config"
echo
start_gateway "$shipped"
: > "$work/reload-times"
start=$(date +%s%N)
for _ in $(seq 20); do
    "$bin" -s reload -c "$shipped" >> "$work/reload-times"
done
end=$(date +%s%N)
stop_gateway
python3 - "$work/reload-times" "$start" "$end" <<'PY'
import re, statistics, sys
times = [float(m) for m in re.findall(r"in ([0-9.]+) ms", open(sys.argv[1]).read())]
wall = (int(sys.argv[3]) - int(sys.argv[2])) / 1e6 / len(times)
print("| reloads | in the process: min | median | max | `-s reload` end to end, mean |")
print("|---|---|---|---|---|")
print(f"| {len(times)} | {min(times):.2f} ms | {statistics.median(times):.2f} ms | {max(times):.2f} ms | {wall:.1f} ms |")
PY

echo
echo "## Latency at 2000 req/s for 20 s, with and without a reload every second"
echo
load() { # $1: label
    oha -z 20s -q 2000 --latency-correction -c 32 --no-tui --output-format json \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$gateway_port/products/1" > "$work/$1.json"
}
start_gateway "$work/load.yaml"
load quiet
load reloading & load_pid=$!
reloads=0
while kill -0 "$load_pid" 2>/dev/null; do
    sleep 1
    kill -0 "$load_pid" 2>/dev/null || break
    "$bin" -s reload -c "$work/load.yaml" > /dev/null && reloads=$((reloads + 1))
done
wait "$load_pid"
stop_gateway
python3 - "$work/quiet.json" "$work/reloading.json" "$reloads" <<'PY'
import json, sys
print("| run | requests | p50 | p99 | p99.9 | non-2xx | errors | reloads |")
print("|---|---|---|---|---|---|---|---|")
for path, label, reloads in [(sys.argv[1], "no reloads", 0), (sys.argv[2], "a reload a second", sys.argv[3])]:
    r = json.load(open(path))
    codes = r.get("statusCodeDistribution", {})
    errors = sum(r.get("errorDistribution", {}).values())
    total = sum(codes.values())
    bad = total - codes.get("200", 0)
    p = r["latencyPercentiles"]
    ms = lambda k: f"{p[k] * 1000:.2f} ms"
    print(f"| {label} | {total + errors} | {ms('p50')} | {ms('p99')} | {ms('p99.9')} | {bad} | {errors} | {reloads} |")
PY
