# Sourced by the container checks: a Docker engine started and stopped by
# PID, and the base images the project's Dockerfile and compose file name,
# made locally because no image registry is reachable from CI. Users pull
# the real images; only CI makes these stand-ins under the same names.
#
# The engine's data root lives under ~/.cache, beside cargo's target
# directory, so that BuildKit's cache mounts (the cargo registry and target
# directory of the image build) and the stand-ins survive between runs on
# one machine. A fresh machine builds everything, in about 20 minutes.

DOCKER=/usr/bin/docker # Debian's client: BuildKit without buildx
DOCKER_ROOT="${DOCKER_ROOT:-$HOME/.cache/api-gateway-docker}"
ENGINE_LOG="${ENGINE_LOG:-/tmp/api-gateway-dockerd.log}"
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1

engine_install() {
    local packages=()
    command -v dockerd >/dev/null || packages+=(docker.io)
    command -v docker-compose >/dev/null || packages+=(docker-compose)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    if ((${#packages[@]})); then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${packages[@]}" iptables >/dev/null
    fi
}

# dockerd turns IP forwarding on, adds firewall chains and rules (the
# FORWARD policy set to DROP among them) and the docker0 bridge, and leaves
# them all when it stops: engine_stop puts the machine back as it was.
engine_start() {
    saved_ip_forward=$(sysctl -n net.ipv4.ip_forward)
    saved_firewall=$(iptables-save 2>/dev/null || true)
    had_bridge=false
    ip link show docker0 >/dev/null 2>&1 && had_bridge=true
    mkdir -p "$DOCKER_ROOT"
    dockerd --data-root "$DOCKER_ROOT" >"$ENGINE_LOG" 2>&1 &
    engine_pid=$!
    local i
    for i in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && return 0
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.5
    done
    echo "dockerd did not start; its log:" >&2
    tail -20 "$ENGINE_LOG" >&2
    return 1
}

engine_stop() {
    [[ -n "${engine_pid:-}" ]] || return 0
    kill -TERM "$engine_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$engine_pid" 2>/dev/null || true
    engine_pid=
    sysctl -q -w net.ipv4.ip_forward="$saved_ip_forward" || true
    [[ -z "$saved_firewall" ]] || iptables-restore <<<"$saved_firewall" || true
    $had_bridge || ip link delete docker0 2>/dev/null || true
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# debian:bookworm-slim: a debootstrap minbase trimmed as the official slim
# image is (no documentation, manual pages, locales or apt caches).
make_debian_base() {
    have_image debian:bookworm-slim && return 0
    local rootfs mirror
    rootfs=$(mktemp -d)
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    # As the official image: apt keeps no package caches in a layer.
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    tar -C "$rootfs" -c . | "$DOCKER" import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$rootfs"
}

# rust:1-bookworm: what the official image has through buildpack-deps that
# the build needs, this machine's toolchain, and this machine's extra CA
# certificates so that cargo reaches crates.io from inside a build.
make_rust_builder() {
    have_image rust:1-bookworm && return 0
    local context sysroot
    context=$(mktemp -d)
    sysroot=$(rustc --print sysroot)
    mkdir -p "$context/ca"
    cp -a "$sysroot" "$context/rust"
    rm -rf "$context/rust/share/doc" "$context/rust/share/man"
    cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
    cat >"$context/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config git curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY rust/ /usr/local/rust/
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH
EOF
    "$DOCKER" build -q -t rust:1-bookworm "$context" >/dev/null
    rm -rf "$context"
}

# redis:7-alpine: Debian's redis-server, with protected mode off as the
# official image has it, so that other containers may connect.
make_redis() {
    have_image redis:7-alpine && return 0
    local context
    context=$(mktemp -d)
    cat >"$context/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
if [ "$1" = redis-server ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
EOF
    chmod +x "$context/docker-entrypoint.sh"
    cat >"$context/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
COPY docker-entrypoint.sh /usr/local/bin/
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
    "$DOCKER" build -q -t redis:7-alpine "$context" >/dev/null
    rm -rf "$context"
}
