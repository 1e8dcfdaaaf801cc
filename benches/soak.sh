#!/usr/bin/env bash
# Soak: does the gateway hold its memory and file descriptors over a long
# run of everything a real edge sees at once? A leak per request, per
# refused client, per failed upstream or per reload is too small to see in
# a test and fills a machine in a week; here it shows as RSS or an fd count
# that keeps growing after the first minute (by then the allocator, the
# pools and the caches have reached their working size).
#
# The gateway (2 worker threads, JSON access log to a file, metrics on)
# fronts the demo services (demo/, 127.0.0.1:3001-3004) and a port where
# nothing listens, for DURATION seconds (default 1800), with at once:
#   - oha at fixed rates: a valid token on /users/me and /products/1
#     (200 req/s each), a token with a bad signature (50 req/s, 401),
#     /broken on the dead port (20 req/s, 502), /limited over its route
#     limit (100 req/s against 10-20 allowed, mostly 429), a slow service
#     (/products/2?delay_ms=300, 10 req/s) and one slower than its route's
#     timeout (/timeout, 10 req/s, 504);
#   - benches/soak_clients.py: every second, aborted heads, dripped and
#     stalled heads, bodies slower than client.body_timeout (408) and
#     requests abandoned while the service works;
#   - a live reload every 30 s (`-s reload`), alternating two valid configs
#     (the /limited budget and an /orders route differ), each checked.
# Every 10 s the gateway's VmRSS and open fds go to soak.csv. At the end:
# RSS at 60 s, max and at the end, end/60 s (pass: at most 1.10); fds at
# 60 s and at the end (pass: at most 10 more; what is open if it grew);
# status counts of each load; reloads; the gateway's own log lines; and
# whether it still answers 200. On a busy 2-core machine the rates are
# what oha asks for, not what the gateway can do: this measures memory and
# fds, not speed. Everything on 127.0.0.1; every loop bounded in time.
#
#   cargo install oha --locked
#   DURATION=1800 SOAK_OUT=/tmp/soak bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || { echo "oha is missing: cargo install oha --locked" >&2; exit 1; }
duration="${DURATION:-1800}"
((duration >= 90)) || { echo "DURATION must be at least 90 s (RSS is compared to its value at 60 s)" >&2; exit 1; }
out="${SOAK_OUT:-$(mktemp -d)}"
mkdir -p "$out"
source benches/common.sh
cargo build --release --quiet -p demo-services --bin demo_services
# Copies: a rebuild of the target directory during the run must not swap
# the binary under the running gateway or the reload commands.
cp "$bin" "$work/api-gateway"
cp "$(dirname "$bin")/demo_services" "$work/demo_services"
gw="$work/api-gateway"
sha256sum "$work/api-gateway" "$work/demo_services" > "$out/binaries.sha256"

for port in 3001 3002 3003 3004; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port is taken: the demo services need 3001-3004" >&2
        exit 1
    fi
done
# Three ports free now: the gateway, its metrics, and one left dead.
read -r gateway_port admin_port dead_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
secret="soak-secret-0123456789abcdef0123456789"

JWT_SECRET=$secret "$work/demo_services" > "$out/demo.log" 2>&1 &
stop_on_exit+=("$!")
for port in 3001 3002 3003 3004; do
    for _ in $(seq 100); do curl -sf -o /dev/null "127.0.0.1:$port/health" && break; sleep 0.05; done
done

