#!/usr/bin/env bash
# Side-by-side benchmark on loopback: tokio_php against nginx + php-fpm and Apache + mod_php
# (Debian's PHP 8.2, OPcache on) on six workloads, from a one-line script to WordPress's front
# page and a Symfony page (tokio_php both classic and in worker mode), each target loaded with
# wrk in turn, in interleaved rounds. docs/benchmarks.md says what each workload measures and
# how to read the numbers.
#
#   WORKLOADS="hello page page-compressed cpu wordpress symfony"   what to run (default: all)
#   ROUNDS=3       rounds; each runs every workload against every target once, in rotated order
#   DURATION=10s   wrk time per run              WARMUP=2s      wrk warm-up before each run
#   CONNECTIONS=50 THREADS=2                     WRK_TIMEOUT=10s  wrk's per-request timeout
#   WORKERS=N      tokio_php workers = php-fpm children = nginx workers (default: cores)
#   QUICK=1        ROUNDS=1 DURATION=1s (5s for WordPress) WARMUP=1s: proves the benchmark works,
#                  measures little
#   TOKIO_PHP_BIN=/path   measure this binary instead of building target/release/tokio_php
#   UPDATE_DOCS=1  copy the results into docs/benchmarks.md and docs/benchmarks.svg
#   RESULTS_DIR=/dir   where the results go (default: bench/results)
#   TOKIO_PORT=18181 STUB_PORT=18182 NGINX_PORT=18183 APACHE_PORT=18184
#   TOKIO_WP_PORT=18185 NGINX_WP_PORT=18186 APACHE_WP_PORT=18187
#   TOKIO_SF_PORT=18188 TOKIO_SF_WORKER_PORT=18189 NGINX_SF_PORT=18190   (symfony: tokio_php
#                  classic, tokio_php in worker mode, nginx; listened on only when it runs)
#
# tokio_php inherits the environment, so PHP_INI_* overrides reach it (and only it).
# Results go to bench/results/<UTC time>/ (raw.tsv, summary.tsv, summary.md, chart.svg,
# versions.txt), linked as bench/results/latest. A failed request makes the exit status non-zero.
set -euo pipefail
shopt -s inherit_errexit
# Apache's children run as www-data: everything the run creates must be readable by others.
umask 022
# Debian keeps the servers in sbin, which a user's PATH often lacks.
PATH=$PATH:/usr/sbin:/sbin

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

all_workloads=(hello page page-compressed cpu wordpress symfony)
if [ "${QUICK:-0}" = 1 ]; then
  rounds=1 duration=1s warmup=1s
else
  rounds=${ROUNDS:-3} duration=${DURATION:-10s} warmup=${WARMUP:-2s}
fi
workers=${WORKERS:-$(nproc)}
connections=${CONNECTIONS:-50}
threads=${THREADS:-2}
wrk_timeout=${WRK_TIMEOUT:-10s}

tokio_port=${TOKIO_PORT:-18181}
stub_port=${STUB_PORT:-18182}
nginx_port=${NGINX_PORT:-18183}
apache_port=${APACHE_PORT:-18184}
tokio_wp_port=${TOKIO_WP_PORT:-18185}
nginx_wp_port=${NGINX_WP_PORT:-18186}
apache_wp_port=${APACHE_WP_PORT:-18187}
tokio_sf_port=${TOKIO_SF_PORT:-18188}
tokio_sf_worker_port=${TOKIO_SF_WORKER_PORT:-18189}
nginx_sf_port=${NGINX_SF_PORT:-18190}

# What browsers send; nginx answers gzip, tokio_php picks its own encoding.
accept_encoding='gzip, deflate, br, zstd'

# Seconds in a wrk duration (10, 10s, 2m, 1h).
seconds() {
  case $1 in
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

for setting in "ROUNDS=$rounds" "WORKERS=$workers" "CONNECTIONS=$connections" "THREADS=$threads"; do
  [[ ${setting#*=} =~ ^[1-9][0-9]*$ ]] || die "${setting%%=*} must be a positive integer, not '${setting#*=}'"
done
for setting in "DURATION=$duration" "WARMUP=$warmup" "WRK_TIMEOUT=$wrk_timeout"; do
  [[ ${setting#*=} =~ ^[1-9][0-9]*[smh]?$ ]] || die "${setting%%=*} must be a duration like 10s or 1m, not '${setting#*=}'"
done

selected=" ${WORKLOADS:-${all_workloads[*]}} "
for w in $selected; do
  case " ${all_workloads[*]} " in
    *" $w "*) ;;
    *) die "unknown workload '$w' in WORKLOADS (known: ${all_workloads[*]})" ;;
  esac
done
workloads=()
for w in "${all_workloads[@]}"; do
  case $selected in *" $w "*) workloads+=("$w") ;; esac
done
[ ${#workloads[@]} -gt 0 ] || die "WORKLOADS selects nothing (known: ${all_workloads[*]})"
has_workload() { case " ${workloads[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

# --- targets ------------------------------------------------------------------------------------

targets_of() {
  case $1 in
    hello) echo "tokio_php stub nginx+php-fpm apache+mod_php" ;;
    page | cpu | wordpress) echo "tokio_php nginx+php-fpm apache+mod_php" ;;
    # Apache's Debian set-up compresses with mod_deflate, left out here: the question is how
    # tokio_php's compression compares with nginx's.
    page-compressed) echo "tokio_php nginx+php-fpm" ;;
    # The same application behind its classic front controller and in worker mode, against
    # the set-up Symfony documents for nginx + php-fpm; Apache is not part of this question.
    symfony) echo "tokio_php tokio_php-worker nginx+php-fpm" ;;
  esac
}

label_of() {
  case $1 in
    tokio_php) echo "tokio_php" ;;
    tokio_php-worker) echo "tokio_php (worker mode)" ;;
    stub) echo "tokio_php stub (no PHP)" ;;
    nginx+php-fpm) echo "nginx + php-fpm" ;;
    apache+mod_php) echo "Apache + mod_php" ;;
  esac
}

