#!/usr/bin/env bash
# A local pebble (Let's Encrypt's ACME test server) for configs/demo-tls. Installs
# pebble when missing, makes its HTTPS certificate (Debian's package ships none),
# starts pebble-challtestsrv (its DNS: every name resolves to 127.0.0.1) and pebble
# at https://127.0.0.1:14000/dir, validating HTTP-01 on 127.0.0.1:8080 (where
# `isthmus up` serves Gateway port 80). Given a command, runs it with
# ISTHMUS_ACME_CA_ROOT pointing at pebble's CA and stops pebble when it ends;
# without one, pebble runs until Ctrl-C.
#
#   scripts/pebble.sh cargo run --release -p isthmus -- up configs/demo-tls
#
# pebble's issuing root changes at every start; it is saved to
# $PEBBLE_DIR/issuing-root.pem for `curl --cacert`. Settings (environment):
# PEBBLE_DIR (/tmp/isthmus-pebble), PEBBLE_PORT (14000), PEBBLE_MGMT_PORT (14001),
# PEBBLE_HTTP_PORT (8080), PEBBLE_DNS_PORT (18053), PEBBLE_DNS_MGMT_PORT (18055).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh pebble openssl
dir=${PEBBLE_DIR:-/tmp/isthmus-pebble}
port=${PEBBLE_PORT:-14000}
mgmt=${PEBBLE_MGMT_PORT:-14001}
http=${PEBBLE_HTTP_PORT:-8080}
dns=${PEBBLE_DNS_PORT:-18053}
dns_mgmt=${PEBBLE_DNS_MGMT_PORT:-18055}
mkdir -p "$dir"

if [[ ! -s $dir/cert.pem ]]; then
  p256=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  openssl req -x509 -nodes -days 3650 -subj "/CN=isthmus pebble CA" "${p256[@]}" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -new -nodes -subj /CN=localhost "${p256[@]}" \
    -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
    'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' >"$dir/leaf.ext"
  openssl x509 -req -days 3650 -set_serial 1 -in "$dir/leaf.csr" -CA "$dir/ca.pem" \
    -CAkey "$dir/ca.key" -extfile "$dir/leaf.ext" -out "$dir/cert.pem" 2>/dev/null
fi
cat >"$dir/pebble.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$port",
    "managementListenAddress": "127.0.0.1:$mgmt",
    "certificate": "$dir/cert.pem",
    "privateKey": "$dir/key.pem",
    "httpPort": $http,
    "tlsPort": $((http + 363)),
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
pebble-challtestsrv -management "127.0.0.1:$dns_mgmt" -dns01 "127.0.0.1:$dns" \
  -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  >"$dir/challtestsrv.log" 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
  pebble -config "$dir/pebble.json" -dnsserver "127.0.0.1:$dns" -strict=false \
  >"$dir/pebble.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf --cacert "$dir/ca.pem" "https://127.0.0.1:$port/dir" >/dev/null && break
  sleep 0.1
done
curl -sf --cacert "$dir/ca.pem" "https://127.0.0.1:$mgmt/roots/0" >"$dir/issuing-root.pem" \
  || { echo "pebble did not start; see $dir/pebble.log" >&2; exit 1; }
echo "pebble: https://127.0.0.1:$port/dir, HTTP-01 on 127.0.0.1:$http (log: $dir/pebble.log)"
echo "issuing root: $dir/issuing-root.pem"
export ISTHMUS_ACME_CA_ROOT=$dir/ca.pem
if (($#)); then
  "$@"
else
  wait
fi
