#!/usr/bin/env bash
# Builds a thread-safe (ZTS) PHP with the embed SAPI, cached outside the repository.
#
# Prints the path of the resulting `php-config` on its last line of stdout.
#
#   scripts/build-php.sh --source    only fetch and unpack PHP's sources (php-src's own tests run
#                                    against the server from them); prints their directory
#
#   PHP_CONFIG=/path/to/php-config   use your own ZTS PHP (8.2-8.4) instead of building one (add
#                                    phpredis to it yourself if sessions go to Redis: pecl install redis)
#   TOKIO_PHP_CACHE=/dir             cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tokio_php)
#   PHP_BUILD_JOBS=N                 parallel make jobs (default: number of cores)
#   PHP_PGO=0                        one plain build instead of the profile-guided one (half the time)
#
# The build is a no-op once the prefix is complete: the marker file records the exact configure
# flags, compiler flags and patches, so changing any of them triggers a rebuild.
#
# phpredis (sessions in Redis, shared by replicas) is built against the result from Debian's
# php-redis source package and enabled in its conf.d, with session locking on.
#
# scripts/php-patches/*.patch are applied to the pristine sources in order (each file says what
# it changes and why): they remove costs a thread-safe PHP 8.2 pays and php-fpm's build does not.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "$0")" && pwd)

log() { echo "build-php: $*" >&2; }
die() { echo "build-php: error: $*" >&2; exit 1; }

# Refuses a PHP that cannot host our worker threads (non-ZTS) or that we do not support.
check_php_config() {
  local php_config=$1
  [ -x "$php_config" ] || die "PHP_CONFIG=$php_config is not an executable php-config"
  local vernum include_dir
  vernum=$("$php_config" --vernum) || die "$php_config --vernum failed"
  if [ "$vernum" -lt 80200 ] || [ "$vernum" -ge 80500 ]; then
    die "$php_config is PHP $("$php_config" --version); tokio_php supports PHP 8.2 to 8.4"
  fi
  include_dir=$("$php_config" --include-dir)
  if ! grep -q '^#define ZTS 1' "$include_dir/main/php_config.h"; then
    die "$php_config is a non-thread-safe (NTS) PHP; tokio_php needs a ZTS build (--enable-zts). Unset PHP_CONFIG to build one."
  fi
  local libdir
  libdir=$("$php_config" --prefix)/lib
  if [ ! -e "$libdir/libphp.so" ] && ! ls "$libdir"/libphp*.so >/dev/null 2>&1; then
    die "$php_config has no libphp in $libdir; PHP must be built with --enable-embed"
  fi
}

source_only=false
if [ "${1:-}" = "--source" ]; then
  source_only=true
