#!/usr/bin/env bash
# Install the Debian packages isthmus builds and tests with, when missing.
# Usage: scripts/deps.sh [extra-package...]
set -euo pipefail
want=(cmake curl openssl pebble iptables python3-hyperframe python3-hpack slowhttptest "$@")
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }
fi
