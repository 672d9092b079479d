# tokio_php on the official thread-safe PHP image, which ships libphp (--enable-embed --enable-zts
# --disable-zend-signals) and per-thread execution timers.
#
#   docker compose up                     # or: docker build -t tokio_php . && docker run -p 8080:8080 tokio_php
#
# The build stage compiles the binary the way `make build` does: scripts/build-tokio-php.sh with
# PHP_CONFIG, which checks that PHP first. The runtime stage has the extensions
# scripts/build-php.sh builds (tests/docker.rs keeps the two lists in step), runs with
# docker/php.ini as its php.ini, as www-data, and reports its health from the internal server.

ARG PHP_IMAGE=php:8.4-zts

FROM ${PHP_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C compiler for the SAPI shim and libclang for bindgen; the image has PHP's headers.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libclang-dev \
 && rm -rf /var/lib/apt/lists/*
# A current Rust toolchain (Debian's is older than the crates need).
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY ext ext
COPY src src
COPY scripts/build-php.sh scripts/build-tokio-php.sh scripts/
RUN PHP_CONFIG=/usr/local/bin/php-config scripts/build-tokio-php.sh \
 && cp target/release/tokio_php /usr/local/bin/tokio_php

FROM ${PHP_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The extensions scripts/build-php.sh builds in: the image builds most of them, the first list
# are the ones it does not, phpredis (sessions shared by replicas) comes from PECL. The step fails
# if any of the last list is missing afterwards. docker/php.ini has the session lock settings.
ARG EXTENSIONS_TO_INSTALL="bcmath exif mysqli pdo_mysql sockets"
ARG PHPREDIS_VERSION=6.2.0
ARG EXTENSIONS="bcmath ctype curl dom exif fileinfo filter iconv mbstring mysqli mysqlnd opcache openssl pdo_mysql pdo_sqlite redis session simplexml sockets sqlite3 tokenizer xml xmlreader xmlwriter zlib"
# hadolint ignore=SC2016,SC2086
RUN docker-php-ext-install -j"$(nproc)" $EXTENSIONS_TO_INSTALL \
 && pecl install "redis-${PHPREDIS_VERSION}" \
 && docker-php-ext-enable redis \
 && rm -rf /tmp/pear \
 && { php -m | grep -qi '^Zend OPcache$' || docker-php-ext-enable opcache; } \
 && php -r 'foreach (array_slice($argv, 1) as $e) { if (!extension_loaded($e === "opcache" ? "Zend OPcache" : $e)) { fwrite(STDERR, "PHP extension $e is missing\n"); exit(1); } }' $EXTENSIONS
COPY docker/php.ini ${PHP_INI_DIR}/php.ini
COPY --from=build /usr/local/bin/tokio_php /usr/local/bin/tokio_php
COPY www /var/www/html
# The internal server (/health, /metrics, /config) listens on its own port: publish it only where
# operators can reach it (docker-compose.yml binds it to the host's loopback).
ENV LISTEN_ADDR=0.0.0.0:8080 \
    INTERNAL_ADDR=0.0.0.0:9090 \
    DOCUMENT_ROOT=/var/www/html \
    ERROR_PAGES_DIR=/var/www/html/errors \
    PHP_WORKERS=0 \
    RUST_LOG=info
# www-data, by number so that a runtime can tell it is not root (Kubernetes runAsNonRoot).
USER 33:33
EXPOSE 8080 9090
# Healthy while /health answers 200: it answers 503 while draining or with no live PHP worker.
# The port follows INTERNAL_ADDR.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${INTERNAL_ADDR##*:}/health\""]
STOPSIGNAL SIGTERM
CMD ["tokio_php"]
