#!/usr/bin/env bash
# Load benchmarks of isthmus beside direct / nginx / haproxy / envoy (see README.md,
# "Load benchmarks"). Usage: benches/run.sh [quick|full] [options of load/bench.py]
exec "$(dirname "$0")/load/run.sh" "$@"
