#!/usr/bin/env bash
# The container checks, in a real Docker engine: the image built from the
# project's Dockerfile (non-root, only what it needs, its size), the shipped
# compose file up and healthy with README's walk-through passing against it,
# two replicas sharing one Redis budget and surviving Redis going away,
# `docker compose stop` draining a request in flight, and README's two
# commands on a fresh Debian container. Everything it starts is torn down at
# the end, the engine included, whether the checks pass or not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source .ci/engine.sh
# docker-compose v1 runs `docker` for BuildKit builds: Debian's client.
export PATH="/usr/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/api-gateway-target}"

work=$(mktemp -d)
chmod 755 "$work"
project=apigw-ci
compose_files=(-f docker-compose.yml)
compose() { docker-compose -p "$project" "${compose_files[@]}" --profile replicas "$@"; }

cleanup() {
    local status=$?
    if ((status != 0)) && [[ -n "${engine_pid:-}" ]]; then
        echo "--- compose logs (last 40 lines)" >&2
        compose logs --no-color --tail 40 >&2 2>/dev/null || true
    fi
    [[ -z "${engine_pid:-}" ]] || {
        compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
        "$DOCKER" rm -f apigw-fresh-demo apigw-fresh-test >/dev/null 2>&1 || true
    }
    engine_stop
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
# timeout(1) ends the checks with SIGTERM: tear down all the same.
trap 'exit 143' TERM INT

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok - %s\n' "$*"; }
fail() {
    printf 'FAIL - %s\n' "$*" >&2
    exit 1
}

# `http NAME URL [curl args]`: the status in $status, the body in $body.
http() {
    local name=$1 url=$2
    shift 2
    status=$(curl -s -o "$work/$name.body" -w '%{http_code}' "$@" "$url" || true)
    body=$(cat "$work/$name.body" 2>/dev/null || true)
}

expect() {
    local what=$1 want=$2 pattern=${3:-}
    [[ $status == "$want" ]] || fail "$what: status $status, want $want: $body"
    [[ -z $pattern || $body == *"$pattern"* ]] || fail "$what: body lacks $pattern: $body"
    ok "$what: $status"
}

# Polls until `docker inspect` reports the service's container healthy.
wait_healthy() {
    local service=$1 id state i
    id=$(compose ps -q "$service")
    for i in $(seq 1 120); do
        state=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || true)
        [[ $state == healthy ]] && { ok "$service is healthy"; return 0; }
        sleep 0.5
    done
    fail "$service is not healthy after 60 s (state: $state)"
}

# `burst PORTS COUNT`: COUNT requests to /products on each port at once;
# each response's status is a line of $work/burst.
burst() {
    local ports=$1 count=$2
    curl -s --no-progress-meter --parallel --parallel-max 60 -H "Authorization: Bearer $token" \
        -o "$work/burst-out/#1-#2" -w '%{http_code} %{url_effective} retry-after=%header{retry-after}\n' \
        "http://127.0.0.1:{$ports}/products?n=[1-$count]" >"$work/burst"
}
count_status() { grep -c "^$1" "$work/burst" || true; }
mkdir -p "$work/burst-out"

step "engine and base images"
engine_install
engine_start
make_debian_base
make_rust_builder
make_redis
ok "engine $("$DOCKER" version -f '{{.Server.Version}}'); base images made locally"

step "the image"
start=$SECONDS
"$DOCKER" build -q -t api-gateway . >/dev/null
"$DOCKER" build -q --target demo -t api-gateway-demo . >/dev/null
ok "built in $((SECONDS - start)) s"
size=$("$DOCKER" image inspect -f '{{.Size}}' api-gateway)
base=$("$DOCKER" image inspect -f '{{.Size}}' debian:bookworm-slim)
echo "image size: $((size / 1000000)) MB ($((base / 1000000)) MB of them the Debian slim base)"
((size < 100000000)) || fail "the image is $((size / 1000000)) MB, over 100 MB"
ok "image under 100 MB"
[[ $("$DOCKER" image inspect -f '{{.Config.User}}' api-gateway) == gateway ]] || fail "USER is not gateway"
uid=$("$DOCKER" run --rm --entrypoint id api-gateway -u)
[[ $uid == 10001 ]] || fail "runs as uid $uid"
ok "runs as uid 10001 (gateway)"
contents=$("$DOCKER" run --rm --entrypoint sh api-gateway -c \
    'ls /usr/local/bin; ls -A /app; command -v curl wget || true; test -s /etc/ssl/certs/ca-certificates.crt && echo ca-certificates')
