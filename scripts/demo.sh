#!/usr/bin/env bash
# Build isthmus and run the local demo: the seed's todo-list canary on
# http://127.0.0.1:8080 (v1 about 90%, v2 about 10%). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -p isthmus
exec target/release/isthmus up configs/demo "$@"