url_of() {
  local workload=$1 target=$2 port path
  if [ "$workload" = wordpress ]; then
    case $target in
      tokio_php) port=$tokio_wp_port ;;
      nginx+php-fpm) port=$nginx_wp_port ;;
      apache+mod_php) port=$apache_wp_port ;;
    esac
    path=/
  elif [ "$workload" = symfony ]; then
    case $target in
      tokio_php) port=$tokio_sf_port ;;
      tokio_php-worker) port=$tokio_sf_worker_port ;;
      nginx+php-fpm) port=$nginx_sf_port ;;
    esac
    # Routing, a controller and a Twig template; nothing in it changes from one request to
    # the next (no CSRF token, no date), so every target's page can be compared byte for byte.
    path=/hello/bench
  else
    case $target in
      tokio_php) port=$tokio_port ;;
      stub) port=$stub_port ;;
      nginx+php-fpm) port=$nginx_port ;;
      apache+mod_php) port=$apache_port ;;
    esac
    case $workload in
      hello) path=/hello.php ;;
      page | page-compressed) path=/page.php ;;
      cpu) path=/cpu.php ;;
    esac
  fi
  echo "http://127.0.0.1:$port$path"
}

# The request headers of a workload, as curl and wrk arguments.
set_headers() {
  headers=()
  if [ "$1" = page-compressed ]; then headers=(-H "Accept-Encoding: $accept_encoding"); fi
}

# --- peers --------------------------------------------------------------------------------------

# Debian packages for what is missing, one per line.
missing_packages() {
  command -v wrk >/dev/null || echo wrk
  command -v curl >/dev/null || echo curl
  command -v python3 >/dev/null || echo python3
  command -v nginx >/dev/null || echo nginx
  command -v php-fpm8.2 >/dev/null || echo php8.2-fpm
  [ -e /etc/php/8.2/mods-available/opcache.ini ] || echo php8.2-opcache
  command -v apache2 >/dev/null || echo apache2
  [ -e /usr/lib/apache2/modules/libphp8.2.so ] || echo libapache2-mod-php8.2
  if has_workload wordpress; then
    [ -e /etc/php/8.2/mods-available/mysqli.ini ] || echo php8.2-mysql
    command -v mariadbd >/dev/null || echo mariadb-server
    command -v mariadb-install-db >/dev/null || echo mariadb-server
    command -v mariadb-admin >/dev/null || echo mariadb-client
    command -v mariadb >/dev/null || echo mariadb-client
  fi
  if has_workload symfony; then
    # The libraries tests/fixtures/symfony/bootstrap.php loads, by the autoload.php each
    # package installs under /usr/share/php (tests/symfony.rs checks the same files).
    local package autoload
    while read -r package autoload; do
      [ -f "/usr/share/php/$autoload" ] || echo "$package"
    done <<'EOF'
php-symfony-framework-bundle Symfony/Bundle/FrameworkBundle/autoload.php
php-symfony-twig-bundle Symfony/Bundle/TwigBundle/autoload.php
php-twig Twig/autoload.php
php-symfony-form Symfony/Component/Form/autoload.php
php-symfony-security-csrf Symfony/Component/Security/Csrf/autoload.php
php-symfony-validator Symfony/Component/Validator/autoload.php
EOF
  fi
}

install_peers() {
  local missing
  missing=$(missing_packages | sort -u | paste -sd ' ')
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing peers: $missing; scripts/install-deps.sh installs them (or: sudo apt-get install $missing)"
  fi
  log "installing $missing"
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  missing=$(missing_packages | sort -u | paste -sd ' ')
  [ -z "$missing" ] || die "still missing after apt-get install: $missing; see scripts/install-deps.sh"
}

run=
pids=()
names=()

