#!/usr/bin/env bash
# Side-by-side benchmark on loopback: tokio_php, the stub (USE_STUB=1, no PHP) and nginx + php-fpm
# serving the same hello.php, each loaded with wrk in turn in one run.
#
#   WORKERS=N     PHP workers / php-fpm children / nginx workers (default: cores)
#   DURATION=10s  wrk duration per target     CONNECTIONS=50   THREADS=2
#
# Prints requests/s, p50, p99 and each target's ratio to nginx + php-fpm.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
workers=${WORKERS:-$(nproc)}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-50}
threads=${THREADS:-2}

# Loopback ports chosen here, away from the usual 8080.
tokio_port=${TOKIO_PORT:-18181}
stub_port=${STUB_PORT:-18182}
nginx_port=${NGINX_PORT:-18183}

install_peers() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || missing+=(nginx)
  command -v php-fpm8.2 >/dev/null || missing+=(php8.2-fpm php8.2-opcache)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

run=$(mktemp -d /tmp/tokio_php_bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

render() {
  sed -e "s|@RUN@|$run|g" -e "s|@WORKERS@|$workers|g" -e "s|@ROOT@|$here/www|g" \
      -e "s|@NGINX_PORT@|$nginx_port|g" "$1" >"$2"
}

wait_for_port() {
  local port=$1
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: nothing listens on 127.0.0.1:$port" >&2
  exit 1
}

check_hello() {
  local port=$1 body
  body=$(curl -fsS "http://127.0.0.1:$port/hello.php" 2>/dev/null || wget -qO- "http://127.0.0.1:$port/hello.php")
  [ "$body" = "Hello, World!" ] || { echo "bench: 127.0.0.1:$port/hello.php answered '$body'" >&2; exit 1; }
}

# wrk --latency output → "rps p50_ms p99_ms non2xx"
measure() {
  local port=$1 out
  wrk -t1 -c4 -d2s "http://127.0.0.1:$port/hello.php" >/dev/null  # warm-up (OPcache, connections)
  out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency "http://127.0.0.1:$port/hello.php")
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %.2f %.2f %d\n", rps, p50, p99, bad + 0 }' <<<"$out"
}

install_peers
(cd "$repo" && cargo build --release --quiet)
binary="$repo/target/release/tokio_php"

echo "bench: starting peers ($workers workers each)" >&2
LISTEN_ADDR=127.0.0.1:$tokio_port DOCUMENT_ROOT=$here/www PHP_WORKERS=$workers RUST_LOG=warn "$binary" &
pids+=($!)
# The same root, so the stub sits behind the same routing and only PHP is missing.
LISTEN_ADDR=127.0.0.1:$stub_port DOCUMENT_ROOT=$here/www USE_STUB=1 RUST_LOG=warn "$binary" &
pids+=($!)
render "$here/php-fpm.conf.in" "$run/php-fpm.conf"
php-fpm8.2 -R -F -y "$run/php-fpm.conf" &
pids+=($!)
render "$here/nginx.conf.in" "$run/nginx.conf"
nginx -c "$run/nginx.conf" &
pids+=($!)
for port in $tokio_port $stub_port $nginx_port; do wait_for_port "$port"; done
check_hello "$tokio_port"
check_hello "$nginx_port"

echo "bench: wrk -t$threads -c$connections -d$duration --latency, one target at a time" >&2
read -r fpm_rps fpm_p50 fpm_p99 fpm_bad <<<"$(measure "$nginx_port")"
read -r tokio_rps tokio_p50 tokio_p99 tokio_bad <<<"$(measure "$tokio_port")"
read -r stub_rps stub_p50 stub_p99 stub_bad <<<"$(measure "$stub_port")"

printf '\n%-22s %12s %10s %10s %10s %14s\n' target "req/s" "p50 ms" "p99 ms" non-2xx "vs php-fpm"
row() { printf '%-22s %12.0f %10.2f %10.2f %10d %13.2fx\n' "$1" "$2" "$3" "$4" "$5" "$(awk "BEGIN{print $2/$fpm_rps}")"; }
row "nginx + php-fpm" "$fpm_rps" "$fpm_p50" "$fpm_p99" "$fpm_bad"
row "tokio_php" "$tokio_rps" "$tokio_p50" "$tokio_p99" "$tokio_bad"
row "tokio_php stub (no PHP)" "$stub_rps" "$stub_p50" "$stub_p99" "$stub_bad"
echo
echo "workers=$workers, $(nproc) cores shared by servers and wrk, loopback, $(date -u +%Y-%m-%dT%H:%MZ)"
