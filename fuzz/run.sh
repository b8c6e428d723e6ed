#!/usr/bin/env bash
# Coverage-guided fuzzing of embtune's parsers with libFuzzer, on stable Rust (see README.md).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     targets: frame spec trace (default: all)
#
# Builds the targets with sanitizer-coverage instrumentation (flags rustc takes on stable; no
# cargo-fuzz, no nightly), then runs each for SECONDS_PER_TARGET (default 30) on a working copy
# of its checked-in corpus (corpus-run/, kept between runs so that long runs build on earlier
# ones). A crash leaves its input in artifacts/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame spec trace)
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros.
cargo build --locked --release --target "$triple" --bins
mkdir -p artifacts
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t"
    cp -n "corpus/$t"/* "corpus-run/$t/" 2>/dev/null || true
    echo "=== fuzzing $t for ${secs}s"
    if ! "./target/$triple/release/$t" "corpus-run/$t" -max_total_time="$secs" -rss_limit_mb=2048 \
        -max_len=4096 -timeout=10 -artifact_prefix="artifacts/$t-" -print_final_stats=1 2>"artifacts/$t.log"; then
        tail -n 40 "artifacts/$t.log"
        echo "fuzz target $t failed; its input is in fuzz/artifacts/ (replay: fuzz/target/$triple/release/$t FILE)" >&2
        exit 1
    fi
    grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "artifacts/$t.log" || true
    grep -E "DONE" "artifacts/$t.log" | tail -n 1 || true
done