# $1: the /limited route's requests per second; $2: extra routes.
config() {
    cat <<CONF
server: {threads: 2, pid_file: $work/gw.pid, upgrade_sock: $work/gw.sock, grace_period: 1s, graceful_shutdown_timeout: 1s}
listeners: [{address: "127.0.0.1:$gateway_port"}]
admin: {address: "127.0.0.1:$admin_port"}
access_log: {format: json, output: $work/access.json}
client: {body_timeout: 2s, header_timeout: 5s}
jwt: {keys: [{secret: "$secret"}]}
upstreams:
  users: {instances: ["http://127.0.0.1:3001"]}
  products: {instances: ["http://127.0.0.1:3002"]}
  orders: {instances: ["http://127.0.0.1:3003"]}
  dead: {instances: ["http://127.0.0.1:$dead_port"], timeouts: {connect: 200ms}}
routes:
  - prefix: /users
    upstream: users
    auth: required
    auth_overrides:
      - {methods: [POST], path: /users/login, auth: off}
      - {methods: [POST], path: /users/register, auth: off}
  - {prefix: /products, upstream: products, auth: required}
  - {prefix: /broken, upstream: dead}
  - {prefix: /timeout, upstream: products, timeout: 300ms}
  - {prefix: /limited, upstream: orders, rate_limit: {requests: $1, per: 1s}}
$2
CONF
}
config 10 "" > "$work/a.yaml"
config 20 "  - {prefix: /orders, upstream: orders, auth: required}" > "$work/b.yaml"
for variant in a b; do "$gw" -t -c "$work/$variant.yaml" > /dev/null; done
cp "$work/a.yaml" "$work/gw.yaml"

"$gw" -c "$work/gw.yaml" > "$out/gateway.stdout" 2> "$out/gateway.stderr" &
gateway_pid=$!
stop_on_exit+=("$gateway_pid")
until curl -sf -o /dev/null "127.0.0.1:$gateway_port/healthz"; do
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$out/gateway.stderr" >&2; exit 1; }
    sleep 0.05