# A process that exists and is not a zombie.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# A process group with a member that is not a zombie.
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# Every peer runs in its own session, so its children (php-fpm's pool, Apache's prefork children,
# nginx's workers) are stopped with it.
stop_all() {
  local pid _
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    local running=0
    for pid in "${pids[@]}"; do
      if group_alive "$pid"; then running=1; fi
    done
    [ "$running" -eq 1 ] || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  stop_all
  if [ "$status" -ne 0 ] && [ -n "$run" ] && [ -d "$run/logs" ]; then
    local file name
    # The servers' logs, and Symfony's own (its errors go to the log in its var directory).
    for file in "$run"/logs/* "$run"/symfony/*/log/*.log; do
      [ -s "$file" ] || continue
      name=${file#"$run"/}
      echo "bench: --- last lines of ${name#logs/} ---" >&2
      tail -n 15 "$file" >&2
    done
  fi
  [ -z "$run" ] || rm -rf "$run"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a peer in its own session, its output in logs/NAME.log.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$run/logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# Waits until NAME listens on PORT, at most SECONDS (default 20).
wait_for_port() {
  local port=$1 name=$2 limit=${3:-20} pid=${pids[-1]} i
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$name" ]; then pid=${pids[$i]}; fi
  done
  for _ in $(seq 1 $((limit * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    alive "$pid" || die "$name exited during start-up (its log follows)"
    sleep 0.1
  done
  die "$name does not listen on 127.0.0.1:$port after $limit s"
}

render() {
  sed -e "s|@RUN@|$run|g" -e "s|@WORKERS@|$workers|g" -e "s|@ROOT@|$www|g" \
      -e "s|@WP_ROOT@|$wp_root|g" -e "s|@NGINX_PORT@|$nginx_port|g" \
      -e "s|@NGINX_WP_PORT@|$nginx_wp_port|g" -e "s|@APACHE_PORT@|$apache_port|g" \
      -e "s|@APACHE_WP_PORT@|$apache_wp_port|g" -e "s|@APACHE_USER@|$apache_user|g" \
      -e "s|@APACHE_GROUP@|$apache_group|g" -e "s|@NGINX_SF_PORT@|$nginx_sf_port|g" \
      -e "s|@SF_ROOT@|$sf_root|g" -e "s|@SF_VAR_DIR@|$sf_var|g" "$1" >"$2"
}

# tokio_php with the caller's environment (PHP_INI_*, …) and the benchmark's settings.
start_tokio() {
  local name=$1 port=$2 root=$3
  shift 3
  start "$name" env LISTEN_ADDR="127.0.0.1:$port" DOCUMENT_ROOT="$root" PHP_WORKERS="$workers" \
    RUST_LOG="${RUST_LOG:-warn}" INTERNAL_ADDR= TRY_FILES= USE_STUB=0 "$@" "$binary"
}

# The readable text of an HTML answer, for error messages.
page_text() {
  sed -e '/<style/,/<\/style>/d' -e '/<script/,/<\/script>/d' -e 's/<[^>]*>//g' "$1" \
    | grep -v '^[[:space:]]*$' | head -c 800 || true
}

# --- MariaDB and WordPress ----------------------------------------------------------------------

db_socket=
db_name=wordpress
db_user=wordpress
db_password=tokio_php-bench-password
wp_version=

sql() {
  timeout 30 mariadb --no-defaults --socket="$db_socket" --user=root --batch --skip-column-names \
    -e "$1"
}

# A private server on a unix socket in the run directory, as tests/common/mariadb.rs starts one.
start_mariadb() {
  # Small and without fsync per commit: a throwaway server; the front page only reads.
  local tuning=(--innodb-buffer-pool-size=64M --innodb-log-file-size=16M
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --skip-name-resolve
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci)
  local as_root=()
  # mariadbd refuses to run as root unless told to.
  if [ "$(id -u)" -eq 0 ]; then as_root=(--user=root); fi
  mkdir -p "$run/mysql-tmp"
  log "starting MariaDB"
  timeout 120 mariadb-install-db --no-defaults --datadir="$run/mysql" \
    --auth-root-authentication-method=normal --skip-test-db "${tuning[@]}" "${as_root[@]}" \
    >"$run/logs/mariadb-install-db.log" 2>&1 || die "mariadb-install-db failed"
  start mariadbd mariadbd --no-defaults --datadir="$run/mysql" --socket="$db_socket" \
    --skip-networking --pid-file="$run/mariadbd.pid" --log-error="$run/logs/mariadbd.log" \
    --tmpdir="$run/mysql-tmp" "${tuning[@]}" "${as_root[@]}"
  local pid=${pids[-1]} ready=0
  for _ in $(seq 1 300); do
    alive "$pid" || die "mariadbd exited during start-up"
    if [ -S "$db_socket" ] && timeout 5 mariadb-admin --no-defaults --socket="$db_socket" \
        --user=root --connect-timeout=2 ping >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [ "$ready" -eq 1 ] || die "mariadbd did not answer a ping within 30 s"
  sql "CREATE DATABASE \`$db_name\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
       CREATE USER '$db_user'@'localhost' IDENTIFIED BY '$db_password';
       GRANT ALL PRIVILEGES ON \`$db_name\`.* TO '$db_user'@'localhost';" \
    || die "cannot create the WordPress database"
}

# Copies a package's tree. Symlinks pointing inside the extracted package become copies; the rest
# point into other packages (getid3, underscore) or /etc and are dropped: the front page needs
# none of them (tests/wordpress.rs does the same).
copy_package_tree() {
  local src=$1 dst=$2 package=$3 link target
  mkdir -p "$dst"
  cp -a "$src/." "$dst/"
  while IFS= read -r -d '' link; do
    target=$(readlink -f "$src/${link#"$dst"/}" 2>/dev/null) || target=
    if [ -n "$target" ] && [[ $target == "$package"/* ]] && [ -f "$target" ]; then
      cp --remove-destination "$target" "$link"
    else
      rm -f "$link"
    fi
  done < <(find "$dst" -type l -print0)
}

# Debian's WordPress 6.1 and its default theme, copied into the run directory with our
# wp-config.php.
prepare_wordpress() {
  local roots wordpress theme
  log "fetching WordPress (scripts/fetch-debian-app.sh)"
  roots=$(timeout 600 "$repo/scripts/fetch-debian-app.sh" wordpress wordpress-theme-twentytwentythree) \
    || die "scripts/fetch-debian-app.sh wordpress wordpress-theme-twentytwentythree failed"
  wordpress=$(sed -n 1p <<<"$roots")
  theme=$(sed -n 2p <<<"$roots")
  [ -f "$wordpress/usr/share/wordpress/wp-settings.php" ] || die "$wordpress holds no WordPress"
  [ -f "$theme/usr/share/wordpress/wp-content/themes/twentytwentythree/style.css" ] \
    || die "$theme holds no twentytwentythree theme"
  wp_version=$(basename "$wordpress")
  wp_version=${wp_version#wordpress_}
  copy_package_tree "$wordpress/usr/share/wordpress" "$wp_root" "$wordpress"
  copy_package_tree "$theme/usr/share/wordpress/wp-content/themes/twentytwentythree" \
    "$wp_root/wp-content/themes/twentytwentythree" "$theme"

  local salts='' key
  for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT \
      LOGGED_IN_SALT NONCE_SALT; do
    salts+="define( '$key', 'tokio_php benchmark $key, fixed, not secret' );"$'\n'
  done
  # Replaces Debian's wp-config.php, which reads /etc/wordpress/config-<host>.php.
  cat >"$wp_root/wp-config.php" <<EOF
<?php
// Written by bench/compare.sh.
define( 'DB_NAME', '$db_name' );
define( 'DB_USER', '$db_user' );
define( 'DB_PASSWORD', '$db_password' );
define( 'DB_HOST', 'localhost:$db_socket' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );

$salts
\$table_prefix = 'wp_';

// Every peer listens on its own port: the site is wherever it is asked for, so no peer gets
// canonical redirects to another one's address.
define( 'WP_HOME', 'http://' . ( \$_SERVER['HTTP_HOST'] ?? '127.0.0.1' ) );
define( 'WP_SITEURL', 'http://' . ( \$_SERVER['HTTP_HOST'] ?? '127.0.0.1' ) );
define( 'WP_DEFAULT_THEME', 'twentytwentythree' );
define( 'WP_DEBUG', false );
// No work behind the visitors' backs and nothing from the internet (update checks).
define( 'DISABLE_WP_CRON', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );

if ( ! defined( 'ABSPATH' ) ) {
	define( 'ABSPATH', __DIR__ . '/' );
}

require_once ABSPATH . 'wp-settings.php';
EOF
  mkdir -p "$wp_root/wp-content/mu-plugins"
  cat >"$wp_root/wp-content/mu-plugins/bench.php" <<'EOF'
<?php
/*
 * Plugin Name: tokio_php benchmark
 * Description: The same links on every peer: WordPress only believes Apache, nginx and IIS can
 *              rewrite URLs, and tokio_php's TRY_FILES does too. No mail leaves the benchmark.
 */
add_filter( 'got_url_rewrite', '__return_true' );
add_filter( 'pre_wp_mail', '__return_false' );
EOF
}

