#!/usr/bin/env bash
# Time to first HTTPS response with ACME issuance: isthmus vs Caddy, same pebble.
# Usage: benches/acme/run.sh [runs]   (default 5; median reported)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh pebble caddy openssl curl
if [ -z "${ISTHMUS_BIN:-}" ]; then cargo build --release -p isthmus; fi
exec python3 benches/acme/first_https.py "$@"
