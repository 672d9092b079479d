#!/usr/bin/env bash
# Builds the tokio_php binary (release) against a thread-safe PHP and prints its path.
#
# The PHP is whatever scripts/build-php.sh answers: the one it builds and caches, or a user's own
# through PHP_CONFIG=/path/to/php-config, which it checks first (ZTS, libphp, PHP 8.2-8.4).
# `make build` runs this with the cached PHP and the Dockerfile's build stage with the official
# image's (`PHP_CONFIG=/usr/local/bin/php-config`): one route, so what the image builds is what
# `make test` builds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

PHP_CONFIG=$("$here/build-php.sh" | tail -n 1)
export PHP_CONFIG
cargo build --release --locked --bin tokio_php --manifest-path "$repo/Cargo.toml" >&2
echo "${CARGO_TARGET_DIR:-$repo/target}/release/tokio_php"
