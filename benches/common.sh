# Sourced by the load scripts in benches/: the gateway build and the NGINX
# upstream they all measure against. Sets `bin` and `work` (a temporary
# directory, removed on exit with everything started in it).

cargo build --release --quiet --bin api-gateway
bin="${CARGO_TARGET_DIR:-target}/release/api-gateway"
work="$(mktemp -d)"

# PIDs to stop on exit, besides NGINX.
stop_on_exit=()
cleanup() {
    kill "$(cat "$work/nginx.pid" 2>/dev/null)" "${stop_on_exit[@]}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# An upstream that answers a small JSON body fast, on 127.0.0.1:$1; extra
# arguments prefix the command (e.g. taskset -c 1).
start_upstream() {
    local port="$1"
    shift
    cat > "$work/nginx.conf" <<CONF
worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$port; keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"id":1,"name":"Ada"}'; } } }
CONF
    "$@" nginx -c "$work/nginx.conf"
}

# The gateway with everything on but tracing, as compare.sh (gw-full) and
# scaling.sh run it: $1 is the `server:` mapping, $2 the access log file;
# the ports and the JWT secret come from the caller's $gateway_port,
# $upstream_port and $secret.
everything_on_config() {
    cat <<CONF
server: $1
listeners: [{address: "127.0.0.1:$gateway_port"}]
access_log: {format: json, output: $2}
cors: {allow_origins: ['*']}
rate_limit: {requests: 1000000, per: 1s}
jwt: {keys: [{secret: '$secret'}], claim_headers: {sub: X-User-Id}}
upstreams: {users: {instances: ["http://127.0.0.1:$upstream_port"]}}
routes:
  - {prefix: /users, upstream: users}
  - {prefix: /products, upstream: users, auth: required}
CONF
}
