#!/usr/bin/env bash
# Makes a self-signed development certificate for localhost (ECDSA P-256, 825 days), once:
#   certs/dev-cert.pem, certs/dev-key.pem   (never committed: see .gitignore)
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
cert="$dir/dev-cert.pem"
key="$dir/dev-key.pem"
if [ -s "$cert" ] && [ -s "$key" ]; then
  exit 0
fi
command -v openssl >/dev/null || { echo "error: openssl is needed (apt-get install openssl)" >&2; exit 1; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$key" -out "$cert" 2>/dev/null
chmod 600 "$key"
echo "certs: wrote $cert and $key (self-signed, for development only)" >&2
