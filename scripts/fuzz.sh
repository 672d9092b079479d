#!/usr/bin/env bash
# Fuzzes the code that takes outside input (src/fuzz.rs) with cargo-fuzz and libFuzzer, each
# target for a bounded time, and prints executions, corpus size and findings per target.
#
#   FUZZ_SECONDS=60         time per target
#   FUZZ_TARGETS="a b"      which targets (default: all in fuzz/fuzz_targets)
#
# Findings (inputs that panic) are left in fuzz/artifacts/<target>/ and make the script fail;
# `cargo +nightly fuzz run <target> <file>` replays one. tests/fuzz_smoke.rs runs the same targets
# briefly on the stable toolchain in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$(ls fuzz/fuzz_targets | sed 's/\.rs$//')}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain (libFuzzer's instrumentation needs it)" >&2
  rustup toolchain install nightly --profile minimal >&2 ||
    { echo "fuzz: error: no nightly toolchain; install it with: rustup toolchain install nightly" >&2; exit 1; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2
fi
# The library links the thread-safe PHP the build uses.
PHP_CONFIG=${PHP_CONFIG:-$(scripts/build-php.sh | tail -n 1)}
export PHP_CONFIG
# The library's rpath to libphp applies to its own binaries, not to the fuzz targets.
LD_LIBRARY_PATH="$("$PHP_CONFIG" --prefix)/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH

summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
failed=0
for target in $targets; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  log=fuzz/artifacts/$target.log
  echo "fuzz: $target for ${seconds}s" >&2
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  findings=$(find "fuzz/artifacts/$target" -type f | wc -l)
  printf '%-18s %12s %8s %9s\n' "$target" "${runs:-?}" "$(ls "$corpus" | wc -l)" "$findings" >>"$summary"
  if [ "$status" -ne 0 ] || [ "$findings" -gt 0 ]; then
    failed=1
    echo "fuzz: $target found a problem (log: $log)" >&2
    grep -m 5 -E "panicked|ERROR|SUMMARY" "$log" >&2 || true
  fi
done
printf '%-18s %12s %8s %9s\n' target executions corpus findings
cat "$summary"
exit "$failed"
