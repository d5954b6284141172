#!/usr/bin/env bash
# Instructions per proxied request under callgrind (see run.py's header):
#   benches/callgrind/run.sh [--requests N] [--targets ...] [--scenarios ...]
# Installs valgrind, nginx, haproxy and h2load when missing and builds the release
# binary unless ISTHMUS_BIN is set.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if ((${#missing[@]})); then
  apt-get install -y "${missing[@]}" >/dev/null
fi
if [[ -z ${ISTHMUS_BIN:-} ]]; then
  (cd "$repo" && cargo build --release -p isthmus)
  ISTHMUS_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/isthmus
  export ISTHMUS_BIN
fi
exec python3 "$here/run.py" "$@"
