#!/usr/bin/env bash
# Interleaved A/B of tokio_php binaries on one page: for each pass, each binary in turn is
# started, loaded twice with wrk, and stopped, so that the machine's slow spells hit every
# binary alike. Prints req/s and p99 of each run.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY        e.g. a release build of an older commit, then
#                                            target/release/tokio_php
#   N=5            passes                    PAGE=hello.php   the page of bench/www to load
#   DURATION=4s    wrk time per run          USE_STUB=1       the stub instead of PHP
#
# Build an older commit's binary beside the checkout:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target \
#     PHP_CONFIG=$(scripts/build-php.sh) cargo build --release)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
page=${PAGE:-hello.php}
for pass in $(seq "${N:-5}"); do
  line="pass $pass:"
  for bin in "$@"; do
    LISTEN_ADDR=127.0.0.1:$port DOCUMENT_ROOT="$here/www" PHP_WORKERS=2 USE_STUB=${USE_STUB:-0} \
      RUST_LOG=warn "$bin" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      curl -s -o /dev/null "http://127.0.0.1:$port/$page" && break
      sleep 0.1
    done
    runs=""
    for _ in 1 2; do
      runs="$runs $(wrk -t2 -c50 -d"${DURATION:-4s}" --latency "http://127.0.0.1:$port/$page" |
        awk '/Requests\/sec/ {printf "%d req/s", $2} / 99%/ {printf "p99 %s, ", $2}')"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    line="$line | $bin:$runs"
  done
  echo "$line"
done
