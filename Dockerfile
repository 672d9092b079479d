# tokio_php on the official thread-safe PHP image, which ships libphp (--enable-embed --enable-zts
# --disable-zend-signals) and per-thread execution timers.
#
# The extension set matches scripts/build-php.sh: the image's built-ins plus the ones added below.

ARG PHP_IMAGE=php:8.4-zts

FROM ${PHP_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config libclang-dev \
 && rm -rf /var/lib/apt/lists/*
# A current Rust toolchain (Debian's is older than the crates need).
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY ext ext
COPY src src
RUN PHP_CONFIG=/usr/local/bin/php-config cargo build --release --locked --bin tokio_php \
 && cp target/release/tokio_php /usr/local/bin/tokio_php

FROM ${PHP_IMAGE}
# The extensions real apps expect that the image does not build in (same list as build-php.sh).
RUN docker-php-ext-install -j"$(nproc)" bcmath exif mysqli pdo_mysql sockets \
 && (php -m | grep -qi '^Zend OPcache$' || docker-php-ext-enable opcache)
COPY --from=build /usr/local/bin/tokio_php /usr/local/bin/tokio_php
COPY www /var/www/html
ENV LISTEN_ADDR=0.0.0.0:8080 \
    DOCUMENT_ROOT=/var/www/html \
    ERROR_PAGES_DIR=/var/www/html/errors \
    PHP_WORKERS=0 \
    RUST_LOG=info
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["tokio_php"]
