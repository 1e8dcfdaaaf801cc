#!/usr/bin/env bash
# Bounded fuzzing: every target in fuzz/ for FUZZ_SECONDS (default 60) each,
# as many at once as there are cores, each from a copy of its seed corpus so
# that the tree only ever holds the seeds. Fails if any target finds a
# crash, printing the input libFuzzer saved and the command that replays it.
#
# On stable Rust: cargo-fuzz asks for nightly only for a sanitizer, so the
# targets are built with `--sanitizer none` (Rust code needs no
# AddressSanitizer to be memory safe) and `--debug-assertions`, which also
# turns arithmetic overflow into a panic, i.e. a crash libFuzzer reports.
#
#   FUZZ_SECONDS      per target (default 60)
#   FUZZ_RSS_MB       memory limit per target process (default 2048)
#   FUZZ_TARGETS      which targets (default: all of them)
#   FUZZ_JOBS         targets run at once (default: the number of cores)
#   FUZZ_TARGET_DIR   cargo's target directory for the instrumented build
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
rss_mb="${FUZZ_RSS_MB:-2048}"
# Never the gateway's own target directory (which .ci/run exports): these
# builds carry coverage instrumentation and other flags.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/api-gateway-fuzz-target}"
flags=(--sanitizer none --debug-assertions)

./scripts/install-deps.sh # libfuzzer-sys compiles libFuzzer with the C++ compiler
if ! cargo fuzz --version >/dev/null 2>&1; then
    # Into ~/.cargo/bin, which a cached home keeps.
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz --version

cd fuzz
read -ra targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "fuzz targets built in $((SECONDS - start)) s" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One target: from a copy of its seeds; its exit status in $work/<target>.rc.
fuzz() {
    local target=$1
    mkdir -p "$work/$target" "artifacts/$target"
    cp corpus/"$target"/* "$work/$target"/
    ls "artifacts/$target" >"$work/$target.before"
    local rc=0
    cargo fuzz run "${flags[@]}" "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
        -print_final_stats=1 >"$work/$target.log" 2>&1 || rc=$?
    echo "$rc" >"$work/$target.rc"
}

# libFuzzer uses one core a process: as many targets at once as there are
# cores, so that CI pays the time of one round, not of every target.
at_once="${FUZZ_JOBS:-$(nproc)}"
echo "fuzzing ${#targets[@]} targets for ${seconds} s each, ${at_once} at a time" >&2
for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= at_once)); do
        wait -n || true
    done
    fuzz "$target" &
done
wait

failed=()
for target in "${targets[@]}"; do
    if [[ "$(cat "$work/$target.rc" 2>/dev/null)" == 0 ]]; then
        echo "== $target: $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
            "$work/$target.log" | tr -s ' \n' ' ')" >&2
        continue
    fi
    failed+=("$target")
    echo "== $target: FAILED" >&2
    # libFuzzer's report, without its per-input progress lines.
    grep -av '^#[0-9]' "$work/$target.log" | tail -n 60 >&2
    for input in $(comm -13 "$work/$target.before" <(ls "artifacts/$target")); do
        echo "crashing input: fuzz/artifacts/$target/$input" >&2
        echo "reproduce: (cd fuzz && cargo fuzz run ${flags[*]} $target artifacts/$target/$input -- -rss_limit_mb=$rss_mb)" >&2
    done
done
echo "fuzzing took $((SECONDS - start)) s" >&2

if ((${#failed[@]})); then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