done
base="http://127.0.0.1:$gateway_port"
token=$(curl -sf -X POST "$base/users/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# The same token with another signature: a 401 (bad_signature) each time.
bad_token="${token%.*}.c29hay1pbnZhbGlkLXNpZ25hdHVyZQ"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$gateway_pid/status"; }
fd_count() { find "/proc/$gateway_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# What the open fds are: kinds (socket, pipe, anon_inode:[eventpoll], files)
# and the TCP sockets by state and peer, into $1.
fd_report() {
    {
        echo "## fds by kind"
        find "/proc/$gateway_pid/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' | sed -E 's/:\[[0-9]+\]$//' | sort | uniq -c | sort -rn
        echo "## TCP sockets: state, and whose (a client's, to an upstream port, listening)"
        ss -tanp 2>/dev/null | awk -v p="pid=$gateway_pid," -v gw="$gateway_port" 'index($0, p) {
            n = split($4, l, ":"); m = split($5, r, ":")
            print $1, (r[m] == "*") ? "listening :" l[n] : (l[n] == gw) ? "client" : "to :" r[m] }' | sort | uniq -c | sort -rn
    } > "$1"
}
client_conns() {
    curl -s --max-time 2 "127.0.0.1:$admin_port/metrics" | awk '/^gateway_client_connections[{ ]/ {s += $NF} END {print s + 0}'
}
echo "elapsed_s,rss_kb,fds,threads,client_connections" > "$out/soak.csv"
sample() { # $1: seconds since the load began
    echo "$1,$(rss_kb),$(fd_count),$(awk '/^Threads/ {print $2}' "/proc/$gateway_pid/status"),$(client_conns)" >> "$out/soak.csv"
}
echo "before load: RSS $(rss_kb) kB, $(fd_count) fds" > "$out/idle.txt"

# name, rate, connections, then oha's arguments (URL last).
load() {
    local name="$1" rate="$2" conns="$3"
    shift 3
    oha -z "${duration}s" -q "$rate" -c "$conns" --no-tui --output-format json "$@" > "$out/oha-$name.json" 2> "$out/oha-$name.err" &
    load_pids+=("$!")
    stop_on_exit+=("$!")
}
load_pids=()
auth=(-H "Authorization: Bearer $token")
load valid_users 200 8 "${auth[@]}" "$base/users/me"
load valid_products 200 8 "${auth[@]}" "$base/products/1"
load invalid_token 50 4 -H "Authorization: Bearer $bad_token" "$base/products/1"
load broken 20 4 "$base/broken/x"
load limited 100 4 "$base/limited"
load slow_upstream 10 8 "${auth[@]}" "$base/products/2?delay_ms=300"
load upstream_timeout 10 8 "${auth[@]}" "$base/timeout/3?delay_ms=1000"
python3 benches/soak_clients.py "$gateway_port" "$duration" "$token" > "$out/clients.json" 2> "$out/clients.err" &
clients_pid=$!
stop_on_exit+=("$clients_pid")

# Every 10 s a sample; every third tick a reload, alternating b and a. The
# gateway reloads the file it was started with, so the variant is moved
# over it first; /orders answers 200 in b and 404 in a, which shows the
# reload took effect, not only that it was reported.
reloads=0 reloads_ok=0 reloads_applied=0
: > "$out/reloads.log"
start=$SECONDS
for ((tick = 0; tick * 10 <= duration; tick++)); do
    while ((SECONDS < start + tick * 10)); do sleep 0.2; done
    kill -0 "$gateway_pid" 2>/dev/null || { echo "the gateway exited at ${tick}0 s" >&2; break; }
    sample $((tick * 10))
    ((tick == 6)) && fd_report "$out/fds-60s.txt"
    if ((tick > 0 && tick % 3 == 0 && tick * 10 < duration)); then
        reloads=$((reloads + 1))
        if ((reloads % 2)); then variant=b want=200; else variant=a want=404; fi
        cp "$work/$variant.yaml" "$work/gw.yaml.new"
        mv -f "$work/gw.yaml.new" "$work/gw.yaml"
        if message=$(timeout 20 "$gw" -s reload -c "$work/gw.yaml" 2>&1) && [[ $message == reloaded* ]]; then
            reloads_ok=$((reloads_ok + 1))
        fi
        echo "$((tick * 10)) s, $variant: $message" >> "$out/reloads.log"
        got=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/orders")
        [[ $got == "$want" ]] && reloads_applied=$((reloads_applied + 1))
    fi
done
fd_report "$out/fds-end.txt"

# The loads end on their own (-z); bounded all the same.
for pid in "${load_pids[@]}" "$clients_pid"; do
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" || true
done
# Quiet for 10 s: client connections gone, only the idle upstream pool left.
sleep 10
quiet_rss=$(rss_kb) quiet_fds=$(fd_count)
fd_report "$out/fds-quiet.txt"
final_users=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/users/me")
final_health=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$base/healthz")
curl -s --max-time 5 "127.0.0.1:$admin_port/metrics" > "$out/metrics.txt" || true
cp "$work/gw.yaml" "$work/a.yaml" "$work/b.yaml" "$out/"

python3 - "$out" "$work/access.json" "$reloads" "$reloads_ok" "$reloads_applied" \
    "$quiet_rss" "$quiet_fds" "$final_users" "$final_health" <<'PY' | tee "$out/summary.md"
import collections, csv, json, os, re, sys
out, access = sys.argv[1], sys.argv[2]
reloads, ok, applied, quiet_rss, quiet_fds = map(int, sys.argv[3:8])
final_users, final_health = sys.argv[8:10]
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/soak.csv"))]
at60 = next(r for r in rows if r["elapsed_s"] == 60)
end = rows[-1]
ratio = end["rss_kb"] / at60["rss_kb"]
fd_growth = end["fds"] - at60["fds"]
mb = lambda kb: f"{kb / 1024:.1f} MB"
print(f"## Soak, {end['elapsed_s']} s\n")
print(open(f"{out}/idle.txt").read().strip() + f"; after 10 s quiet at the end: RSS {quiet_rss} kB, {quiet_fds} fds\n")
print("| RSS at 60 s | max | end | end / 60 s | fds at 60 s | max | end | client connections at 60 s / end |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {mb(at60['rss_kb'])} | {mb(max(r['rss_kb'] for r in rows))} | {mb(end['rss_kb'])} | {ratio:.3f} "
      f"| {at60['fds']} | {max(r['fds'] for r in rows)} | {end['fds']} | {at60['client_connections']} / {end['client_connections']} |")
# The trend after the first minute, least squares: a leak shows as a slope
# that does not flatten, a warm-up as one that does.
later = [r for r in rows if r["elapsed_s"] >= 60]
n, sx, sy = len(later), sum(r["elapsed_s"] for r in later), sum(r["rss_kb"] for r in later)
sxx = sum(r["elapsed_s"] ** 2 for r in later)
sxy = sum(r["elapsed_s"] * r["rss_kb"] for r in later)
slope = (n * sxy - sx * sy) / (n * sxx - sx * sx) * 60 if n > 1 else 0.0
marks = [r for r in rows if r["elapsed_s"] == 60 or r["elapsed_s"] % 300 == 0]
print("\nRSS at " + ", ".join(f"{r['elapsed_s'] // 60} min {mb(r['rss_kb'])}" for r in marks)
      + f"; trend after 60 s {slope:+.1f} kB/min")
rss_pass, fd_pass = ratio <= 1.10, fd_growth <= 10
print(f"\nRSS: {'PASS' if rss_pass else 'FAIL'} (end / 60 s {ratio:.3f}, target <= 1.10); "
      f"fds: {'PASS' if fd_pass else 'FAIL'} ({fd_growth:+d} from 60 s to the end, target <= +10)")
if not fd_pass:
    print("\nfds at 60 s and at the end:\n")
    for name in ("fds-60s.txt", "fds-end.txt"):
        print(f"{name}:\n```\n{open(f'{out}/{name}').read()}```")

print("\n| load | requests | statuses | errors |")
print("|---|---|---|---|")
for name in ("valid_users", "valid_products", "invalid_token", "broken", "limited", "slow_upstream", "upstream_timeout"):
    try:
        r = json.load(open(f"{out}/oha-{name}.json"))
    except (OSError, ValueError) as e:
        print(f"| {name} | no report ({e}) | | |")
        continue
    codes = r.get("statusCodeDistribution", {})
    errors = r.get("errorDistribution", {})
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
    errs = ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"
    print(f"| {name} | {sum(codes.values()) + sum(errors.values())} | {statuses} | {errs} |")

try:
    clients = json.load(open(f"{out}/clients.json"))
except (OSError, ValueError) as e:
    clients = {}
    print(f"\nsoak_clients.py: no report ({e})")
print("\n| misbehaving client | connections | outcomes |")
print("|---|---|---|")
for kind, c in clients.items():
    total = c.pop("total")
    print(f"| {kind} | {total} | {', '.join(f'{k}: {v}' for k, v in sorted(c.items()))} |")

# The access log's view: one line per request, by route and status.
by_route = collections.defaultdict(collections.Counter)
lines = 0
with open(access) as f:
    for line in f:
        lines += 1
        try:
            entry = json.loads(line)
        except ValueError:
            by_route["(not JSON)"]["?"] += 1
            continue
        by_route[entry.get("route") or "-"][str(entry.get("status"))] += 1
print(f"\naccess log: {lines} lines, {os.path.getsize(access) / 2**20:.0f} MiB")
for route, c in sorted(by_route.items()):
    print(f"- {route}: {', '.join(f'{k}: {v}' for k, v in sorted(c.items()))}")

stderr = open(f"{out}/gateway.stderr", errors="replace").read().splitlines()
summaries = [l for l in stderr if "more like this" in l]
print(f"\nreloads: {ok}/{reloads} reported success, {applied}/{reloads} seen in effect (/orders)")
print(f"gateway stderr: {len(stderr)} lines, {len(summaries)} of them flood summaries ('more like this')")
# The distinct messages, timestamps and numbers stripped, most frequent first.
kinds = collections.Counter(re.sub(r"\d+", "N", re.sub(r"^\S+\s+", "", l))[:140] for l in stderr)
for text, n in kinds.most_common(8):
    print(f"  {n:6d}  {text}")
print(f"\nat the end: /users/me {final_users}, /healthz {final_health}")
print(f"samples: {out}/soak.csv; everything: {out}")
sys.exit(0 if rss_pass and fd_pass and final_users == "200" else 1)
PY
