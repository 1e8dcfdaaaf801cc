#!/usr/bin/env bash
# Whether the gateway scales with its threads: two worker threads on two
# cores must give at least 1.8x the throughput of one thread on one core,
# at saturation. Three cases, interleaved in each pass:
#   1t        `threads: 1, work_stealing: false`, taskset -c 0,
#             in a cgroup with a CPU quota of 0.5 (50000/100000 µs)
#   2t-ws     `threads: 2` (Pingora's default work stealing), taskset -c 0,1,
#             in a cgroup with a quota of 1.0 (100000/100000 µs)
#   2t-nows   `threads: 2, work_stealing: false`, the same cpus and quota
# The gateway runs compare.sh's "everything on" config (gw-full: a JSON
# access log to a file, CORS for '*', a local rate limit that never
# triggers, JWT keys; requests go to /users/me with an Origin header), and
# wrk -t2 -c128 drives it for $DURATION s (default 10) after a 2 s warm-up.
# Only 2xx count: a non-2xx response (wrk's count, and the access log for
# 3xx; its 499s are the requests wrk abandons as it stops) or a socket
# error fails the run.
#
# Why CPU quotas: this machine has 2 cores, and wrk and the NGINX upstream
# need CPU of their own. Giving the gateway whole cores would leave the
# load generator competing with it, and whichever saturated first would be
# what the ratio measured. A quota of half a core per gateway thread in both
# cases (0.5 CPU for one thread, 1.0 for two) makes the gateway what
# saturates, while wrk and the upstream run outside the cgroup on both cores
# with the remaining 1.5 / 1.0 CPU, far more than they need at the gateway's
# throughput. The cgroup's weight is the default per gateway thread
# (cpu.shares 1024 x threads, v2 cpu.weight 100 x threads): CFS splits a
# group's weight over the CPUs its threads run on, so each thread weighs
# what an ordinary thread does, against wrk and NGINX, in both cases. The
# gateway joins its cgroup before it starts (a shell writes itself to
# cgroup.procs, then execs taskset and the gateway), so every thread it
# creates inherits it.
#
# Saturation proof per run: the cgroup's cpu.stat before and after the
# measured window (the share of CFS periods in which the gateway was
# throttled), and busy = the gateway's CPU (utime+stime from /proc) / (quota
# x wall time). A run throttled in fewer than half its periods is flagged
# NOT SATURATED. wrk's and the upstream's CPU are shown too (% of one core,
# and their sum as a share of the CPU the quota leaves), to show they are
# not the limit, and everything else's (/proc/stat's busy time less those
# three; /proc/stat is sampled at each tick, so ±5% of a core is noise),
# to show the machine was quiet: another busy process (a cargo
# build) takes CPU from wrk and NGINX, and the 2-thread cases then stop
# being throttled. Flagged in the notes after each table.
#
# Prints a Markdown table per pass (req/s, gateway CPU µs per request, busy,
# throttled, wrk, upstream and other CPU), then the medians, and the throughput
# ratio of each 2-thread case to 1t per pass with its median: PASS or MISS
# against 1.8x.
#
#   needs: root, the cgroup v1 `cpu` controller (/sys/fs/cgroup/cpu) or
#   cgroup v2 with `cpu` available at the root, and
#   apt-get install -y nginx-light wrk
#   bash benches/scaling.sh [passes]      # default 3; DURATION=10 (s);
#                                         # ~37 s a pass at the default
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
passes="${1:-3}"
duration="${DURATION:-10}"
warmup=2
threshold=1.8

die() { echo "scaling.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (it creates cgroups with CPU quotas)"
for tool in wrk nginx taskset python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk nginx-light util-linux)"
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (the 2-thread cases are pinned to CPUs 0 and 1)"

# The cgroup hierarchy with the cpu controller: v1 at /sys/fs/cgroup/cpu,
# else a cgroup2 mount with `cpu` in its controllers (enabled for children
# of its root if it is not yet).
cg_version="" cg_root=""
if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -w /sys/fs/cgroup/cpu ]; then
    cg_version=1 cg_root=/sys/fs/cgroup/cpu
else
    v2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
    if [ -n "$v2" ] && grep -qw cpu "$v2/cgroup.controllers" 2>/dev/null && [ -w "$v2" ]; then
        if ! grep -qw cpu "$v2/cgroup.subtree_control" 2>/dev/null; then
            echo +cpu > "$v2/cgroup.subtree_control" 2>/dev/null ||
                die "cgroup v2 at $v2 has the cpu controller but it cannot be enabled for child cgroups (cgroup.subtree_control)"
        fi
        cg_version=2 cg_root=$v2
    fi
