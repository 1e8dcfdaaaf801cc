# Peer proxies for benches/compare.sh, which sources this file. Each does
# the job of NGINX plain (nginx_conf plain) and, for pingap-full, of the
# gateway's gw-full: listen on 127.0.0.1:$gateway_port, route /users/... to
# the upstream on 127.0.0.1:$upstream_port with the /users prefix stripped
# over kept-alive connections, add Access-Control-Allow-Origin and write an
# access log line per request to a file under $work. One worker thread,
# pinned with `taskset -c 0` by peer_start.
#
# Needs: $work, $upstream_port, $gateway_port, $secret (set by compare.sh).
#   pingap_conf route|full; haproxy_conf; caddy_conf   write configs only
#   peer_start NAME    NAME: pingap-route pingap-full haproxy caddy; starts
#                      it, waits for /users/me to answer 200 (10 s at most)
#                      and prints "CPU_PID STOP_PID"
#   peer_stop NAME PID stops it and waits until the process is gone
# Each peer is one process doing the proxying in all its threads, so both
# PIDs are the same; the running PID is also kept in $work/peer-running.pid
# (for a cleanup trap) until peer_stop.
#
# pingap 0.13.1 (~/.cargo/bin/pingap, Pingora-based), one TOML file.
#   route: location `/users/` + `rewrite = "^/users/ /"`; Pingora's upstream
#     pool keeps connections alive (upstream_keepalive_pool_size 128); a
#     response_headers plugin sets Access-Control-Allow-Origin: * on every
#     proxied response; access log "combined" through pingap's async file
#     logger (8 KiB BufWriter, flushed every 1 s, rolling=never). basic:
#     threads = 1, work_stealing = false. Differences from NGINX plain:
#     pingap's own error responses (500 for a path no location matches,
#     502) get no CORS header (nginx: add_header ... always); the log line
#     shows the rewritten URI (/me, not /users/me); each line goes to the
#     logger over a bounded channel (channel_buffer, raised to 10000 here)
#     with try_send, so a full channel drops lines instead of blocking (none
#     dropped in a 3 s wrk run); the logger writes from a background thread
#     of the same process (counted in its CPU), as does a TCP health check
#     of the upstream every 10 s (pingap's default). Like NGINX plain, and
#     unlike gw-route, no X-Forwarded-* and no X-Request-Id to the upstream.
#   full: route plus, on /users/ and /products/ (same plugin chain, in this
#     order): request_id, limit, cors, response_headers (X-Request-Id back to
#     the client), and on /products/ jwt. Against gw-full:
#     - request_id: UUID v7 (the default algorithm) in X-Request-Id to the
#       upstream; a client-sent X-Request-Id is kept whatever it contains (the
#       gateway keeps it only when short and plain). The plugin only sets the
#       upstream request header: the response gets it from a response_headers
#       plugin (`X-Request-Id:$http_x-request-id`, which reads the request
#       header the plugin set). Responses the plugins answer themselves (401,
#       429) go out without X-Request-Id and without CORS headers.
#     - limit: type "rate", tag "ip", max 1000000 per interval "1s": a rate
#       (pingora's two-window estimate: 50% previous + 50% current window),
#       not the gateway's GCRA token bucket; keyed by get_client_ip, which
#       believes a client-sent X-Forwarded-For / X-Real-IP first (spoofable;
#       the gateway uses the TCP peer unless it is a trusted proxy). Never
#       triggers here.
#     - cors: pingap's cors plugin with allow_origin "$http_origin": it
#       echoes the request's Origin rather than sending "*" (in 0.13.1 a
#       literal "*" makes every request carrying Origin fail with 400:
#       cors.rs requires a variable), plus Allow-Methods and Max-Age:3600 on
#       every cross-origin response, not only on preflights. Headers only
#       when the request has an Origin (as the gateway). A service's own
#       Access-Control-* headers are overwritten, not removed.
#     - jwt: header "Authorization" (a "Bearer " prefix, case-sensitive, is
#       stripped); HMAC-SHA256 (HS512 if the token's header says so) over
#       every request, compared as base64 strings (not constant-time), no
#       verified-token cache (like gw-jwt-nocache, unlike gw-jwt). `exp` is
#       checked only when present (a token without exp passes; the gateway
#       requires exp) and with no leeway (gateway: 30 s); nbf, iat, iss and
#       aud are not checked; `alg` is not pinned (anything but HS512 is
#       verified as HS256). It cannot pass a claim upstream: no X-User-Id.
#       401 bodies are plain text ("Jwt authorization is missing", "... is
#       invalid", "... is expired").
#     - access log: pingap's template, JSON-shaped:
#       timestamp (when_utc_iso, ms), request_id, client_ip, method, path
#       (the path after the rewrite: /me, not /users/me), status, bytes
#       (Pingora's body_bytes_sent, which counts headers too: 227 for the
#       21-byte body), latency_ms (whole ms), user_agent. Values are not
#       JSON-escaped (a quote in a User-Agent breaks the line); no upstream
#       address or upstream time.
#     - forwarding headers: enable_reverse_proxy_headers sets X-Real-IP,
#       X-Forwarded-For ($proxy_add_x_forwarded_for: appends to whatever
#       the client sent), X-Forwarded-Proto, -Host and -Port.
#
# HAProxy 2.6 (/usr/sbin/haproxy), one process: no master-worker (-db, no
#   `daemon`), nbthread 1; the PID started is the one proxying (and the one
#   to stop, with SIGTERM: hard stop). maxconn 4096 (the FD limit here is
#   20000, and HAProxy wants ~2 FDs per connection: maxconn 10000 fails).
#   `http-request replace-path ^/users(/.*) \1` on path_beg /users/,
#   `http-reuse always` (an idle upstream connection may serve any client
#   connection) with at most 64 idle per server (pool-max-conn 64, as nginx
#   `keepalive 64`), client keep-alive (option http-keep-alive, the
#   default), `http-after-response set-header Access-Control-Allow-Origin *`
#   (every response, HAProxy's own errors too, as nginx's `always`).
#   Access log: `log stdout format raw` with `option httplog` (HAProxy's
#   standard HTTP line), stdout redirected to $work/haproxy/access.log by
#   peer_start: the cheapest option that needs no second process (a ring or
#   a syslog socket needs a reader that would take CPU of its own).
#   Differences from NGINX plain: not buffered, one write(2) per request
#   (NGINX: 64 KiB buffer flushed each second); HAProxy drops a line rather
#   than block if the write would block (never for a regular file); a path
#   outside /users/ gets 503 (no backend), not 404. Like NGINX plain, no
#   X-Forwarded-For.
#
# Caddy 2.6.2 (/usr/bin/caddy), one process, GOMAXPROCS=1 (Go still runs a
#   few OS threads: sysmon, threads parked in blocking syscalls; all in the
#   same PID, which is the one to stop, with SIGQUIT: immediate exit).
#   Caddyfile: `admin off`, `auto_https off`, site http://:$gateway_port
#   with `bind 127.0.0.1` (no host matcher); `handle_path /users/*` (strips
#   /users) + `reverse_proxy` (Go's Transport keeps connections alive; idle
#   pool 64 per host like nginx `keepalive 64`; Caddy's default is 32),
#   `header Access-Control-Allow-Origin *`, JSON access log (`log { output
#   file ...; format json }`). XDG_DATA_HOME/XDG_CONFIG_HOME point into
#   $work, so its autosave.json and storage stay out of $HOME (Caddy 2.6's
#   Caddyfile has no persist_config). Differences from NGINX plain: the
#   header directive sets the header on every response of the site,
#   Caddy's own included (as nginx's `always`); each log line is written
#   unbuffered (one write(2) per request) and holds all request and
#   response headers (~600 bytes against ~100 for combined); reverse_proxy
#   always adds X-Forwarded-For, -Proto and -Host; the response carries two
#   Server headers (Caddy's and the upstream's); a path outside /users/*
#   gets an empty 200 (Caddy's default), not 404.