elif [ $# -gt 0 ]; then
  die "unknown argument $1 (the only one is --source)"
fi

if [ -n "${PHP_CONFIG:-}" ] && ! $source_only; then
  check_php_config "$PHP_CONFIG"
  echo "$PHP_CONFIG"
  exit 0
fi

cache=${TOKIO_PHP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokio_php}
prefix="$cache/php-8.2-zts"
jobs=${PHP_BUILD_JOBS:-$(nproc)}

# Compiler flags; docs/benchmarks.md has what each candidate measured (-O3 -march=native:
# page.php +14 % over -O2). The build is for this machine's CPU: its -march=native is part of
# the marker, so a cache copied to another CPU is rebuilt instead of dying on an instruction.
PHP_CFLAGS="-g -O3 -march=native"
native_cpu=$(cc -march=native -Q --help=target 2>/dev/null | awk '$1 == "-march=" {print $2}')
# Profile-guided optimisation: PHP is built instrumented, runs the training scripts through
# libphp (scripts/php-pgo/train.c), and is built again with the profile (page.php +14 %;
# WordPress's own code in the training: its front page +5 %, docs/benchmarks.md).
PHP_PGO=${PHP_PGO:-1}

# Extensions are listed explicitly so a build never silently lacks one an app expects.
CONFIGURE_FLAGS=(
  --prefix="$prefix"
  --with-config-file-path="$prefix/etc"
  --with-config-file-scan-dir="$prefix/etc/conf.d"
  --enable-embed=shared
  --enable-zts
  --disable-zend-signals
  --enable-zend-max-execution-timers
  --disable-cgi
  --disable-phpdbg
  --enable-cli
  --enable-opcache
  --enable-ctype
  --enable-dom
  --enable-fileinfo
  --enable-filter
  --with-iconv
  --enable-mbstring
  --with-openssl
  --with-curl
  --with-zlib
  --with-pdo-sqlite
  --with-sqlite3
  --enable-mysqlnd
  --with-mysqli=mysqlnd
  --with-pdo-mysql=mysqlnd
  --enable-session
  --enable-tokenizer
  --enable-xml
  --enable-simplexml
  --enable-xmlreader
  --enable-xmlwriter
  --enable-bcmath
  --enable-sockets
  --enable-exif
)
PATCHES=("$here"/php-patches/*.patch)
patches_id=$(cat "${PATCHES[@]}" | sha256sum | cut -c1-16)
pgo_id=none
if [ "$PHP_PGO" = 1 ]; then
  pgo_id=$(cat "$here/php-pgo/train.c" "$here/php-pgo/wordpress.php" \
    "$here"/../bench/www/{hello,page,cpu}.php | sha256sum | cut -c1-16)
fi
flags_id=$({ printf '%s\n' "${CONFIGURE_FLAGS[@]}" "CFLAGS=$PHP_CFLAGS" "CPU=$native_cpu" "PGO=$pgo_id"; echo "$patches_id"; } | sha256sum | cut -c1-16)
marker="$prefix/.tokio_php-build-complete"

php_built() {
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$flags_id" ] && [ -x "$prefix/bin/php-config" ]
}

# phpredis (sessions shared by replicas, docs/deployment.md), built against this PHP from Debian's
# php-redis source package and enabled by conf.d/20-redis.ini, which records the version built.
# PHP's rebuild empties the prefix, so phpredis is rebuilt with it.
PHPREDIS_INI="$prefix/etc/conf.d/20-redis.ini"
# The session lock settings (docker/php.ini has the same; tests/docker.rs compares them).
PHPREDIS_SETTINGS=$(cat <<'INI'
extension=redis
; With session.save_handler=redis, a request holds its session's lock from session_start() to
; its end (or session_write_close()), so that concurrent requests of one user do not overwrite
; each other's updates. A waiting request retries every 10 ms for up to 10 s, then
; session_start() fails. A lock lives 120 s, REQUEST_TIMEOUT's default: it expires only when its
; holder is gone (a replica killed), not while the request that holds it may still run.
redis.session.locking_enabled = 1
redis.session.lock_wait_time = 10000
redis.session.lock_retries = 1000
redis.session.lock_expire = 120
INI
)
phpredis_built() {
  [ -f "$PHPREDIS_INI" ] &&
    [ "$(sed -n '/^extension=redis$/,$p' "$PHPREDIS_INI")" = "$PHPREDIS_SETTINGS" ] &&
    [ -f "$("$prefix/bin/php-config" --extension-dir)/redis.so" ]
}

build_phpredis() {
  local src_root="$cache/src" tarball dir
  mkdir -p "$src_root"
  tarball=$(ls "$src_root"/php-redis_*.orig.tar.?z 2>/dev/null | head -n1 || true)
  if [ -z "$tarball" ]; then
    ensure_deb_src
    log "downloading the php-redis source package"
    (cd "$src_root" && apt-get source --download-only -qq php-redis >/dev/null 2>&1) ||
      die "could not download the php-redis source package (is a deb-src entry reachable?)"
    tarball=$(ls "$src_root"/php-redis_*.orig.tar.?z | head -n1)
  fi
  # The orig tarball holds phpredis 5.x (for PHP 7/8) and 4.x (for PHP 5): build the newest.
  rm -rf "$src_root/php-redis"
  mkdir -p "$src_root/php-redis"
  tar -xf "$tarball" -C "$src_root/php-redis"
  dir=$(ls -d "$src_root"/php-redis/redis-*/ | sort -V | tail -n1)
  local version
  version=$(basename "$dir" | sed 's/^redis-//')
  log "building phpredis $version against $prefix"
  (
    cd "$dir"
    "$prefix/bin/phpize" >phpize.log 2>&1 &&
      ./configure --with-php-config="$prefix/bin/php-config" >configure.log 2>&1 &&
      make -j"$jobs" >make.log 2>&1 &&
      make install >install.log 2>&1
  ) || die "building phpredis failed (see the logs in $dir)"
  mkdir -p "$prefix/etc/conf.d"
  printf '; phpredis %s, from Debian'"'"'s php-redis source package (scripts/build-php.sh).\n%s\n' \
    "$version" "$PHPREDIS_SETTINGS" >"$PHPREDIS_INI"
  "$prefix/bin/php" -r 'exit(extension_loaded("redis") ? 0 : 1);' ||
    die "phpredis was built but PHP does not load it"
}