fi
[ -n "$cg_version" ] ||
    die "no writable cgroup cpu controller: neither cgroup v1 /sys/fs/cgroup/cpu (cpu.cfs_quota_us) nor a cgroup v2 mount with cpu in cgroup.controllers"

source benches/common.sh
upstream_port=18681 gateway_port=18682
secret="scaling-secret-0123456789abcdefghijk"
hz=$(getconf CLK_TCK)
start_upstream "$upstream_port"
upstream_worker=$(pgrep -P "$(cat "$work/nginx.pid")")
[ -n "$upstream_worker" ] || die "no NGINX worker"

# Per case: the start of the config's server: line, the CPUs, the threads
# and the quota (µs per 100 ms period).
declare -A server cpus threads quota
server[1t]="{threads: 1, work_stealing: false"      cpus[1t]=0       threads[1t]=1      quota[1t]=50000
server[2t-ws]="{threads: 2"                         cpus[2t-ws]=0,1   threads[2t-ws]=2   quota[2t-ws]=100000
server[2t-nows]="{threads: 2, work_stealing: false" cpus[2t-nows]=0,1 threads[2t-nows]=2 quota[2t-nows]=100000
cases=(1t 2t-ws 2t-nows)
period=100000

# One cgroup per case, removed on exit once its processes are gone.
cgroups=()
for c in "${cases[@]}"; do
    dir="$cg_root/api-gateway-scaling-$$-$c"
    mkdir "$dir" || die "cannot create the cgroup $dir"
    cgroups+=("$dir")
    if [ "$cg_version" = 1 ]; then
        echo "$period" > "$dir/cpu.cfs_period_us"
        echo "${quota[$c]}" > "$dir/cpu.cfs_quota_us"
        [ -f "$dir/cpu.cfs_burst_us" ] && echo 0 > "$dir/cpu.cfs_burst_us"
        echo $((1024 * threads[$c])) > "$dir/cpu.shares"
    else
        echo "${quota[$c]} $period" > "$dir/cpu.max"
        [ -f "$dir/cpu.max.burst" ] && echo 0 > "$dir/cpu.max.burst"
        echo $((100 * threads[$c])) > "$dir/cpu.weight"
    fi
done

# Stops the gateway: SIGINT writes out its access log and exits; if it has
# not gone in 10 s (README, Operations: Pingora's fast shutdown can spin),
# SIGKILL. Then reaps it, so its cgroup is empty.
gw_pid=""
stop_gateway() {
    [ -n "$gw_pid" ] || return 0
    kill -INT "$gw_pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$gw_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$gw_pid" 2>/dev/null; then
        echo "the gateway ($gw_pid) did not exit on SIGINT in 10 s; SIGKILL" >&2
        kill -KILL "$gw_pid" 2>/dev/null || true
    fi
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
}
on_exit() {
    stop_gateway
    local dir
    for dir in "${cgroups[@]}"; do
        for _ in $(seq 50); do
            rmdir "$dir" 2>/dev/null && break
            sleep 0.1
        done
        [ -d "$dir" ] && echo "could not remove the cgroup $dir" >&2
    done
    cleanup   # common.sh: NGINX by its PID, then $work
}
trap on_exit EXIT

# Sets $1 to utime+stime (fields 14, 15) of process $2, or with $3 =
# children to cutime+cstime (16, 17). Builtins only: no child process of
# this shell is made (and counted) while measuring.
ticks() {
    local stat
    read -r stat < "/proc/$2/stat"
    stat=${stat##*) }   # fields from 3 (state) on
    local -a f=($stat)
    if [ "${3:-}" = children ]; then
        printf -v "$1" %d $((f[13] + f[14]))
    else
        printf -v "$1" %d $((f[11] + f[12]))
    fi
}
# Sets $1 to "nr_periods nr_throttled throttled_us" of cgroup $2.
cg_stat() {
    local k v periods=0 throttled=0 us=0
    while read -r k v; do
        case "$k" in
            nr_periods) periods=$v ;;
            nr_throttled) throttled=$v ;;
            throttled_time) us=$((v / 1000)) ;;   # v1: ns
            throttled_usec) us=$v ;;              # v2
        esac
    done < "$2/cpu.stat"
    printf -v "$1" '%s' "$periods $throttled $us"
}
# Sets $1 to the machine's busy CPU time (all CPUs, ticks): /proc/stat's
# total less idle, iowait and steal.
machine_busy() {
    local label user nice system idle iowait irq softirq steal rest
    read -r label user nice system idle iowait irq softirq steal rest < /proc/stat
    printf -v "$1" %d $((user + nice + system + irq + softirq))
}
# Microseconds since the epoch.
now_us() { local t=$EPOCHREALTIME; printf -v "$1" %d "${t/[.,]/}"; }

