#!/usr/bin/env bash
# What building the gateway needs on a Debian or Ubuntu machine with a Rust
# toolchain, installed when missing; with --tests, also what the tests need.
# scripts/demo.sh and scripts/test.sh call it; it installs nothing that is
# there already, so a second run costs a few checks.
#
#   build:  a C/C++ compiler and make (Pingora's zlib-ng, aws-lc), cmake,
#           pkg-config, CA certificates
#   tests:  openssl (test certificates and keys), python3 with PyJWT and
#           cryptography (tokens minted independently of the crate that
#           verifies them) and opentelemetry-proto (the OTLP receiver),
#           chromium (the browser CORS test), redis-server (shared budgets),
#           curl
set -euo pipefail

tests=false
case "${1:-}" in
    --tests) tests=true ;;
    "") ;;
    *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust first, https://rustup.rs" >&2
    exit 1
fi

packages=()
need() { command -v "$1" >/dev/null || packages+=("$2"); }
need cc build-essential
need c++ build-essential
need make build-essential
need cmake cmake
need pkg-config pkg-config
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || packages+=(ca-certificates)
if $tests; then
    need openssl openssl
    need python3 python3
    need chromium chromium
    need redis-server redis-server
    need curl curl
    python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
fi

if ((${#packages[@]})); then
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "installing: ${packages[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi

if $tests && ! python3 -c 'import jwt, cryptography, opentelemetry.proto' 2>/dev/null; then
    python_packages=(pyjwt cryptography opentelemetry-proto)
    echo "installing for python3: ${python_packages[*]}" >&2
    # Debian 12 marks its Python as externally managed; these go to the
    # user's site-packages either way.
    python3 -m pip install --quiet --user "${python_packages[@]}" 2>/dev/null ||
        python3 -m pip install --quiet --user --break-system-packages "${python_packages[@]}"
fi