# Writes $work/pingap-$1/pingap.toml; $1 is route or full.
pingap_conf() {
    local kind=$1 dir="$work/pingap-$1"
    mkdir -p "$dir"
    local log_query="rolling=never&flush_timeout=1s&channel_buffer=10000"
    local access_log="$dir/access.log?$log_query combined"
    local plugins='"corsStar"' products="" proxy_headers=""
    local extra_plugins='[plugins.corsStar]
category = "response_headers"
set_headers = ["Access-Control-Allow-Origin:*"]'
    local locations='"users"'
    if [ "$kind" = full ]; then
        access_log="$dir/access.json?$log_query "'{"timestamp":"{when_utc_iso}","request_id":"{request_id}","client_ip":"{client_ip}","method":"{method}","path":"{path}","status":{status},"bytes":{size},"latency_ms":{latency},"user_agent":"{user_agent}"}'
        plugins='"requestId", "perIpLimit", "cors", "requestIdResponse"'
        proxy_headers="enable_reverse_proxy_headers = true"
        locations='"users", "products"'
        products="[locations.products]
path = \"/products/\"
upstream = \"users\"
rewrite = \"^/products/ /\"
$proxy_headers
plugins = [$plugins, \"jwtBearer\"]"
        extra_plugins="[plugins.requestId]
category = \"request_id\"
algorithm = \"uuid\"

[plugins.perIpLimit]
category = \"limit\"
type = \"rate\"
tag = \"ip\"
max = 1000000
interval = \"1s\"

[plugins.cors]
category = \"cors\"
allow_origin = \"\$http_origin\"

[plugins.requestIdResponse]
category = \"response_headers\"
set_headers = [\"X-Request-Id:\$http_x-request-id\"]

[plugins.jwtBearer]
category = \"jwt\"
header = \"Authorization\"
secret = \"$secret\""
    fi
    cat > "$dir/pingap.toml" <<CONF
[basic]
name = "pingap-$kind"
pid_file = "$dir/pingap.pid"
upgrade_sock = "$dir/pingap.sock"
threads = 1
work_stealing = false
log_level = "warn"
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[upstreams.users]
addrs = ["127.0.0.1:$upstream_port"]

[locations.users]
path = "/users/"
upstream = "users"
rewrite = "^/users/ /"
$proxy_headers
plugins = [$plugins]

$products

$extra_plugins

[servers.gateway]
addr = "127.0.0.1:$gateway_port"
threads = 1
access_log = '$access_log'
locations = [$locations]
CONF
}

# Writes $work/haproxy/haproxy.cfg.
haproxy_conf() {
    local dir="$work/haproxy"
    mkdir -p "$dir"
    cat > "$dir/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
    pidfile $dir/haproxy.pid
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend gateway
    bind 127.0.0.1:$gateway_port
    http-after-response set-header Access-Control-Allow-Origin "*"
    use_backend users if { path_beg /users/ }

backend users
    http-request replace-path ^/users(/.*) \1
    http-reuse always
    server upstream 127.0.0.1:$upstream_port pool-max-conn 64
CONF
}

# Writes $work/caddy/Caddyfile.
caddy_conf() {
    local dir="$work/caddy"
    mkdir -p "$dir"
    cat > "$dir/Caddyfile" <<CONF
{
	admin off
	auto_https off
}

http://:$gateway_port {
	bind 127.0.0.1
	log {
		output file $dir/access.log
		format json
	}
	header Access-Control-Allow-Origin "*"
	handle_path /users/* {
		reverse_proxy 127.0.0.1:$upstream_port {
			transport http {
				keepalive 60s
				keepalive_idle_conns 64
				keepalive_idle_conns_per_host 64
			}
		}
	}
}
CONF
}

# True while PID $1 runs: not gone, and not a zombie left for its parent
# (a subshell's, or PID 1, which may be slow to reap) to collect.
_peer_alive() {
    kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Starts peer $1 on CPU 0; prints "CPU_PID STOP_PID" once /users/me answers.
peer_start() {
    local name=$1 pid
    case "$name" in
        pingap-route | pingap-full)
            local dir="$work/$name"
            pingap_conf "${name#pingap-}"
            taskset -c 0 pingap -c "$dir/pingap.toml" >"$dir/pingap.out" 2>&1 &
            pid=$! ;;
        haproxy)
            haproxy_conf
            taskset -c 0 haproxy -db -f "$work/haproxy/haproxy.cfg" \
                >"$work/haproxy/access.log" 2>"$work/haproxy/haproxy.err" &
            pid=$! ;;
        caddy)
            caddy_conf
            mkdir -p "$work/caddy/data" "$work/caddy/config"
            GOMAXPROCS=1 XDG_DATA_HOME="$work/caddy/data" XDG_CONFIG_HOME="$work/caddy/config" \
                taskset -c 0 caddy run --config "$work/caddy/Caddyfile" --adapter caddyfile \
                >"$work/caddy/caddy.out" 2>&1 &
            pid=$! ;;
        *) echo "peer_start: unknown peer $name" >&2; return 1 ;;
    esac
    echo "$pid" > "$work/peer-running.pid"
    local _
    for _ in $(seq 200); do
        if curl -sf -o /dev/null "http://127.0.0.1:$gateway_port/users/me"; then
            echo "$pid $pid"
            return 0
        fi
        _peer_alive "$pid" || break
        sleep 0.05
    done
    echo "peer_start: $name (pid $pid) not ready on 127.0.0.1:$gateway_port" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$work/peer-running.pid"
    return 1
}

# Stops peer $1 running as PID $2 and waits until it has exited.
peer_stop() {
    local name=$1 pid=$2 signal
    case "$name" in
        # SIGINT (Pingora's fast shutdown) took ~1.8 s here and can spin
        # (see `stop` in compare.sh); nothing needs keeping.
        pingap-route | pingap-full) signal=KILL ;;
        haproxy) signal=TERM ;;     # hard stop: closes everything at once
        caddy) signal=QUIT ;;       # immediate exit
        *) echo "peer_stop: unknown peer $name" >&2; return 1 ;;
    esac
    kill "-$signal" "$pid" 2>/dev/null || true
    while _peer_alive "$pid"; do sleep 0.02; done
    rm -f "$work/peer-running.pid"
}
