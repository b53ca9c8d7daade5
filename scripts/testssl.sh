#!/usr/bin/env bash
# TLS posture of rproxy's https listener, checked with testssl.sh (Debian package `testssl.sh`,
# command `testssl`). Builds rproxy in release mode, starts it on 127.0.0.1 with a free port and
# an ECDSA P-256 certificate made by openssl for `localhost`, with `/` proxied (hsts: true) to a
# tiny python3 http.server upstream and `/static` served from a directory (hsts: true), runs
# testssl against it, checks HSTS on both routes with curl, saves the reports, and stops what it
# started. Traffic stays on 127.0.0.1.
#
#   apt-get update && apt-get install -y testssl.sh openssl curl
#   scripts/testssl.sh [OUT_DIR]     # default OUT_DIR: target/testssl
#
# Environment: RPROXY_BIN to use a prebuilt binary instead of `cargo build --release`;
# TESTSSL_TIMEOUT (seconds, default 900) bounds the whole testssl run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/testssl}
mkdir -p "$out"
out=$(cd "$out" && pwd)

testssl=$(command -v testssl || command -v testssl.sh || true)
if [[ -z $testssl ]]; then
    echo "testssl not found: apt-get install -y testssl.sh" >&2
    exit 2
fi

if [[ -z ${RPROXY_BIN:-} ]]; then
    (cd "$root" && cargo build --release --bin rproxy)
    RPROXY_BIN=$root/target/release/rproxy
fi

work=$(mktemp -d)
pid=
up_pid=
stop() {
    local p=$1
    if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    fi
}
cleanup() {
    stop "$pid"
    stop "$up_pid"
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$work/certs" "$work/site"
echo '<!doctype html><title>rproxy</title><p>testssl target' > "$work/site/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/certs/localhost.key" -out "$work/certs/localhost.crt" 2>/dev/null

wait_port() {  # wait_port PORT PID NAME
    for _ in $(seq 100); do
        if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "$3 exited" >&2; return 1; }
        sleep 0.1
    done
    echo "$3 is not listening on $1" >&2
    return 1
}

https_port=$(free_port)
http_port=$(free_port)
up_port=$(free_port)
mkdir -p "$work/site/static"
cp "$work/site/index.html" "$work/site/static/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$work/site" "$up_port" > /dev/null 2>&1 &
up_pid=$!
wait_port "$up_port" "$up_pid" "the upstream (python3 -m http.server)"
cat > "$work/proxy.yaml" <<YAML
listen:
  http: "127.0.0.1:$http_port"
  https: "127.0.0.1:$https_port"
tls:
  certs: certs
  redirect_http: true
  self_signed: true           # the default: a client without SNI gets a generated certificate
upstreams:
  site:
    servers: [127.0.0.1:$up_port]
routes:
  - path: /
    upstream: site
    hsts: true
  - path: /static
    static: site/static
    hsts: true
YAML

"$RPROXY_BIN" -t -c "$work/proxy.yaml"
RPROXY_LOG=warn "$RPROXY_BIN" -c "$work/proxy.yaml" > "$out/rproxy.log" 2>&1 &
pid=$!
wait_port "$https_port" "$pid" rproxy || { cat "$out/rproxy.log" >&2; exit 1; }

echo "rproxy $("$RPROXY_BIN" --version) on https://localhost:$https_port (pid $pid)"
rm -f "$out/testssl.txt" "$out/testssl.json" "$out/hsts.txt"
# `localhost` as the name so the SNI picks the certificate above; --ip pins 127.0.0.1.
status=0
timeout "${TESTSSL_TIMEOUT:-900}" "$testssl" --quiet --color 0 --warnings off --ip 127.0.0.1 \
    --protocols --server-defaults --server-preference --std --cipher-per-proto --headers \
    --vulnerable \
    --logfile "$out/testssl.txt" --jsonfile "$out/testssl.json" \
    "https://localhost:$https_port/" > /dev/null || status=$?
echo "testssl exit status $status (testssl counts findings in its status; 124 = timed out)"
echo "report: $out/testssl.txt, $out/testssl.json"
# testssl's header check reads `/` only; look at both routes' answers for HSTS.
for path in / /static/; do
    resp=$(curl -sk --resolve "localhost:$https_port:127.0.0.1" -D - -o /dev/null \
        --max-time 10 "https://localhost:$https_port$path" | tr -d '\r')
    first=$(head -n1 <<< "$resp")
    hsts=$(grep -i '^strict-transport-security:' <<< "$resp" || echo "(no HSTS header)")
    echo "GET $path -> $first; $hsts" | tee -a "$out/hsts.txt"
done
grep -E 'offered|Negotiated|Cipher order|TLSv1\.[0-3]|VULNERABLE|NOT ok|Strict Transport' "$out/testssl.txt" || true