# The web installer through tokio_php (as tests/wordpress.rs drives it), then ten older posts so
# the front page shows real content under the "Hello world!" post.
install_wordpress() {
  local base="http://127.0.0.1:$tokio_wp_port" out="$run/wp-install.html" code
  log "installing WordPress $wp_version through tokio_php"
  code=$(curl -sS --max-time 120 -o "$out" -w '%{http_code}' \
    --data-urlencode 'weblog_title=tokio_php benchmark' \
    --data-urlencode 'user_name=admin' \
    --data-urlencode 'admin_password=tokio_php-bench-admin' \
    --data-urlencode 'admin_password2=tokio_php-bench-admin' \
    --data-urlencode 'pw_weak=1' \
    --data-urlencode 'admin_email=admin@example.com' \
    --data-urlencode 'blog_public=0' \
    --data-urlencode 'language=' \
    --data-urlencode 'Submit=Install WordPress' \
    "$base/wp-admin/install.php?step=2") || die "POST $base/wp-admin/install.php?step=2 failed"
  if [ "$code" != 200 ] || ! grep -q 'WordPress has been installed' "$out"; then
    die "the WordPress installer answered $code: $(page_text "$out")"
  fi

  cat >"$wp_root/bench-seed.php" <<'EOF'
<?php
// Dropped in by bench/compare.sh, called once and deleted.
require __DIR__ . '/wp-load.php';
$paragraphs = [
    'Requests arrive, scripts run, pages leave: the work a PHP server does all day long, measured here against the servers most sites run.',
    'Each peer serves the same files from the same database, so the only difference left is how the server runs PHP and moves bytes.',
    'The front page runs the block theme, the query loop and every filter WordPress applies to a post, which makes it a realistic load.',
    'Numbers from one machine say little on their own; the ratio between servers measured side by side on that machine says more.',
];
for ( $i = 1; $i <= 10; $i++ ) {
    $content = '';
    foreach ( $paragraphs as $n => $text ) {
        $content .= "<!-- wp:paragraph -->\n<p>Post $i, paragraph " . ( $n + 1 ) . ": $text</p>\n<!-- /wp:paragraph -->\n\n";
    }
    $id = wp_insert_post( [
        'post_title'   => "Benchmark post $i",
        'post_content' => $content,
        'post_status'  => 'publish',
        'post_author'  => 1,
        // Older than "Hello world!", which stays first on the front page.
        'post_date'    => sprintf( '2023-01-%02d 12:00:00', $i ),
    ], true );
    if ( is_wp_error( $id ) ) {
        http_response_code( 500 );
        exit( $id->get_error_message() );
    }
}
echo "seeded\n";
EOF
  code=$(curl -sS --max-time 120 -o "$out" -w '%{http_code}' "$base/bench-seed.php") \
    || die "GET $base/bench-seed.php failed"
  rm -f "$wp_root/bench-seed.php"
  if [ "$code" != 200 ] || [ "$(cat "$out")" != seeded ]; then
    die "creating the posts failed ($code): $(page_text "$out")"
  fi
}

# --- checks -------------------------------------------------------------------------------------

# One request as the workload makes them; sets code, bytes and encoding, the body in probe.body.
probe() {
  local url
  url=$(url_of "$1" "$2")
  set_headers "$1"
  code=$(curl -sS --max-time 120 "${headers[@]}" -D "$run/probe.headers" -o "$run/probe.body" \
    -w '%{http_code}' "$url") || die "$(label_of "$2") does not answer $url"
  bytes=$(wc -c <"$run/probe.body")
  encoding=$(tr -d '\r' <"$run/probe.headers" \
    | awk 'tolower($1) == "content-encoding:" { e = tolower($2) } END { print e }')
  encoding=${encoding:-identity}
}

