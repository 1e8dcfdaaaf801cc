#!/usr/bin/env bash
# What tracing costs under load: three gateways (1 worker thread each, all
# pinned to CPU 0, metrics on) in front of the same NGINX upstream, with
# tracing off, on with `sampling_ratio: 0` (trace context propagated, no
# spans) and on with `sampling_ratio: 1` (every request exported over
# OTLP/HTTP, to NGINX, which answers 200). Each pass loads each gateway in
# turn with wrk over 32 keep-alive connections (pinned to CPU 1), 5 s after
# a 2 s warm-up, the order reversed every other pass. Prints requests/s,
# each gateway's CPU µs per request (export included: it runs in the same
# process), its cost relative to tracing off in the same pass, and the
# median of those ratios. On a 2-core VM the per-pass ratios spread by a
# few percent: run 8 passes or more.
#
#   apt-get install -y wrk nginx-light
#   bash benches/tracing_load.sh [passes]
set -euo pipefail
cd "$(dirname "$0")/.."
passes="${1:-8}"
source benches/common.sh
upstream_port=18281
start_upstream "$upstream_port" taskset -c 1

declare -A port=([off]=18282 [unsampled]=18283 [sampled]=18284) pid=()
declare -A admin_port=([off]=18285 [unsampled]=18286 [sampled]=18287)
for mode in off unsampled sampled; do
    case $mode in
        off) tracing="" ;;
        unsampled) tracing="tracing: {endpoint: 'http://127.0.0.1:$upstream_port/v1/traces', sampling_ratio: 0}" ;;
        sampled) tracing="tracing: {endpoint: 'http://127.0.0.1:$upstream_port/v1/traces', sampling_ratio: 1}" ;;
    esac
    cat > "$work/$mode.yaml" <<CONF
server: {threads: 1, pid_file: $work/$mode.pid, upgrade_sock: $work/$mode.sock}
listeners: [{address: "127.0.0.1:${port[$mode]}"}]
admin: {address: "127.0.0.1:${admin_port[$mode]}"}
access_log: {format: off}
$tracing
upstreams: {svc: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes: [{prefix: /users, upstream: svc}]
CONF
    taskset -c 0 "$bin" -c "$work/$mode.yaml" >/dev/null 2>&1 &
    pid[$mode]=$!
    stop_on_exit+=("$!")
    for _ in $(seq 200); do curl -sf -o /dev/null "127.0.0.1:${port[$mode]}/users/1" && break; sleep 0.05; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| pass | tracing | requests/s | CPU µs/request | vs off |"
echo "|---|---|---|---|---|"
mkdir "$work/warm-up"
# Loads each gateway in turn for $1 seconds; wrk's reports go to
# $2/<mode>.wrk.
load() {
    for mode in "${modes[@]}"; do
        before[$mode]=$(cpu_ticks "${pid[$mode]}")
        taskset -c 1 wrk -t1 -c32 -d"$1"s "http://127.0.0.1:${port[$mode]}/users/1" >"$2/$mode.wrk"
        after[$mode]=$(cpu_ticks "${pid[$mode]}")
    done
}
declare -A ratios=()
for pass in $(seq "$passes"); do
    # Whatever drifts within a pass weighs on each mode alike: the order
    # turns round every other pass.
    if ((pass % 2)); then modes=(off unsampled sampled); else modes=(sampled unsampled off); fi
    declare -A before=() after=() requests=() rps=() cpu=()
    load 2 "$work/warm-up"
    load 5 "$work"
    for mode in "${modes[@]}"; do
        ticks=$((after[$mode] - before[$mode]))
        out=$(cat "$work/$mode.wrk")
        if grep -q Non-2xx <<<"$out"; then echo "$mode: non-2xx responses" >&2; exit 1; fi
        requests[$mode]=$(awk '/requests in/ {print $1}' <<<"$out")
        rps[$mode]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        cpu[$mode]=$(awk -v t="$ticks" -v n="${requests[$mode]}" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
    done
    for mode in off unsampled sampled; do
        ratio=$(awk -v a="${cpu[$mode]}" -v b="${cpu[off]}" 'BEGIN {printf "%.3f", a / b}')
        ratios[$mode]+="$ratio "
        echo "| $pass | $mode | ${rps[$mode]} | ${cpu[$mode]} | $ratio |"
    done
done
for mode in unsampled sampled; do
    echo "median $mode/off: $(tr ' ' '\n' <<<"${ratios[$mode]}" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')"
done
# The sampled gateway's spans: how many reached NGINX, how many were dropped.
curl -s "127.0.0.1:${admin_port[sampled]}/metrics" | grep '^gateway_trace_spans' || echo "no span counters" >&2
