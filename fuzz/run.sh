#!/usr/bin/env bash
# Build and run the fuzz targets with libFuzzer on the STABLE toolchain: the same
# SanitizerCoverage flags cargo-fuzz passes, minus -Zsanitizer=address (nightly only).
# Rust code is memory-safe without ASan here (the agent's crate forbids unsafe), so
# what the fuzzer finds is panics, assertion failures, overflows (overflow checks on),
# timeouts and out-of-memory.
#
#   bash fuzz/run.sh build            # build every target
#   bash fuzz/run.sh run [SECONDS]    # run each target SECONDS (default 60)
#   bash fuzz/run.sh run 60 sse       # one target
#
# With cargo-fuzz and a nightly toolchain, `cd fuzz && cargo +nightly fuzz run sse`
# works too (adds ASan).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
TARGETS=(inbound_frame sse anthropic identity config request_policy)
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps these flags off build scripts and proc macros.
build() { cargo build --release --target "$triple" --bins; }

case "${1:-build}" in
build) build ;;
run)
  secs="${2:-60}"
  shift $(( $# > 1 ? 2 : 1 ))
  sel=("${@:-${TARGETS[@]}}")
  build
  for t in "${sel[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== fuzz $t for ${secs}s"
    "target/$triple/release/$t" "corpus/$t" "seeds/$t" \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | tail -n 12
  done ;;
*) echo "usage: $0 build | run [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