# How many requests the kernel that answers BASE/kernel has handled (the fixture's KernelStats).
kernel_handled() {
  local answer handled
  answer=$(curl -sS --max-time 60 "$1/kernel") || die "no answer from $1/kernel"
  handled=$(sed -n 's/.*"handled":\([0-9][0-9]*\).*/\1/p' <<<"$answer")
  [ -n "$handled" ] || die "$1/kernel answers '$(head -c 200 <<<"$answer")'"
  echo "$handled"
}

# The symfony targets run what their names say: behind a front controller every request boots
# a kernel of its own (each has handled one request); in worker mode the kernels outlive their
# requests, so of WORKERS + 1 requests on WORKERS threads one meets a kernel that has handled
# more than one.
check_symfony_kernels() {
  local target=$1 base=$2 most=0 handled
  for _ in $(seq 1 $((workers + 1))); do
    handled=$(kernel_handled "$base")
    if [ "$handled" -gt "$most" ]; then most=$handled; fi
  done
  if [ "$target" = tokio_php-worker ]; then
    [ "$most" -gt 1 ] || die "$(label_of "$target") boots a kernel for every request: is WORKER_SCRIPT in effect?"
  else
    [ "$most" -eq 1 ] || die "$(label_of "$target")'s kernel outlives its request (it has handled $most)"
  fi
}