[[ $contents == $'api-gateway\nconf\nca-certificates' ]] || fail "unexpected contents: $contents"
ok "holds the binary, conf/ and CA certificates; no curl (the binary is its own health check)"

step "docker compose up: README's walk-through"
compose up -d --no-build api-gateway 2>/dev/null
wait_healthy api-gateway
base_url=http://127.0.0.1:3000
http root "$base_url/"
expect "GET /" 200 "API Gateway is running"
http me "$base_url/users/me"
expect "GET /users/me without a token" 401 '"error"'
http login "$base_url/users/login" -X POST
expect "POST /users/login" 200 '"token"'
token=$(sed 's/.*"token":"\([^"]*\)".*/\1/' <<<"$body")
http me "$base_url/users/me" -H "Authorization: Bearer $token"
expect "GET /users/me with the token" 200 "ada@example.com"
http products "$base_url/products" -H "Authorization: Bearer $token"
expect "GET /products" 200 '"products"'
http preflight "$base_url/products" -X OPTIONS -D "$work/preflight.headers" \
    -H "Origin: https://shop.example" -H "Access-Control-Request-Method: POST"
expect "CORS preflight" 204
grep -qi '^access-control-allow-origin: \*' "$work/preflight.headers" || fail "preflight lacks Access-Control-Allow-Origin"
ok "preflight allows the origin"
# The shipped limit: 100 requests/s per address, 200 at once.
burst 3000 300
limited=$(count_status 429)
((limited > 0)) || fail "300 requests at once: no 429"
grep -q '^429 .* retry-after=[0-9]' "$work/burst" || fail "a 429 without Retry-After"
ok "300 requests at once: $(count_status 200) x 200, $limited x 429 with Retry-After"

step "docker compose stop drains a request in flight"
# Once the budget has refilled, a slow request, held by the service.
for i in $(seq 1 50); do
    http products "$base_url/products" -H "Authorization: Bearer $token"
    [[ $status == 429 ]] || break
    sleep 0.1
done
curl -s -o "$work/drain.body" -w '%{http_code}' -H "Authorization: Bearer $token" \
    "$base_url/products?delay_ms=3000" >"$work/drain.status" &
drain_client=$!
for i in $(seq 1 100); do
    compose logs --no-color demo-services | grep -q 'holding GET /?delay_ms=3000' && break
    sleep 0.1
done
compose logs --no-color demo-services | grep -q 'holding GET /?delay_ms=3000' ||
    fail "the slow request did not reach the service"
compose stop api-gateway >/dev/null 2>&1
wait "$drain_client" || true
status=$(cat "$work/drain.status")
body=$(cat "$work/drain.body")
expect "the request in flight at SIGTERM" 200 '"products"'
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$(compose ps -q api-gateway)")
[[ $exit_code == 0 ]] || fail "the gateway exited with $exit_code after SIGTERM"
ok "the gateway exited 0 after draining"
compose down --timeout 5 >/dev/null 2>&1

step "two replicas share one Redis budget"
# The shipped config with a budget that does not refill during a burst:
# 10 requests a minute, 10 at once.
sed -e 's/^  requests: 100$/  requests: 10/' -e 's/^  per: 1s$/  per: 1m/' -e 's/^  burst: 200$/  burst: 10/' \
    conf/gateway.yaml >"$work/gateway.yaml"
[[ $(grep -cE '^  (requests: 10|per: 1m|burst: 10)$' "$work/gateway.yaml") == 3 ]] ||
    fail "conf/gateway.yaml's rate_limit changed: update this check"
chmod 644 "$work/gateway.yaml"
cat >"$work/compose.tight.yml" <<EOF
services:
  api-gateway:
    volumes: ["$work/gateway.yaml:/app/conf/gateway.yaml:ro"]
  api-gateway-2:
    volumes: ["$work/gateway.yaml:/app/conf/gateway.yaml:ro"]
