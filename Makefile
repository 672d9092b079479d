# tokio_php — `make run` serves www/ on :8080, `make test` runs every check.
# Both build a thread-safe PHP first if none is cached (10-15 minutes, once).

CARGO ?= cargo
LISTEN_ADDR ?= 0.0.0.0:8080
DOCUMENT_ROOT ?= $(CURDIR)/www
ERROR_PAGES_DIR ?= $(DOCUMENT_ROOT)/errors

.PHONY: all deps php build run run-tls test lint fmt bench soak fuzz clean

all: build

deps:
	@scripts/install-deps.sh
	@scripts/check-rust.sh

php: deps
	@scripts/build-php.sh >/dev/null

# Cargo builds against the php-config that scripts/build-php.sh prints: the PHP it built, or a
# user's own (PHP_CONFIG=…), checked there. The Dockerfile's build stage takes the same route
# with the official image's PHP (scripts/build-tokio-php.sh).
WITH_PHP = PHP_CONFIG="$$(scripts/build-php.sh)"

build: php
	@scripts/build-tokio-php.sh >/dev/null

run: build
	LISTEN_ADDR=$(LISTEN_ADDR) DOCUMENT_ROOT=$(DOCUMENT_ROOT) ERROR_PAGES_DIR=$(ERROR_PAGES_DIR) \
		./target/release/tokio_php

# HTTPS on :8443 with a self-signed development certificate (certs/make-dev-cert.sh).
run-tls: build
	certs/make-dev-cert.sh
	LISTEN_ADDR=0.0.0.0:8443 DOCUMENT_ROOT=$(DOCUMENT_ROOT) ERROR_PAGES_DIR=$(ERROR_PAGES_DIR) \
		TLS_CERT=certs/dev-cert.pem TLS_KEY=certs/dev-key.pem ./target/release/tokio_php

# `build` first: the release binary goes through scripts/build-tokio-php.sh, the route the
# Dockerfile's build stage takes, so CI exercises it.
test: build
	$(CARGO) fmt --all -- --check
	$(WITH_PHP) $(CARGO) clippy --all-targets -- -D warnings
	# The examples as programs: tests/examples.rs runs them.
	$(WITH_PHP) $(CARGO) build --examples
	$(WITH_PHP) $(CARGO) test --all-targets
	$(WITH_PHP) $(CARGO) test --doc

fmt:
	$(CARGO) fmt --all

bench: php
	bench/compare.sh

# The soak of tests/soak.rs for SOAK_SECONDS (default 10 minutes; make test runs 60 s of it).
SOAK_SECONDS ?= 600
soak: php
	SOAK_SECONDS=$(SOAK_SECONDS) $(WITH_PHP) $(CARGO) test --release --test soak -- --nocapture

# libFuzzer on the input-parsing code, FUZZ_SECONDS per target (make test runs a short variant).
FUZZ_SECONDS ?= 60
fuzz: php
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

clean:
	$(CARGO) clean