# Every target answers the workload correctly before it is loaded; records what it sends.
check_workload() {
  local workload=$1 target label url
  for target in $(targets_of "$workload"); do
    label=$(label_of "$target")
    url=$(url_of "$workload" "$target")
    probe "$workload" "$target"
    [ "$code" = 200 ] || die "$label answers $code to $url: $(page_text "$run/probe.body")"
    case $workload in
      hello)
        if [ "$target" != stub ] && [ "$(cat "$run/probe.body")" != "Hello, World!" ]; then
          die "$label answers hello.php with '$(head -c 200 "$run/probe.body")'"
        fi
        ;;
      page | cpu)
        # Byte-identical output everywhere: the same work is measured.
        if [ -f "$run/$workload.reference" ]; then
          cmp -s "$run/$workload.reference" "$run/probe.body" \
            || die "$label's $workload output differs from $(label_of tokio_php)'s"
        else
          cp "$run/probe.body" "$run/$workload.reference"
          if [ "$workload" = page ]; then log "page.php: $bytes bytes of HTML"; fi
        fi
        ;;
      page-compressed)
        log "page.php with Accept-Encoding '$accept_encoding': $label answers $bytes bytes, Content-Encoding $encoding"
        ;;
      wordpress)
        grep -q 'Hello world!' "$run/probe.body" \
          || die "$label's WordPress front page lacks the 'Hello world!' post: $(page_text "$run/probe.body")"
        # The same page everywhere but for the port in its links.
        local port=${url#http://127.0.0.1:}
        port=${port%%/*}
        sed "s/127\.0\.0\.1:$port/127.0.0.1:PORT/g" "$run/probe.body" >"$run/probe.normalized"
        if [ -f "$run/$workload.reference" ]; then
          diff "$run/$workload.reference" "$run/probe.normalized" >"$run/probe.diff" \
            || die "$label's WordPress front page differs from $(label_of tokio_php)'s: $(head -c 800 "$run/probe.diff")"
        else
          cp "$run/probe.normalized" "$run/$workload.reference"
        fi
        ;;
      symfony)
        grep -q '<h1>Hello bench</h1>' "$run/probe.body" \
          || die "$label's Symfony page lacks 'Hello bench': $(page_text "$run/probe.body")"
        if [ -f "$run/$workload.reference" ]; then
          diff "$run/$workload.reference" "$run/probe.body" >"$run/probe.diff" \
            || die "$label's Symfony page differs from $(label_of tokio_php)'s: $(head -c 800 "$run/probe.diff")"
        else
          cp "$run/probe.body" "$run/$workload.reference"
        fi
        check_symfony_kernels "$target" "${url%/hello/bench}"
        ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$workload" "$target" "$bytes" "$encoding" >>"$run/responses.tsv"
  done
}

# What PHP answers on a peer (bench/www/peer.php).
peer_php() {
  curl -sS --max-time 30 "http://127.0.0.1:$1/peer.php" || die "no answer from 127.0.0.1:$1/peer.php"
}

# --- measuring ----------------------------------------------------------------------------------

run_wrk() {
  local time=$1 url=$2
  shift 2
  timeout --kill-after=5 "$(($(seconds "$time") + $(seconds "$wrk_timeout") + 30))" \
    wrk -t"$threads" -c"$connections" -d"$time" --timeout "$wrk_timeout" --latency "$@" "$url"
}

# CPU time (clock ticks) used so far by every process of every peer.
peer_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v groups=" ${pids[*]} " '
    # After "pid (comm) ": state ppid pgrp ... with utime and stime the 12th and 13th.
    { sub(/^.*\) /, ""); if (index(groups, " " $3 " ")) ticks += $12 + $13 }
    END { print ticks + 0 }'
}

# Waits (at most 30 s) until the peers are idle. wrk leaves requests behind when it stops
# (WordPress's take a second or more), and the servers keep running them after the client is
# gone: without this the next run would share the CPU with the previous one's leftovers.
settle() {
  local before after
  after=$(peer_ticks)
  for _ in $(seq 1 150); do
    before=$after
    sleep 0.2
    after=$(peer_ticks)
    # Under 10% of one core over 0.2 s: the idle peers' own housekeeping.
    # (A peer's process that exits takes its ticks with it: not idle yet.)
    if [ $((after - before)) -ge 0 ] && [ $((after - before)) -le 2 ]; then return 0; fi
  done
  log "warning: the peers still use CPU 30 s after the last run"
}

problems=()

# The measuring time of one run. In QUICK mode a WordPress page can take longer than the 1 s
# run on a loaded machine (50 connections queue on 2 workers), so that run gets 5 s and
# completes requests however busy the machine is.
duration_of() {
  if [ "${QUICK:-0}" = 1 ] && [ "$1" = wordpress ]; then echo 5s; else echo "$duration"; fi
}

# One wrk run: a line in raw.tsv and in the log.
measure() {
  local round=$1 workload=$2 target=$3 url out label
  url=$(url_of "$workload" "$target")
  label=$(label_of "$target")
  set_headers "$workload"
  settle
  run_wrk "$warmup" "$url" "${headers[@]}" >/dev/null || die "wrk (warm-up) against $label failed"
  settle
  out=$(run_wrk "$(duration_of "$workload")" "$url" "${headers[@]}") || die "wrk against $label failed: $out"
  local rps p50 p99 requests bad sock
  read -r rps p50 p99 requests bad sock < <(awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v
    }
    /Requests\/sec/ { rps = $2 }
    / requests in / { requests = $1 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses/ { bad = $NF }
    /Socket errors/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
    END { printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, requests, bad, sock }' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$workload" "$target" "$rps" "$p50" \
    "$p99" "$requests" "$bad" "$sock" >>"$results/raw.tsv"
  local note=
  if [ "$bad" -gt 0 ] || [ "$sock" -gt 0 ] || [ "$requests" -eq 0 ]; then
    note="$bad non-2xx/3xx, $sock socket errors, $requests requests"
    problems+=("round $round, $workload, $label: $note")
    note=" — $note"
  fi
  log "round $round/$rounds  $workload  $label: $rps req/s, p50 $p50 ms, p99 $p99 ms$note"
}

# --- reporting ----------------------------------------------------------------------------------

# The command that repeats this run.
command_line() {
  local parts=() var
  if [ "${workloads[*]}" != "${all_workloads[*]}" ]; then parts+=("WORKLOADS='${workloads[*]}'"); fi
  parts+=("ROUNDS=$rounds" "DURATION=$duration" "WARMUP=$warmup" "WRK_TIMEOUT=$wrk_timeout"
    "WORKERS=$workers" "THREADS=$threads" "CONNECTIONS=$connections")
  while IFS= read -r var; do
    parts+=("$(printf '%s=%q' "$var" "${!var}")")
  done < <(compgen -e | grep '^PHP_INI_' | sort)
  if [ -n "${TOKIO_PHP_BIN:-}" ]; then parts+=("TOKIO_PHP_BIN=$(printf '%q' "$TOKIO_PHP_BIN")"); fi
  echo "${parts[*]} bench/compare.sh"
}

# The installed version of a Debian package.
package_version() {
  # shellcheck disable=SC2016 # dpkg-query's field, not the shell's
  dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "unknown"
}

write_versions() {
  local describe our_php libphp php_config wrk_version cpu
  describe=$(git -C "$repo" describe --always --dirty 2>/dev/null) || describe=unknown
  # (No early exit in these pipelines: a writer killed by SIGPIPE fails them under pipefail.)
  libphp=$(ldd "$binary" 2>/dev/null | awk '$1 ~ /^libphp/ && !seen++ { print $3 }') || libphp=
  php_config=${libphp:+$(dirname "$(dirname "$libphp")")/bin/php-config}
  if [ -n "$php_config" ] && [ -x "$php_config" ]; then
    our_php="$("$php_config" --version) ($php_config)"
  else
    our_php="no php-config next to the binary's libphp"
  fi
  wrk_version=$(wrk -v 2>&1 | sed -n 1p) || true
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: $(command_line)"
    if [ -n "${TOKIO_PHP_BIN:-}" ]; then
      echo "tokio_php: $binary ($("$binary" --version)), work tree at $describe"
    else
      echo "tokio_php: $describe ($("$binary" --version))"
    fi
    echo "tokio_php's PHP: $our_php"
    echo "PHP in tokio_php: $php_tokio"
    echo "Debian PHP: $(php-fpm8.2 -v | sed -n 1p)"
    echo "PHP in php-fpm: $php_fpm"
    echo "PHP in Apache: $php_apache"
    echo "nginx: $(nginx -v 2>&1)"
    echo "apache2: $(apache2 -v | sed -n 1p)"
    if has_workload wordpress; then
      echo "mariadbd: $(mariadbd --version)"
      echo "wordpress: $wp_version (theme twentytwentythree)"
    fi
    if has_workload symfony; then
      echo "symfony: $(package_version php-symfony-framework-bundle) (Debian's php-symfony-* packages), twig $(package_version php-twig); tests/fixtures/symfony"
    fi
    echo "wrk: $wrk_version"
    echo "kernel: $(uname -srm)"
    echo "cpu: $cpu, $(nproc) cores shared by the servers and wrk"
    echo "settings: WORKERS=$workers THREADS=$threads CONNECTIONS=$connections DURATION=$duration ROUNDS=$rounds WARMUP=$warmup WRK_TIMEOUT=$wrk_timeout"
  } >"$results/versions.txt"
}

# Medians over rounds, worst p99, ratios to the peers, errors and response sizes.
summarize() {
  awk -F'\t' -v OFS='\t' -v responses="$run/responses.tsv" '
    function median(list,    n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function label(t) {
      if (t == "stub") return "tokio_php stub (no PHP)"
      if (t == "tokio_php-worker") return "tokio_php (worker mode)"
      if (t == "nginx+php-fpm") return "nginx + php-fpm"
      if (t == "apache+mod_php") return "Apache + mod_php"
      return t
    }
    BEGIN {
      while ((getline line < responses) > 0) { split(line, f, "\t"); size[f[1], f[2]] = f[3]; enc[f[1], f[2]] = f[4] }
    }
    FNR == 1 { next }
    {
      k = $2 SUBSEP $3
      if (!(k in n)) { order[++rows] = k; wl[k] = $2; tg[k] = $3 }
      n[k]++; rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5
      if (!(k in p99) || $6 + 0 > p99[k]) p99[k] = $6 + 0
      errors[k] += $8 + $9
    }
    END {
      print "workload", "target", "label", "rounds", "rps_median", "p50_ms_median", "p99_ms_worst", "vs_nginx", "vs_apache", "errors", "bytes", "encoding"
      for (i = 1; i <= rows; i++) { k = order[i]; med[k] = median(rps[k]) }
      for (i = 1; i <= rows; i++) {
        k = order[i]; w = wl[k]
        ng = (w SUBSEP "nginx+php-fpm") in med ? med[w, "nginx+php-fpm"] : 0
        ap = (w SUBSEP "apache+mod_php") in med ? med[w, "apache+mod_php"] : 0
        print w, tg[k], label(tg[k]), n[k], sprintf("%.0f", med[k]), sprintf("%.2f", median(p50[k])),
          sprintf("%.2f", p99[k]), (ng > 0 ? sprintf("%.2f", med[k] / ng) : "-"),
          (ap > 0 ? sprintf("%.2f", med[k] / ap) : "-"), errors[k], size[k], enc[k]
      }
    }' "$results/raw.tsv" >"$results/summary.tsv"
}

print_table() {
  awk -F'\t' 'NR == 1 {
      printf "%-16s %-24s %10s %9s %9s %9s %9s %7s  %s\n", "workload", "target", "req/s", "p50 ms", "p99 ms", "vs nginx", "vs apache", "errors", "response"
      next
    }
    {
      response = $11 " B" ($12 != "identity" ? " " $12 : "")
      printf "%-16s %-24s %10s %9s %9s %9s %9s %7s  %s\n", $1, $3, $5, $6, $7,
        ($8 == "-" ? "-" : $8 "x"), ($9 == "-" ? "-" : $9 "x"), $10, response
    }' "$results/summary.tsv"
}

write_markdown() {
  {
    echo "| Workload | Server | req/s (median) | p50 ms (median) | p99 ms (worst) | ÷ nginx + php-fpm | ÷ Apache + mod_php | Response |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    awk -F'\t' 'NR > 1 {
        response = $11 " B" ($12 != "identity" ? " (" $12 ")" : "")
        name = $2 ~ /^tokio_php(-worker)?$/ ? "**" $3 "**" : $3
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, name, $5, $6, $7,
          ($8 == "-" ? "–" : $8 "×"), ($9 == "-" ? "–" : $9 "×"), response
      }' "$results/summary.tsv"
    echo
    echo "Median of $rounds round(s) of \`wrk -t$threads -c$connections -d$duration --latency\` per workload and server (p99: the worst round); ÷ columns divide the row's req/s by the peer's."
  } >"$results/summary.md"
}

update_docs() {
  local doc=$repo/docs/benchmarks.md block
  if ! grep -q '<!-- bench:results:begin -->' "$doc" || ! grep -q '<!-- bench:results:end -->' "$doc"; then
    die "$doc lacks the <!-- bench:results:begin/end --> markers"
  fi
  block=$run/docs-block.md
  {
    cat "$results/summary.md"
    echo
    echo "Command: \`$(command_line)\`"
    echo
    echo '```text'
    grep -v '^command: ' "$results/versions.txt"
    echo '```'
  } >"$block"
  awk -v block="$block" '
    /<!-- bench:results:begin -->/ { print; while ((getline line < block) > 0) print line; skip = 1; next }
    /<!-- bench:results:end -->/ { skip = 0 }
    !skip { print }' "$doc" >"$run/benchmarks.md"
  cat "$run/benchmarks.md" >"$doc"
  cp "$results/chart.svg" "$repo/docs/benchmarks.svg"
  log "updated docs/benchmarks.md and docs/benchmarks.svg"
}

# --- the run ------------------------------------------------------------------------------------

started=$SECONDS
install_peers
# A port something else answers on would be measured in place of a peer.
ports=("$tokio_port" "$stub_port" "$nginx_port" "$apache_port" "$tokio_wp_port" "$nginx_wp_port"
  "$apache_wp_port")
if has_workload symfony; then ports+=("$tokio_sf_port" "$tokio_sf_worker_port" "$nginx_sf_port"); fi
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use; free it or choose other ports (TOKIO_PORT, … NGINX_SF_PORT)"
  fi
done
if [ -n "${TOKIO_PHP_BIN:-}" ]; then
  [ -x "$TOKIO_PHP_BIN" ] || die "TOKIO_PHP_BIN=$TOKIO_PHP_BIN is not an executable"
  binary=$(cd "$(dirname "$TOKIO_PHP_BIN")" && pwd)/$(basename "$TOKIO_PHP_BIN")
else
  log "building tokio_php (scripts/build-tokio-php.sh)"
  binary=$("$repo/scripts/build-tokio-php.sh") || die "scripts/build-tokio-php.sh failed"
fi

run=$(mktemp -d /tmp/tokio_php_bench.XXXXXX)
chmod 0755 "$run"
mkdir -p "$run/logs" "$run/nginx/servers" "$run/apache2" "$run/wordpress" "$run/symfony"
# Everything served is a copy in the run directory, which Apache's user can read wherever the
# repository is.
www=$run/www
wp_root=$run/wordpress
db_socket=$run/mysql.sock
# The Symfony application is served where it is (nothing there is written, and no Apache child
# needs to read it); each target compiles its container and templates into its own directory
# under $sf_var (TOKIO_PHP_SYMFONY_VAR_DIR, read by the fixture's Kernel).
sf_root=$repo/tests/fixtures/symfony/public
sf_var=$run/symfony
cp -R "$here/www" "$www"
chmod -R a+rX "$www"
if [ "$(id -u)" -eq 0 ]; then
  apache_user=www-data apache_group=www-data
else
  apache_user="#$(id -u)" apache_group="#$(id -g)"
fi

if has_workload wordpress; then
  prepare_wordpress
  start_mariadb
fi

log "starting peers ($workers PHP workers each; Apache: Debian's prefork settings)"
start_tokio tokio_php "$tokio_port" "$www"
# The same root, so the stub sits behind the same routing and only PHP is missing.
start_tokio stub "$stub_port" "$www" USE_STUB=1
if has_workload wordpress; then
  # shellcheck disable=SC2016 # nginx's variables, for tokio_php to expand
  start_tokio tokio_php-wordpress "$tokio_wp_port" "$wp_root" TRY_FILES='$uri $uri/ /index.php?$args'
fi
if has_workload symfony; then
  # Classic: index.php as the front controller, every path that is not a file goes to it (the
  # Symfony recipe's try_files, with index.php the only script reachable). Worker mode: every
  # request that is not a static file goes to public/worker.php's loop.
  start_tokio tokio_php-symfony "$tokio_sf_port" "$sf_root" INDEX_FILE=index.php \
    TOKIO_PHP_SYMFONY_VAR_DIR="$sf_var/tokio_php"
  start_tokio tokio_php-symfony-worker "$tokio_sf_worker_port" "$sf_root" INDEX_FILE=index.php \
    WORKER_SCRIPT="$sf_root/worker.php" WORKER_MATCH='*' \
    TOKIO_PHP_SYMFONY_VAR_DIR="$sf_var/tokio_php-worker"
fi
render "$here/php-fpm.conf.in" "$run/php-fpm.conf"
if has_workload symfony; then
  # A pool of its own for the Symfony server, only when it runs.
  render "$here/php-fpm-symfony.conf.in" "$run/php-fpm-symfony.conf"
  cat "$run/php-fpm-symfony.conf" >>"$run/php-fpm.conf"
  render "$here/nginx-symfony.conf.in" "$run/nginx/servers/symfony.conf"
fi
start php-fpm php-fpm8.2 -R -F -y "$run/php-fpm.conf"
render "$here/nginx.conf.in" "$run/nginx.conf"
start nginx nginx -c "$run/nginx.conf"
render "$here/apache2.conf.in" "$run/apache2.conf"
start apache2 apache2 -f "$run/apache2.conf" -DFOREGROUND

wait_for_port "$tokio_port" tokio_php
wait_for_port "$stub_port" stub
wait_for_port "$nginx_port" nginx
wait_for_port "$apache_port" apache2
if has_workload wordpress; then
  wait_for_port "$tokio_wp_port" tokio_php-wordpress
  wait_for_port "$nginx_wp_port" nginx
  wait_for_port "$apache_wp_port" apache2
fi
if has_workload symfony; then
  # Worker mode listens once every thread has booted the kernel, which compiles the container
  # first: that may take a while on a busy machine.
  wait_for_port "$tokio_sf_port" tokio_php-symfony
  wait_for_port "$tokio_sf_worker_port" tokio_php-symfony-worker 60
  wait_for_port "$nginx_sf_port" nginx
fi

php_tokio=$(peer_php "$tokio_port")
php_fpm=$(peer_php "$nginx_port")
php_apache=$(peer_php "$apache_port")
for answer in "php-fpm: $php_fpm" "Apache: $php_apache"; do
  [[ $answer == *"opcache on"* ]] || die "OPcache is off in ${answer%%:*} (${answer#*: }): install php8.2-opcache"
done

if has_workload wordpress; then install_wordpress; fi
: >"$run/responses.tsv"
for workload in "${workloads[@]}"; do check_workload "$workload"; done

results_root=${RESULTS_DIR:-$here/results}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$results_root/$stamp
mkdir -p "$results"
printf 'round\tworkload\ttarget\trps\tp50_ms\tp99_ms\trequests\tnon_2xx_3xx\tsocket_errors\n' \
  >"$results/raw.tsv"
write_versions

log "wrk -t$threads -c$connections -d$duration --latency after a $warmup warm-up, $rounds round(s), one target at a time"
for round in $(seq 1 "$rounds"); do
  for workload in "${workloads[@]}"; do
    read -r -a targets <<<"$(targets_of "$workload")"
    # A different target goes first in each round, so none always runs on a machine that has
    # just cooled down or warmed up.
    for i in "${!targets[@]}"; do
      measure "$round" "$workload" "${targets[$(((i + round - 1) % ${#targets[@]}))]}"
    done
  done
done

summarize
write_markdown
python3 "$here/chart.py" "$results/summary.tsv" "$results/chart.svg" \
  "wrk -t$threads -c$connections -d$duration, $rounds round(s), $workers PHP workers, $(nproc) cores shared with wrk; bars scaled per workload"
ln -sfn "$stamp" "$results_root/latest"

echo
cat "$results/versions.txt"
echo
print_table
echo
echo "results: $results ($((SECONDS - started)) s)"

if [ "${UPDATE_DOCS:-0}" = 1 ]; then update_docs; fi

if [ ${#problems[@]} -gt 0 ]; then
  log "failed requests — a benchmark of errors is not a benchmark:"
  for problem in "${problems[@]}"; do log "  $problem"; done
  exit 1
fi