EOF
compose_files+=(-f "$work/compose.tight.yml")
compose up -d --no-build 2>/dev/null
wait_healthy api-gateway
wait_healthy api-gateway-2
burst 3000,3001 15
admitted=$(count_status 200)
((admitted == 10 || admitted == 11)) || fail "30 requests over both replicas: $admitted admitted, want 10 (+1)"
# Each replica refuses some: each one sees what the other admitted.
for port in 3000 3001; do
    grep -q "^429 http://127.0.0.1:$port/" "$work/burst" || fail ":$port refused none of its 15"
done
ok "30 requests over both replicas: $admitted admitted, $(count_status 429) x 429"

compose stop redis >/dev/null 2>&1
for port in 3000 3001; do
    for i in $(seq 1 5); do
        http failopen "http://127.0.0.1:$port/products" -H "Authorization: Bearer $token"
        [[ $status == 200 ]] || fail "Redis stopped: :$port answered $status ($body), want 200 (fail_open)"
    done
done
ok "Redis stopped: both replicas serve (fail_open)"
compose start redis >/dev/null 2>&1
wait_healthy redis
seen=0
for i in $(seq 1 60); do
    port=$((3000 + i % 2))
    http back "http://127.0.0.1:$port/products" -H "Authorization: Bearer $token"
    [[ $status == 429 ]] && { seen=$i; break; }
    [[ $status == 200 ]] || fail "Redis back: :$port answered $status ($body)"
done
((seen > 0)) || fail "Redis back: no 429 within 60 requests"
ok "Redis back: limiting again (429 at request $seen)"
compose down --timeout 5 >/dev/null 2>&1

step "README's two commands on a fresh Debian container"
# Only the Rust toolchain is added, at the paths it has here, and cargo's
# target directory is shared, so that nothing compiles again: what is
# checked is that the scripts install what they need.
fresh=(--network bridge -w "$repo" -v "$repo:$repo"
    -v "$HOME/.rustup:$HOME/.rustup:ro" -v "$HOME/.cargo:$HOME/.cargo"
    -v "$CARGO_TARGET_DIR:$CARGO_TARGET_DIR" -e "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
    -e "PATH=$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    -v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
"$DOCKER" run -d --name apigw-fresh-demo -p 127.0.0.1:13000:3000 "${fresh[@]}" \
    debian:bookworm-slim ./scripts/demo.sh >/dev/null
for i in $(seq 1 600); do
    http root http://127.0.0.1:13000/
    [[ $status == 200 ]] && break
    "$DOCKER" inspect -f '{{.State.Running}}' apigw-fresh-demo | grep -q true ||
        { "$DOCKER" logs --tail 30 apigw-fresh-demo >&2; fail "scripts/demo.sh exited"; }
    sleep 0.5
done
expect "./scripts/demo.sh, GET /" 200 "API Gateway is running"
http me http://127.0.0.1:13000/users/me
expect "./scripts/demo.sh, GET /users/me without a token" 401 '"error"'
http login http://127.0.0.1:13000/users/login -X POST
expect "./scripts/demo.sh, POST /users/login" 200 '"token"'
demo_token=$(sed 's/.*"token":"\([^"]*\)".*/\1/' <<<"$body")
http me http://127.0.0.1:13000/users/me -H "Authorization: Bearer $demo_token"
expect "./scripts/demo.sh, GET /users/me with the token" 200 "ada@example.com"
"$DOCKER" rm -f apigw-fresh-demo >/dev/null

start=$SECONDS
"$DOCKER" run --name apigw-fresh-test --shm-size 1g "${fresh[@]}" \
    debian:bookworm-slim ./scripts/test.sh >"$work/fresh-test.log" 2>&1 ||
    { tail -60 "$work/fresh-test.log" >&2; fail "./scripts/test.sh failed in a fresh container"; }
grep -E '^test result' "$work/fresh-test.log" | awk '{p += $4; f += $6} END {print p " passed, " f " failed"}'
ok "./scripts/test.sh passed in a fresh container ($((SECONDS - start)) s)"
"$DOCKER" rm -f apigw-fresh-test >/dev/null