wait_for() {
    for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done
    die "not ready: $1 (the gateway's output: $(tail -5 "$work/gw.out"))"
}

url="http://127.0.0.1:$gateway_port/users/me"
wrk_args=(-t2 -c128 -H "Origin: http://shop.test")
results="$work/results"

# Runs one case; appends "pass case rps requests wall_us gw_ticks wrk_ticks
# upstream_ticks periods throttled throttled_us quota_us machine_ticks" to
# $results.
run_case() {
    local pass=$1 c=$2 cg="$cg_root/api-gateway-scaling-$$-$2"
    local conf="$work/gw-$c.yaml" log="$work/access-$c.json"
    everything_on_config "${server[$c]}, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock}" \
        "$log" > "$conf"
    # In the cgroup before the gateway exists: the shell moves itself, then
    # becomes taskset, then the gateway.
    sh -c 'echo $$ > "$1/cgroup.procs" && exec taskset -c "$2" "$3" -c "$4"' \
        sh "$cg" "${cpus[$c]}" "$bin" "$conf" > "$work/gw.out" 2>&1 &
    gw_pid=$!
    wait_for "$url"
    # Every thread of the gateway is in the cgroup.
    local tasks_file=tasks tid
    [ "$cg_version" = 2 ] && tasks_file=cgroup.threads
    for tid in /proc/"$gw_pid"/task/*; do
        grep -qx "${tid##*/}" "$cg/$tasks_file" || die "$c: thread ${tid##*/} of the gateway is not in $cg"
    done
    local headers
    headers=$(curl -s -D - -o /dev/null -H "Origin: http://shop.test" "$url")
    grep -q '^HTTP/1.1 200' <<<"$headers" || die "$c: $url did not answer 200: $headers"
    grep -qi '^access-control-allow-origin' <<<"$headers" || die "$c: no CORS header: $headers"

    wrk "${wrk_args[@]}" -d"${warmup}s" "$url" > /dev/null
    local t0 t1 gw0 gw1 wrk0 wrk1 up0 up1 cg0 cg1 all0 all1
    ticks wrk0 $$ children
    cg_stat cg0 "$cg"; ticks gw0 "$gw_pid"; ticks up0 "$upstream_worker"; machine_busy all0; now_us t0
    wrk "${wrk_args[@]}" -d"${duration}s" "$url" > "$work/wrk.out"
    now_us t1; machine_busy all1; ticks gw1 "$gw_pid"; ticks up1 "$upstream_worker"; cg_stat cg1 "$cg"
    ticks wrk1 $$ children
    stop_gateway

    local out requests rps non2xx errors bad_log
    out=$(cat "$work/wrk.out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    # wrk counts 3xx as success; the access log (written out on SIGINT,
    # warm-up included) has every status. 499s are the requests in flight
    # when each wrk run ended (it closes its connections): no response.
    [ -s "$log" ] || die "pass $pass, $c: the gateway wrote no access log ($log)"
    bad_log=$(grep -Evc '"status":(2[0-9][0-9]|499),' "$log" || true)
    rm -f "$log"
    if [ -n "$non2xx" ] || [ "${errors:-0}" != 0 ] || [ "$bad_log" != 0 ] || [ -z "$requests" ]; then
        echo "$out" >&2
        die "pass $pass, $c: ${non2xx:-0} non-2xx/3xx (wrk), ${errors:-0} socket errors, $bad_log non-2xx lines in the access log"
    fi
    local -a a=($cg0) b=($cg1)
    echo "$pass $c $rps $requests $((t1 - t0)) $((gw1 - gw0)) $((wrk1 - wrk0)) $((up1 - up0)) \
$((b[0] - a[0])) $((b[1] - a[1])) $((b[2] - a[2])) ${quota[$c]} $((all1 - all0))" >> "$results"
}

cat > "$work/report.py" <<'PY'
import statistics, sys
mode, path, hz, period, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
cols = "rps requests wall gw wrk up periods throttled throttled_us quota machine".split()
runs = {}
for line in open(path):
    p, c, *v = line.split()
    r = dict(zip(cols, map(float, v)))
    r["wall"] /= 1e6   # µs
    runs[(int(p), c)] = r
cases = list(dict.fromkeys(c for _, c in runs))
passes = sorted({p for p, _ in runs})

def derived(r):
    cores = r["quota"] / period
    cpu = lambda t: t / hz / r["wall"] * 100   # % of one core
    return {
        "rps": r["rps"],
        "us": r["gw"] / hz * 1e6 / r["requests"],
        "busy": r["gw"] / hz / (cores * r["wall"]) * 100,
        "thr": r["throttled"] / r["periods"] * 100 if r["periods"] else 0.0,
        "wrk": cpu(r["wrk"]),
        "up": cpu(r["up"]),
        "rest": (cpu(r["wrk"]) + cpu(r["up"])) / (2 - cores),   # % of the CPU the quota leaves
        # everything else on the machine (other processes, kernel threads)
        "other": cpu(r["machine"] - r["gw"] - r["wrk"] - r["up"]),
    }

head = ("| case | req/s | gateway CPU µs/req | busy % | throttled % | wrk CPU % | upstream CPU % | wrk+upstream % of the rest | other CPU % |\n"
        "|---|---|---|---|---|---|---|---|---|")
def row(c, d, flag=""):
    return (f'| {c} | {d["rps"]:.0f} | {d["us"]:.1f} | {d["busy"]:.1f} | {d["thr"]:.1f}{flag} | '
            f'{d["wrk"]:.1f} | {d["up"]:.1f} | {d["rest"]:.1f} | {d["other"]:.1f} |')
def notes(label, d):
    out = []
    if d["thr"] < 50:
        out.append(f"{label}: NOT SATURATED: the gateway was throttled in only {d['thr']:.0f}% of the periods")
    if d["rest"] > 80:
        out.append(f"{label}: wrk and the upstream used {d['rest']:.0f}% of the CPU the quota leaves them: they may be the limit")
    if d["other"] > 10:
        out.append(f"{label}: other processes used {d['other']:.0f}% of a core during the run: the machine was not quiet")
    return out

if mode == "pass":
    p = int(sys.argv[6])
    print(f"Pass {p} ({int(runs[(p, cases[0])]['wall'] + 0.5)} s per case; CPU % is of one core):")
    print()
    print(head)
    warn = []
    for c in cases:
        d = derived(runs[(p, c)])
        flag = " NOT SATURATED" if d["thr"] < 50 else ""
        print(row(c, d, flag))
        warn += notes(f"pass {p}, {c}", d)
    print()
    for w in warn:
        print(w)
        print()
    sys.stdout.flush()
    sys.exit(0)

med = statistics.median
print(f"Medians over {len(passes)} passes:")
print()
print(head)
for c in cases:
    ds = [derived(runs[(p, c)]) for p in passes]
    print(row(c, {k: med([d[k] for d in ds]) for k in ds[0]}))
print()
two = [c for c in cases if c != "1t"]
ratio = {(p, c): runs[(p, c)]["rps"] / runs[(p, "1t")]["rps"] for p in passes for c in two}
print("Throughput, 2 threads / 1 thread:")
print()
print("| pass | " + " | ".join(f"{c} / 1t" for c in two) + " |")
print("|---|" + "---|" * len(two))
for p in passes:
    print(f"| {p} | " + " | ".join(f"{ratio[(p, c)]:.2f}" for c in two) + " |")
print("| median | " + " | ".join(f"{med([ratio[(p, c)] for p in passes]):.2f}" for c in two) + " |")
print()
unsaturated = [f"pass {p} {c}" for p in passes for c in cases if derived(runs[(p, c)])["thr"] < 50]
for c in two:
    m = med([ratio[(p, c)] for p in passes])
    print(f"{c}: median {m:.2f}x the 1-thread throughput: {'PASS' if m >= threshold else 'MISS'} (target {threshold}x)")
if unsaturated:
    print()
    print("Not saturated (throttled in under half the periods), so their ratios understate or overstate scaling: " + ", ".join(unsaturated))
PY

echo "cgroup v$cg_version at $cg_root; wrk -t2 -c128, ${warmup} s warm-up, ${duration} s measured; $passes passes"
echo
for pass in $(seq "$passes"); do
    for c in "${cases[@]}"; do
        run_case "$pass" "$c"
    done
    python3 "$work/report.py" pass "$results" "$hz" "$period" "$threshold" "$pass"
done
python3 "$work/report.py" summary "$results" "$hz" "$period" "$threshold"
