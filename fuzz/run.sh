#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) and prints libFuzzer's
# count of executions per target; `fuzz/run.sh build` only builds them (CI
# builds beside the tests, and runs them after). Needs cargo-fuzz (cargo
# install cargo-fuzz). The toolchain here is stable: RUSTC_BOOTSTRAP lets cargo-fuzz
# pass its -Z flags, and `-s none` builds without a sanitizer (the stable
# toolchain ships no sanitizer runtimes); libFuzzer's coverage guidance
# and panic detection work without one, and the targets are safe Rust.
# The corpus grows in fuzz/corpus/ (not committed); fuzz/seeds/ holds the
# starting inputs and every input that ever found a bug.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
export RUSTC_BOOTSTRAP=1
# Optimized, but in 16 codegen units rather than the one cargo-fuzz asks for
# in release builds (for the inlining ThinLTO then does): a short run
# checks decoders for panics, and one unit per crate made this build the
# longest step of CI.
build=(-s none -O --codegen-units 16)
cargo fuzz build "${build[@]}"
if [ "$seconds" = build ]; then
    exit 0
fi
for target in segment journal offsets protocol kafka; do
    mkdir -p "corpus/$target"
    out=$(cargo fuzz run "${build[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 2>&1) || {
        echo "$out" | tail -40 >&2
        echo "fuzz target $target failed" >&2
        exit 1
    }
    echo "fuzz $target: $(echo "$out" | grep -o 'Done [0-9]* runs in [0-9]* second(s)' | tail -1)"
done
