#!/usr/bin/env bash
# Zero-downtime reload or upgrade of a running gateway, with Pingora's
# graceful upgrade: the new process takes the listening sockets over
# `server.upgrade_sock`, the old one gets SIGQUIT, finishes its in-flight
# requests and exits. No connection is refused in between.
#
#   scripts/upgrade.sh [-c CONF] [-b BINARY] [-l LOGFILE]
#
# CONF defaults to conf/gateway.yaml, BINARY to the release build, LOGFILE
# (the new process's stdout and stderr) to /dev/null. The new config is
# validated first: if it is invalid nothing happens and the old process
# keeps serving. Exits 0 once the old process has exited and the new one
# serves; non-zero, with the reason, otherwise.
set -euo pipefail

conf=conf/gateway.yaml
binary="${CARGO_TARGET_DIR:-target}/release/api-gateway"
log=/dev/null
while getopts "c:b:l:" flag; do
    case "$flag" in
        c) conf="$OPTARG" ;;
        b) binary="$OPTARG" ;;
        l) log="$OPTARG" ;;
        *) sed -n '7,8p' "$0" >&2; exit 2 ;;
    esac
done

# Running, and not a zombie its parent has yet to reap.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }

# 1. The new config must be valid (the error names file, key and reason).
if ! checked=$("$binary" -t -c "$conf" 2>&1); then
    echo "upgrade refused, the running gateway keeps serving: $checked" >&2
    exit 1
fi
pid_file=$(sed -n 's/^pid_file: //p' <<<"$checked")
old_pid=$(cat "$pid_file" 2>/dev/null || true)
if [ -z "$old_pid" ] || ! alive "$old_pid"; then
    echo "no running gateway in $pid_file" >&2
    exit 1
fi

# 2. The new process waits on upgrade_sock for the listening sockets...
nohup setsid "$binary" -u -c "$conf" >>"$log" 2>&1 </dev/null &
new_pid=$!

# 3. ...which the old one hands over on SIGQUIT, then drains and exits.
sleep 0.2
kill -QUIT "$old_pid"
for _ in $(seq 600); do
    alive "$old_pid" || break
    if ! alive "$new_pid"; then
        echo "the new process exited; see $log" >&2
        exit 1
    fi
    sleep 0.1
done
if alive "$old_pid"; then
    echo "the old process $old_pid is still running after 60 s" >&2
    exit 1
fi
alive "$new_pid" || { echo "the new process exited; see $log" >&2; exit 1; }
echo "upgraded: $old_pid -> $new_pid"