if ! $source_only && php_built && phpredis_built; then
  echo "$prefix/bin/php-config"
  exit 0
fi

"$here/install-deps.sh"

# Debian's source package: its orig tarball is the pristine upstream release (as the official
# docker image uses); Debian's own patches are left out so both builds behave alike.
ensure_deb_src() {
  if apt-get source --print-uris -qq php8.2 >/dev/null 2>&1; then
    return
  fi
  log "adding deb-src entries for Debian's sources"
  local list=/etc/apt/sources.list.d/tokio-php-deb-src.sources
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$list"
  elif [ -f /etc/apt/sources.list ]; then
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >/etc/apt/sources.list.d/tokio-php-deb-src.list
  else
    die "no apt sources found to derive a deb-src entry from"
  fi
  apt-get update -qq
}

# Mirrors sometimes list a security release whose files are not (yet) there: try every version
# the index knows, newest first.
download_source() {
  local dest=$1 version
  for version in $(apt-cache showsrc php8.2 | sed -n 's/^Version: //p' | sort -rV); do
    log "downloading php8.2 $version source package"
    if (cd "$dest" && apt-get source --download-only -qq "php8.2=$version" >/dev/null 2>&1); then
      return 0
    fi
    log "php8.2 $version is not downloadable, trying an older one"
  done
  die "could not download the php8.2 source package (is a deb-src entry reachable?)"
}

