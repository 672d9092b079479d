#!/usr/bin/env bash
# Checks that a Rust toolchain with rustfmt and clippy is available (rustup installs one).
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust with rustup (https://rustup.rs), then run make again." >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component" >&2
    else
      echo "error: cargo $component is missing; install it with your Rust toolchain." >&2
      exit 1
    fi
  fi
done