fetch_source() {
  local src_root="$cache/src"
  mkdir -p "$src_root"
  local tarball
  tarball=$(ls "$src_root"/php8.2_*.orig.tar.?z 2>/dev/null | head -n1 || true)
  if [ -z "$tarball" ]; then
    ensure_deb_src
    download_source "$src_root"
    tarball=$(ls "$src_root"/php8.2_*.orig.tar.?z | head -n1)
  fi
  local dir="$src_root/php-src"
  # A tree patched with other patches (or none) is unpacked again: patches apply to pristine files.
  if [ ! -f "$dir/configure" ] || [ "$(cat "$dir/.tokio_php-patched" 2>/dev/null)" != "$patches_id" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xf "$tarball" -C "$dir" --strip-components=1
    apply_patches "$dir"
  fi
  echo "$dir"
}

apply_patches() {
  local dir=$1 patch
  for patch in "${PATCHES[@]}"; do
    log "applying $(basename "$patch")"
    patch -d "$dir" -p1 --forward --quiet <"$patch" >&2 || die "$(basename "$patch") does not apply to $(basename "$tarball")"
  done
  echo "$patches_id" >"$dir/.tokio_php-patched"
}

if ! $source_only && php_built; then
  build_phpredis
  log "done"
  echo "$prefix/bin/php-config"
  exit 0
fi

src=$(fetch_source)
if $source_only; then
  echo "$src"
  exit 0
fi
log "building PHP in $src -> $prefix (make -j$jobs; 10-15 minutes on 2 cores, half without PGO)"
cd "$src"
if [ ! -f Makefile ] || [ "$(cat .tokio_php-configured 2>/dev/null)" != "$flags_id" ]; then
  CFLAGS="$PHP_CFLAGS" ./configure "${CONFIGURE_FLAGS[@]}" >configure.log 2>&1 || { tail -n 40 configure.log >&2; die "configure failed (see $src/configure.log)"; }
  echo "$flags_id" >.tokio_php-configured
fi
# The training run: tokio_php's benchmark scripts and php-src's own, as requests through libphp
# with OPcache on, with and without the JIT (the interpreter runs what the JIT does not compile).
train_php() {
  local train="$src/.tokio_php-train" ini
  cc -O2 -D_GNU_SOURCE -o "$train" "$here/php-pgo/train.c" \
    -I. -Imain -IZend -ITSRM -Iext -Isapi/embed -Iext/date/lib \
    -L.libs -lphp -Wl,-rpath,"$src/.libs" || return 1
  ini=$(mktemp -d)
  printf 'zend_extension=%s/modules/opcache.so\nopcache.enable=1\nopcache.file_update_protection=0\n' "$src" >"$ini/train.ini"
  local scripts="$here/../bench/www" wp_roots
  # WordPress's code that needs no database (php-pgo/wordpress.php), from Debian's packages.
  wp_roots=$("$here/fetch-debian-app.sh" wordpress wordpress-theme-twentytwentythree) || return 1
  export WP_DIR WP_THEME_DIR
  WP_DIR=$(sed -n 1p <<<"$wp_roots")/usr/share/wordpress
  WP_THEME_DIR=$(sed -n 2p <<<"$wp_roots")/usr/share/wordpress/wp-content/themes/twentytwentythree
  PHP_INI_SCAN_DIR=$ini "$train" 100 "$here/php-pgo/wordpress.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 200 "$scripts/page.php" "$scripts/hello.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 10 "$scripts/cpu.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 1 Zend/bench.php >/dev/null &&
    printf 'opcache.jit=tracing\nopcache.jit_buffer_size=64M\n' >>"$ini/train.ini" &&
    PHP_INI_SCAN_DIR=$ini "$train" 150 "$here/php-pgo/wordpress.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 300 "$scripts/page.php" "$scripts/hello.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 30 "$scripts/cpu.php" >/dev/null &&
    PHP_INI_SCAN_DIR=$ini "$train" 1 Zend/bench.php Zend/micro_bench.php >/dev/null
  local status=$?
  rm -rf "$ini"
  return $status
}

make_php() {
  local log=$1
  shift
  make -j"$jobs" "$@" all >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "make failed (see $src/$log)"; }
}

if [ "$PHP_PGO" = 1 ]; then
  # Value profiling stays off: its per-function hook reads a thread-local variable, which crashes
  # when glibc runs PHP's ifunc resolvers while it is still relocating libphp.so.
  make prof-clean >/dev/null 2>&1 || true
  find . -name '*.gcda' -delete
  make_php make-instrumented.log PROF_FLAGS="-fprofile-generate -fno-profile-values"
  log "training run (profile-guided build)"
  train_php || die "the PGO training run failed (PHP_PGO=0 builds without it)"
  make prof-clean >/dev/null 2>&1
  make_php make.log PROF_FLAGS="-fprofile-use -fprofile-partial-training -Wno-missing-profile"
else
  make_php make.log
fi
rm -rf "$prefix"
make install >install.log 2>&1 || { tail -n 40 install.log >&2; die "make install failed (see $src/install.log)"; }
mkdir -p "$prefix/etc/conf.d"
echo "zend_extension=opcache" >"$prefix/etc/conf.d/10-opcache.ini"

check_php_config "$prefix/bin/php-config"
echo "$flags_id" >"$marker"
build_phpredis
log "done"
echo "$prefix/bin/php-config"
