#!/usr/bin/env bash
# rproxy against nginx and HAProxy as reverse proxies, under a load sweep, on 127.0.0.1 (see
# BENCHMARKS.md and DESIGN.md, "Comparing with peers, fairly").
#
# Each peer is configured as its best users would for the same job: one worker/thread, the same
# upstream, the same certificate, the same headers added (X-Forwarded-For/Proto/Host, X-Real-IP,
# a request id of 32 hex digits generated, sent up and returned), no access log, and no setting
# below the load (connection limits, idle upstream connections). Five servers on free ports:
#   upstream  nginx, 1 worker: a small JSON body at /, 200 at /health, keep-alive (1,000,000
#             requests, 75 s), worker_connections 16384, backlog=4096, no access log; two
#             listeners: HTTP/1.1, and h2c (`listen ... http2` without ssl: cleartext HTTP/2 with
#             prior knowledge, nothing else; nginx's default http2_max_concurrent_streams 128)
#             with the same body, /health and header echo. Every proxy reaches the h2c one for
#             paths under /h2c/ and the HTTP/1.1 one for everything else
#   nginx     nginx 1.22 as a reverse proxy, 1 worker: worker_connections 16384,
#             worker_rlimit_nofile (the script's file limit), upstream { keepalive 1024;
#             keepalive_requests 1000000; } (idle upstream connections must not be fewer than the
#             requests in flight, or nginx opens and closes one per request), proxy_http_version
#             1.1 + Connection "", a plain listener and a `ssl http2` one (TLS 1.2 + 1.3,
#             ssl_session_cache shared:SSL:10m, http2_max_concurrent_streams 128), backlog=4096.
#             multi_accept stays off (nginx's default): on was no better here (h1-1000 and
#             tls-new, 2 x 2 rounds each: the same CPU per request, req/s not higher).
#             /h2c/: `location /h2c/ { grpc_pass grpc://app_h2c; }` (nginx's only way to speak
#             HTTP/2 upstream; it proxies a plain GET and its body), upstream app_h2c { keepalive
#             1024; keepalive_requests 1000000; }, the same five headers set with grpc_set_header
#             (Host $http_host too). nginx's grpc proxy does not multiplex: one request per
#             upstream connection at a time, so it holds as many h2c connections as requests in
#             flight (up to 1,000 at h2c-100x10, all kept idle by keepalive 1024)
#   haproxy   HAProxy 2.6 in the foreground as one process (no -W/-D: the process measured is the
#             one doing the work): nbthread 1, maxconn 20000 global and per frontend (lowered to
#             fit the file limit: HAProxy refuses to start when 2 x maxconn fds are not allowed),
#             option http-keep-alive, http-reuse always, timeouts client/server 60 s and
#             http-keep-alive 75 s, no log, default tune.bufsize; a plain HTTP/1.1 frontend and a
#             TLS one (`ssl crt <cert+key pem> alpn h2,http/1.1`, TLS >= 1.2), backlog 4096;
#             option forwardfor, X-Real-IP %[src], X-Forwarded-Proto http/https by frontend,
#             X-Forwarded-Host %[req.hdr(host)], unique-id-format of 4 x %[rand,hex,bytes(8)]
#             (32 random hex digits, like nginx's $request_id) as X-Request-Id up and back;
#             upstream checked with option httpchk GET /health, check inter 2s.
#             /h2c/: `use_backend app_h2c if { path_beg /h2c/ }` in both frontends (the same
#             frontend rules, so the same headers and request id), backend app_h2c with
#             http-reuse always and `server up 127.0.0.1:<h2c port> proto h2 check inter 2s`;
#             its check is `http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost`
#             over h2 (the server's proto), since nginx answers 400 to an HTTP/2 request without
#             an authority, which the default check is. HAProxy multiplexes requests from all
#             clients onto its h2c connections (streams per connection: nginx's SETTINGS)
#   rproxy    the release build with matched settings: server.threads 1, http + https listeners,
#             the same certificate, one pool with that upstream (probed on /health), access log
#             off; `keepalive: 1024` in the upstream when this binary's `-t` accepts that key.
#             /h2c/: a second pool app_h2c with the h2c listener, `protocol: h2c`,
#             `max_streams: 100` (streams per connection before another is opened), and a route
#             `{ path: /h2c, upstream: app_h2c }`; the route to the first pool (path /) is
#             unchanged. HTTP/2 pools take pingora's request path, not rproxy's own (README,
#             "HTTP/2, gRPC and TLS upstreams"). That pool has no health block (like nginx,
#             which has no active checks): rproxy's HTTP/2 probe (at a7342ad) sends a host
#             header beside :authority and nginx 1.22 answers it 400 "client sent duplicate
#             host header", so the probe would keep the server out; proxied requests do not
#             carry both and are answered
# The /h2c/ prefix route is in every proxy's configuration whatever the scenarios: each request
# of every scenario goes through the same one extra path test in all three.
# Before measuring, each proxy is checked over HTTP/1.1 and TLS + h2: the upstream's body, our
# certificate, an X-Request-Id of 32 hex digits returned, and the five headers reaching the
# upstream; and over TLS + h2 to /h2c/: the body, and the same headers reaching the h2c listener.
# The upstream's header echo also gives the protocol it was asked in (nginx's $server_protocol):
# HTTP/1.1 on the first listener, HTTP/2.0 on the h2c one; and the h2c listener is checked to
# refuse HTTP/1.1, so no 2xx counted on an h2c point can have come over HTTP/1.1.
# Then each scenario is measured ROUNDS times, every peer in turn, the order rotated
# each round (nginx haproxy rproxy, haproxy rproxy nginx, ...) so that drift hits all, 1 s apart:
#   h1-N      HTTP/1.1 keep-alive on the plain port: wrk --latency -t1 -cN --timeout 10s (one load
#             thread; the connections open mid-run are counted with ss, a warning if fewer than N)
#   h2-CxS    TLS + HTTP/2, multiplexed: h2load -t1 -cC -mS -D $DURATION (C clients x S streams)
#   h2c-CxS   the same, to https://localhost:<port>/h2c/: TLS + HTTP/2 from the client, h2c
#             (cleartext HTTP/2, prior knowledge) to the upstream. Mid-run, the proxy's
#             established connections to the h2c listener are counted with ss (logged, and in
#             the raw output). In the default list: h2c-10x10 only (~75 s more at DURATION=10);
#             the sweep is SCENARIOS="h2c-1x10 h2c-10x10 h2c-100x10 h2-10x10" (with the h2
#             point at the same load, for the cost of the h2c hop). The upstream ends an h2c
#             connection with GOAWAY after 1,000,000 streams (keepalive_requests): a proxy that
#             keeps one connection across runs reaches that mid-run, and any stream it then
#             fails is counted against it (BENCHMARKS.md, "HTTP/2 to an h2c upstream")
#   tls-new   new TLS connections: h2load -n $HANDSHAKES -c $HANDSHAKES -m1, i.e. that many
#             clients, all started at once, each doing one full TLS 1.3 handshake (h2load never
#             resumes a session across clients) and one h2 request; req/s = handshakes/s
#   upstream  the upstream alone with wrk at $CONNS connections: the ceiling for all proxies
#   optional (not in the default list):
#   gzip-N    response compression: HTTP/1.1 keep-alive, wrk -cN with `Accept-Encoding: gzip`,
#             to /gz/, where the upstream answers 8 KiB of JSON from a file (uncompressed, with
#             its length)
#             and each proxy compresses it with gzip: nginx `gzip on; gzip_comp_level 6;
#             gzip_types application/json; gzip_proxied any; gzip_vary on;` (zlib), rproxy
#             `compress: [gzip]` on a /gz route (level 6, zlib-ng), HAProxy `compression algo
#             gzip` + `compression type application/json` in a backend for /gz/ (Debian's build
#             uses libslz, which has no levels: about zlib level 1's ratio at a fraction of its
#             cost, so HAProxy does less work than the other two there). Checked before the
#             runs: each answers /gz/ with Content-Encoding gzip, decoding to the upstream's body
#   h1, h2    h1-$CONNS and h2-${H2_CLIENTS}x$H2_STREAMS
#   h2c       h2c-${H2_CLIENTS}x$H2_STREAMS
#   h1-rate   the same fixed load on all, for latency at equal load: h2load --h1 -c$CONNS -m1
#             --rps so that the total is $RATE req/s (below all proxies' capacity)
#   h2-rate   the same over TLS + h2: h2load -c$H2_CLIENTS -m$H2_STREAMS --rps, $RATE req/s in all
# Each row gives req/s, p50/p99 latency (wrk's, or from h2load's per-request log), failed or
# non-2xx responses, the proxy's peak RSS during that run (VmHWM from /proc, reset to the current
# RSS before the run through /proc/<pid>/clear_refs; for nginx, its worker process) and the
# proxy's CPU time per request (from /proc/<pid>/task/*/schedstat; less disturbed by other load
# on the machine than req/s). The summary gives, per scenario, the median of the rounds for each
# peer, rproxy / the better peer (the higher req/s; the lower p99), rproxy / nginx for peak RSS,
# CPU per request, the failed requests of each peer, and a verdict line per point: "ahead" when
# rproxy's req/s >= the better peer's, else "behind".
#
#   benches/load/compare.sh                         # 2 rounds of 10 s runs (~11 min after the build)
#   DURATION=2 ROUNDS=1 benches/load/compare.sh     # a quick check (~2 min)
#   RPROXY_BIN=/path/to/rproxy benches/load/compare.sh   # an existing build, e.g. of a worktree
#
# Environment: DURATION (seconds per run, 10), ROUNDS (2), SCENARIOS ("h1-10 h1-100 h1-1000
# h2-1x100 h2-10x10 h2-100x10 h2c-10x10 tls-new upstream"; any h1-N, h2-CxS and h2c-CxS are
# accepted), CONNS (wrk connections for upstream, h1 and h1-rate: 100), H2_CLIENTS (10) and
# H2_STREAMS (10) for h2, h2c and h2-rate, HANDSHAKES (2000), RATE (4000 req/s for the *-rate runs),
# PIN=1 (load generators on CPU 1, proxies and upstream on CPU 0; default: no pinning, the
# kernel spreads everything over all cores), RPROXY_BIN (use this binary, skip the build),
# INSTRUCTIONS=1 (after the measured rounds, each proxy's user-space instructions per h1 request
# under valgrind's callgrind: exact and unaffected by other load; needs Debian's valgrind),
# RPROXY_FAST_PATH=false (rproxy with `server.fast_path: false`: every request through pingora's
# proxy, to measure one engine against the other), KEEP=1 (keep the work directory with configs, logs and raw outputs), PROFILE=DIR (after the
# measured rounds, one more rproxy run of PROFILE_SCENARIO (default h1-100), not counted, under
# `perf record -e cpu-clock --call-graph dwarf`; perf.data and the reports go to DIR; needs
# Debian's linux-perf).
#
# Needs Debian's nginx-core, haproxy, wrk, nghttp2-client (h2load), curl, openssl and iproute2
# (ss); the missing ones are installed with apt-get. The open-file limit is raised to 65536 where
# allowed, else to the hard limit; 1,000 connections need ~2,000 descriptors in a proxy, and the
# listen backlogs (4096) are capped by net.core.somaxconn (a warning if it is lower). Everything
# listens on 127.0.0.1, every tool runs under `timeout`, and the trap stops everything this
# script started.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-100}
H2_CLIENTS=${H2_CLIENTS:-10}
H2_STREAMS=${H2_STREAMS:-10}
HANDSHAKES=${HANDSHAKES:-2000}
SCENARIOS=${SCENARIOS:-h1-10 h1-100 h1-1000 h2-1x100 h2-10x10 h2-100x10 h2c-10x10 tls-new upstream}
RATE=${RATE:-4000}
PIN=${PIN:-}

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- tools --------------------------------------------------------------------------------------
need=()
tools="nginx:nginx-core haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl ss:iproute2"
tools+=" taskset:util-linux"
[[ -n ${INSTRUCTIONS:-} ]] && tools+=" valgrind:valgrind"
for pair in $tools; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    sudo=
    ((EUID == 0)) || sudo=sudo
    log "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ -z ${RPROXY_BIN:-} ]]; then
    log "cargo build --release"
    (cd "$root" && cargo build --release --bin rproxy)
    RPROXY_BIN=$root/target/release/rproxy
fi
[[ -x $RPROXY_BIN ]] || die "no rproxy binary at $RPROXY_BIN"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
# HAProxy wants 2 descriptors per connection (and a few more) for its maxconn, or does not start.
hap_maxconn=$(((nofile - 1000) / 2))
((hap_maxconn > 20000)) && hap_maxconn=20000
somaxconn=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 4096)
((somaxconn >= 4096)) ||
    log "warning: net.core.somaxconn is $somaxconn: listen backlogs are capped below 4096" \
        "(sysctl -w net.core.somaxconn=4096)"

# parse_scenario NAME: sets kind (h1, h2, h2c, tls-new, upstream, h1-rate, h2-rate), conns (h1),
# clients and streams (h2, h2c); dies on an unknown name.
parse_scenario() {
    kind='' conns='' clients='' streams=''
    case $1 in
    h1) kind=h1 conns=$CONNS ;;
    h2 | h2c) kind=$1 clients=$H2_CLIENTS streams=$H2_STREAMS ;;
    h1-rate | h2-rate | tls-new) kind=$1 ;;
    upstream) kind=upstream conns=$CONNS ;;
    h1-*) kind=h1 conns=${1#h1-} ;;
    gzip-*) kind=gzip conns=${1#gzip-} ;;
    h2-*x*) kind=h2 clients=${1#h2-} streams=${1#*x} clients=${clients%x*} ;;
    h2c-*x*) kind=h2c clients=${1#h2c-} streams=${1#*x} clients=${clients%x*} ;;
    esac
    [[ -n $kind && $conns$clients$streams =~ ^[0-9]*$ ]] || die "unknown scenario $1"
    [[ ($kind != h1 && $kind != gzip) || $conns -gt 0 ]] || die "unknown scenario $1"
    [[ ($kind != h2 && $kind != h2c) || ($clients -gt 0 && $streams -gt 0) ]] || die "unknown scenario $1"
}
# The most client connections a proxy holds at once: every proxy must take them (nginx also needs
# one worker connection per upstream connection, 2 per request in flight).
most=0
for scenario in $SCENARIOS; do
    parse_scenario "$scenario"
    [[ $kind == tls-new ]] && conns=$HANDSHAKES
    [[ $kind == *-rate ]] && conns=$((CONNS > H2_CLIENTS ? CONNS : H2_CLIENTS))
    ((${conns:-$clients} > most)) && most=${conns:-$clients}
done
((hap_maxconn >= most && 2 * most <= 16384)) ||
    die "up to $most connections at once: open-file limit $nofile (haproxy maxconn $hap_maxconn) or" \
        "nginx's worker_connections 16384 too low"

# --- cleanup ------------------------------------------------------------------------------------
work=$(mktemp -d /tmp/rproxy-compare.XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        # nginx masters stop their workers; rproxy's grace period is 1 s.
        timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    done
    if [[ -n ${KEEP:-} ]]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports, pinning -----------------------------------------------------------------------------
taken=" "
# free_port VAR: a port below the ephemeral range that no socket on this machine uses.
free_port() {
    local p
    for _ in $(seq 500); do
        p=$((20000 + RANDOM % 12000))
        [[ $taken == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
            taken+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}
free_port UP_PORT
free_port UP_H2C
free_port NGX_HTTP
free_port NGX_HTTPS
free_port HAP_HTTP
free_port HAP_HTTPS
free_port RP_HTTP
free_port RP_HTTPS
free_port RP_ADMIN

server_cpu=()
load_cpu=()
if [[ $PIN == 1 ]]; then
    server_cpu=(taskset -c 0)
    load_cpu=(taskset -c 1)
fi

# --- certificate --------------------------------------------------------------------------------
mkdir -p "$work/certs" "$work/nginx-up" "$work/nginx-proxy" "$work/haproxy"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/certs/localhost.key" -out "$work/certs/localhost.crt" 2>/dev/null
cert_fp=$(openssl x509 -in "$work/certs/localhost.crt" -noout -fingerprint -sha256)
# HAProxy takes the certificate and its key in one file.
cat "$work/certs/localhost.crt" "$work/certs/localhost.key" >"$work/certs/localhost.pem"

# --- configurations -----------------------------------------------------------------------------
body='{"service":"bench","status":"ok","items":[1,2,3,4,5],"message":"hello from the upstream"}'
# /gz/'s body: about 8 KiB of JSON (a list of records), compressible as real API answers are.
gz_body=$(awk 'BEGIN { printf "["; for (i = 0; i < 140; i++) { if (i) printf ",";
    printf "{\"id\":%d,\"name\":\"item-%d\",\"tags\":[\"alpha\",\"beta\"],\"score\":%d}", i, i, (i * 37) % 1000 }
    printf "]" }')
mkdir -p "$work/nginx-up/www"
printf '%s' "$gz_body" >"$work/nginx-up/www/gz.json"
user_line=
((EUID == 0)) && user_line='user root;'

# Shared by both nginx instances: one worker, no access log, temp files in the work directory.
nginx_common() { # $1 = prefix directory
    cat <<EOF
$user_line
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 16384; }
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

# The upstream's answers, on both its listeners; $1 = where the header echo is.
upstream_locations() {
    cat <<EOF
        location = /health { return 200 "ok\n"; }
        # What a proxy sent up, and in which protocol, for the check before the runs.
        location = $1 {
            return 200 "xff=\$http_x_forwarded_for rip=\$http_x_real_ip proto=\$http_x_forwarded_proto host=\$http_x_forwarded_host via=\$server_protocol id=\$http_x_request_id\n";
        }
        location /gz/ {
            default_type application/json;
            root $work/nginx-up/www;
            try_files /gz.json =404;
        }
        location / {
            default_type application/json;
            return 200 '$body';
        }
EOF
}
{
    nginx_common "$work/nginx-up"
    cat <<EOF
http {
$(nginx_http_common "$work/nginx-up")
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
$(upstream_locations /echo-headers)
    }
    # h2c: http2 without ssl is HTTP/2 with prior knowledge only (nginx 1.22).
    server {
        listen 127.0.0.1:$UP_H2C http2 backlog=4096;
$(upstream_locations /h2c/echo-headers)
    }
}
EOF
} >"$work/nginx-up/nginx.conf"

# The proxying lines of nginx's locations to the HTTP/1.1 upstream.
nginx_proxy_lines() {
    cat <<EOF
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
EOF
}
{
    nginx_common "$work/nginx-proxy"
    cat <<EOF
http {
$(nginx_http_common "$work/nginx-proxy")
    ssl_session_cache shared:SSL:10m;
    http2_max_concurrent_streams 128;
    upstream app {
        server 127.0.0.1:$UP_PORT;
        # Idle upstream connections kept: not fewer than the requests in flight (up to 1,000).
        keepalive 1024;
        keepalive_requests 1000000;
    }
    # The h2c listener, for /h2c/. nginx's grpc proxy sends one request at a time on each
    # upstream connection: as many connections as requests in flight, kept idle up to 1,024.
    upstream app_h2c {
        server 127.0.0.1:$UP_H2C;
        keepalive 1024;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_HTTP backlog=4096;
        listen 127.0.0.1:$NGX_HTTPS ssl http2 backlog=4096;
        server_name localhost;
        ssl_certificate $work/certs/localhost.crt;
        ssl_certificate_key $work/certs/localhost.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
$(nginx_proxy_lines)
        }
        # Response compression (the gzip-N scenarios), at the level rproxy uses.
        location /gz/ {
$(nginx_proxy_lines)
            gzip on;
            gzip_comp_level 6;
            gzip_types application/json;
            gzip_proxied any;
            gzip_vary on;
        }
        # HTTP/2 to the upstream: grpc_pass is nginx's only way; it proxies any request.
        location /h2c/ {
            grpc_pass grpc://app_h2c;
            grpc_set_header Host \$http_host;
            grpc_set_header X-Real-IP \$remote_addr;
            grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            grpc_set_header X-Forwarded-Proto \$scheme;
            grpc_set_header X-Forwarded-Host \$http_host;
            grpc_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
        }
    }
}
EOF
} >"$work/nginx-proxy/nginx.conf"

# HAProxy: the rules of both frontends, as in its documentation's reverse-proxy examples.
haproxy_frontend() { # $1 = X-Forwarded-Proto
    cat <<EOF
    maxconn $hap_maxconn
    option forwardfor
    unique-id-format %[rand,hex,bytes(8)]%[rand,hex,bytes(8)]%[rand,hex,bytes(8)]%[rand,hex,bytes(8)]
    unique-id-header X-Request-Id
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto $1
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-response set-header X-Request-Id %[unique-id]
    use_backend app_h2c if { path_beg /h2c/ }
    use_backend app_gz if { path_beg /gz/ }
    default_backend app
EOF
}
cat >"$work/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $hap_maxconn
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 75s
    timeout check 1s
frontend plain
    bind 127.0.0.1:$HAP_HTTP backlog 4096
$(haproxy_frontend http)
frontend tls
    bind 127.0.0.1:$HAP_HTTPS ssl crt $work/certs/localhost.pem alpn h2,http/1.1 backlog 4096
$(haproxy_frontend https)
backend app
    http-reuse always
    option httpchk GET /health
    server up 127.0.0.1:$UP_PORT check inter 2s
# The same upstream, for /gz/: responses compressed (libslz in Debian's build).
backend app_gz
    http-reuse always
    compression algo gzip
    compression type application/json
    option httpchk GET /health
    server up 127.0.0.1:$UP_PORT check inter 2s
# The h2c listener, for /h2c/: HTTP/2 with prior knowledge (proto h2), checks too. nginx answers
# 400 to an HTTP/2 request without an authority, which the default check is: hence Host.
backend app_h2c
    http-reuse always
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
    server up 127.0.0.1:$UP_H2C proto h2 check inter 2s
EOF

# rproxy_config [extra upstream line]
rproxy_config() {
    cat <<EOF
server:
  threads: 1
  grace_period: 1s
  fast_path: ${RPROXY_FAST_PATH:-true}
listen:
  http: "127.0.0.1:$RP_HTTP"
  https: "127.0.0.1:$RP_HTTPS"
  admin: "127.0.0.1:$RP_ADMIN"
tls:
  certs: certs
  redirect_http: false
upstreams:
  app:
    servers: ["127.0.0.1:$UP_PORT"]
    health: { path: /health, interval: 2s, timeout: 1s }
${1:-}
  # No health block, as in the figures of BENCHMARKS.md: rproxy's HTTP/2 probe before 2f99526
  # sent a host header beside :authority, which nginx 1.22 answers 400 ("client sent duplicate
  # host header"). Requests are not affected.
  app_h2c:
    servers: ["127.0.0.1:$UP_H2C"]
    protocol: h2c
    max_streams: 100
routes:
  - { name: bench, path: /, upstream: app }
  - { name: bench-h2c, path: /h2c, upstream: app_h2c }
${2:-}
EOF
}
# Idle upstream connections like nginx's keepalive 1024, where this build has the key.
rp_keepalive="    keepalive: 1024"
rproxy_config "$rp_keepalive" >"$work/proxy-probe.yaml"
if ! "$RPROXY_BIN" -t -c "$work/proxy-probe.yaml" >"$work/proxy-probe.log" 2>&1; then
    log "note: this rproxy does not accept upstreams.app.keepalive ($(tail -1 "$work/proxy-probe.log"));" \
        "running without it"
    rp_keepalive=
fi
# Response compression for /gz (the gzip-N scenarios), where this build has the key.
rp_gz="  - { name: bench-gz, path: /gz, upstream: app, compress: [gzip] }"
rproxy_config "$rp_keepalive" "$rp_gz" >"$work/proxy-probe.yaml"
if ! "$RPROXY_BIN" -t -c "$work/proxy-probe.yaml" >"$work/proxy-probe.log" 2>&1; then
    [[ " $SCENARIOS " != *" gzip-"* ]] || die "this rproxy does not accept routes[].compress"
    rp_gz=
fi
rproxy_config "$rp_keepalive" "$rp_gz" >"$work/proxy.yaml"

cat >"$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF

# --- start --------------------------------------------------------------------------------------
start_nginx() { # $1 = prefix directory; prints the master's pid
    "${server_cpu[@]}" nginx -e "$1/error.log" -p "$1" -c "$1/nginx.conf" -g 'daemon off;' \
        >>"$1/stdout.log" 2>&1 &
    pids+=($!)
}

# wait_http URL [curl flags...]: until the URL answers 200, at most 30 s.
wait_http() {
    local url=$1
    shift
    for _ in $(seq 300); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url") == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "$url did not answer 200 within 30 s"
}

nginx -t -q -e "$work/nginx-up/error.log" -p "$work/nginx-up" -c "$work/nginx-up/nginx.conf"
nginx -t -q -e "$work/nginx-proxy/error.log" -p "$work/nginx-proxy" -c "$work/nginx-proxy/nginx.conf"
start_nginx "$work/nginx-up"
up_master=${pids[-1]}
start_nginx "$work/nginx-proxy"
ngx_master=${pids[-1]}
haproxy -c -q -f "$work/haproxy/haproxy.cfg" || die "haproxy -c rejects $work/haproxy/haproxy.cfg"
# In the foreground (-db), one process: the one measured is the one doing the work.
"${server_cpu[@]}" haproxy -db -f "$work/haproxy/haproxy.cfg" >>"$work/haproxy/haproxy.log" 2>&1 &
pids+=($!)
hap_pid=${pids[-1]}
"$RPROXY_BIN" -t -c "$work/proxy.yaml" >/dev/null || die "rproxy -t rejects $work/proxy.yaml"
RPROXY_LOG=warn "${server_cpu[@]}" "$RPROXY_BIN" -c "$work/proxy.yaml" >>"$work/rproxy.log" 2>&1 &
pids+=($!)
rp_pid=${pids[-1]}

wait_http "http://127.0.0.1:$UP_PORT/health"
wait_http "http://127.0.0.1:$NGX_HTTP/"
wait_http "http://127.0.0.1:$HAP_HTTP/"
wait_http "http://127.0.0.1:$RP_ADMIN/readyz"
worker_of() { awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null; }
ngx_worker=$(worker_of "$ngx_master")
up_worker=$(worker_of "$up_master")
[[ -n $ngx_worker && -n $up_worker ]] || die "no nginx worker process"

# The h2c listener speaks HTTP/2 only: a 2xx from it cannot have come over HTTP/1.1.
got=$(curl -s --max-time 5 --http2-prior-knowledge -w ' %{http_version}' "http://127.0.0.1:$UP_H2C/")
[[ $got == "$body 2" ]] || die "the upstream's h2c listener answered h2c with: $got"
got=$(curl -s --max-time 5 --http1.1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UP_H2C/" || true)
[[ $got != 2* ]] || die "the upstream's h2c listener answered HTTP/1.1 with $got"

# Every proxy answers the upstream's body over HTTP/1.1 and over TLS + h2 (also from the h2c
# listener, under /h2c/), with our certificate, returns a generated X-Request-Id and sends the
# same headers up, in the protocol of that listener (nginx's $server_protocol in the echo).
for target in nginx:$NGX_HTTP:$NGX_HTTPS haproxy:$HAP_HTTP:$HAP_HTTPS rproxy:$RP_HTTP:$RP_HTTPS; do
    IFS=: read -r name http https <<<"$target"
    wait_http "https://localhost:$https/" -k --http2
    wait_http "https://localhost:$https/h2c/" -k --http2
    got=$(curl -s --max-time 5 "http://localhost:$http/")
    [[ $got == "$body" ]] || die "$name over HTTP/1.1 answered: $got"
    for path in / /h2c/; do
        got=$(curl -sk --max-time 5 --http2 -w ' %{http_version}' "https://localhost:$https$path")
        [[ $got == "$body 2" ]] || die "$name over TLS + h2 answered $path with: $got"
    done
    while read -r url via; do
        proto=${url%%:*} version=--http1.1 port=${url##*:}
        port=${port%%/*}
        [[ $proto == https ]] && version=--http2
        got=$(curl -sk --max-time 5 "$version" -D "$work/headers.txt" "$url")
        want="xff=127.0.0.1 rip=127.0.0.1 proto=$proto host=localhost:$port via=$via"
        [[ $got =~ ^"$want id="[0-9a-fA-F]{32}$ ]] || die "$name ($url) sent up: $got (want $want id=<32 hex>)"
        grep -qiF "x-request-id: ${got##*id=}" "$work/headers.txt" ||
            die "$name ($url) did not return the X-Request-Id it sent up"
    done <<EOF
http://localhost:$http/echo-headers HTTP/1.1
https://localhost:$https/echo-headers HTTP/1.1
https://localhost:$https/h2c/echo-headers HTTP/2.0
EOF
    if [[ $name != rproxy || -n $rp_gz ]]; then
        got=$(curl -s --max-time 5 --compressed -D "$work/headers.txt" "http://localhost:$http/gz/")
        [[ $got == "$gz_body" ]] || die "$name answered /gz/ with: ${got:0:200}"
        grep -qi '^content-encoding: gzip' "$work/headers.txt" || die "$name did not compress /gz/"
    fi
    fp=$(openssl s_client -connect "127.0.0.1:$https" -servername localhost </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256)
    [[ $fp == "$cert_fp" ]] || die "$name does not serve the benchmark certificate"
done

# --- measuring ----------------------------------------------------------------------------------
# peak_reset PID / peak_kib PID: the process's peak RSS since the reset.
peak_reset() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
peak_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# cpu_ns PID: CPU time used by all the process's threads so far, in ns.
cpu_ns() { cat "/proc/$1/task/"*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# Each run_* prints: req/s p50_ms p99_ms failed requests
run_wrk() { # url connections [wrk args]
    local url=$1 conns=$2 port out probe open
    shift 2
    port=${url##*:} port=${port%%/*}
    # Does wrk really hold that many connections? Counted mid-run (wrk's own sockets only).
    (
        sleep $(((DURATION + 1) / 2))
        ss -Htnp state established "( dport = :$port )" | grep -c '"wrk"' >"$work/open.txt" || true
    ) &
    probe=$!
    out=$("${load_cpu[@]}" timeout $((DURATION + 30)) wrk --latency -t1 -c"$conns" --timeout 10s "$@" \
        -d"${DURATION}s" -s "$work/report.lua" "$url" | tee -a "$work/raw.txt" | grep '^RESULT') ||
        die "wrk failed against $url"
    wait "$probe" || true
    open=$(cat "$work/open.txt" 2>/dev/null || echo 0)
    echo "wrk connections open mid-run against $url: $open of $conns" >>"$work/raw.txt"
    ((open >= conns)) || log "warning: only $open of wrk's $conns connections were open mid-run against $url"
    awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "%.0f %.2f %.2f %d %d\n", v["requests"] / (v["duration_us"] / 1e6),
               v["p50_us"] / 1000, v["p99_us"] / 1000, v["errors"] + v["non2xx"], v["requests"] }' <<<"$out"
}

# Percentiles from h2load's --log-file (3rd column: microseconds until the response ended).
h2load_summary() { # raw-output log-file
    local rps failed pct completed
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$1")
    completed=$(awk '/^requests:/ { print $6 }' "$1")
    failed=$(awk '/^requests:/ { f = $10 + $12 + $14 }
                  /^status codes:/ { f += $5 + $7 + $9 } END { print f + 0 }' "$1")
    pct=$(sort -n -k3,3 "$2" | awk '{ d[NR] = $3 } END {
        if (NR == 0) { print "- -"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.2f %.2f\n", d[i50] / 1000, d[i99] / 1000 }')
    printf '%.0f %s %d %d\n' "$rps" "$pct" "$failed" "$completed"
}

run_h2load() { # port [h2load args]
    local port=$1
    shift
    run_h2load_url "https://localhost:$port/" "$@"
}

run_h2load_url() { # url [h2load args]
    local url=$1 raw=$work/h2load.out log=$work/h2load.log
    shift
    rm -f "$log"
    "${load_cpu[@]}" timeout $((DURATION + 60)) h2load --log-file="$log" "$@" "$url" >"$raw" 2>&1 ||
        die "h2load failed against $url: $(tail -3 "$raw")"
    cat "$raw" >>"$work/raw.txt"
    h2load_summary "$raw" "$log"
}

# h2c_conns_probe PID: in the background, half-way through the run (after h2load's 1 s warm-up),
# count the process's established connections to the h2c listener into $work/h2c-conns.txt.
h2c_conns_probe() {
    (
        sleep $(((DURATION + 3) / 2))
        ss -Htnp state established "( dport = :$UP_H2C )" | grep -c "pid=$1," >"$work/h2c-conns.txt" || true
    ) &
    probe=$!
}

run_scenario() { # scenario target -> "rps p50 p99 failed requests"
    local http https pid probe open
    case $2 in
    nginx) http=$NGX_HTTP https=$NGX_HTTPS pid=$ngx_worker ;;
    haproxy) http=$HAP_HTTP https=$HAP_HTTPS pid=$hap_pid ;;
    rproxy) http=$RP_HTTP https=$RP_HTTPS pid=$rp_pid ;;
    upstream) http=$UP_PORT ;;
    esac
    parse_scenario "$1"
    case $kind in
    h1 | upstream) run_wrk "http://localhost:$http/" "$conns" ;;
    gzip) run_wrk "http://localhost:$http/gz/" "$conns" -H "Accept-Encoding: gzip" ;;
    h2) run_h2load "$https" -t1 -c"$clients" -m"$streams" -D "$DURATION" --warm-up-time=1 ;;
    h2c)
        h2c_conns_probe "$pid"
        run_h2load_url "https://localhost:$https/h2c/" -t1 -c"$clients" -m"$streams" -D "$DURATION" \
            --warm-up-time=1
        wait "$probe" || true
        open=$(cat "$work/h2c-conns.txt" 2>/dev/null || echo '?')
        echo "$2's connections to the h2c listener mid-run ($1): $open" >>"$work/raw.txt"
        log "$1 $2: $open connections to the h2c listener mid-run"
        ;;
    tls-new) run_h2load "$https" -t1 -c"$HANDSHAKES" -n"$HANDSHAKES" -m1 ;;
    h1-rate)
        run_h2load_url "http://localhost:$http/" --h1 -t1 -c"$CONNS" -m1 --rps=$((RATE / CONNS)) \
            -D "$DURATION" --warm-up-time=1
        ;;
    h2-rate)
        run_h2load "$https" -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" --rps=$((RATE / H2_CLIENTS)) \
            -D "$DURATION" --warm-up-time=1
        ;;
    *) die "unknown scenario $1" ;;
    esac
}

results=$work/results.tsv
: >"$results"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] && commit+=" (src modified)"
echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC'), rproxy at $commit"
echo "machine:  $(nproc) CPUs, $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)," \
    "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
echo "rproxy:   $RPROXY_BIN, built $(date -u -r "$RPROXY_BIN" '+%Y-%m-%d %H:%M UTC')," \
    "upstream keepalive: $([[ -n $rp_keepalive ]] && echo 1024 || echo 'not supported by this build')"
echo "tools:    $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "haproxy/" $3}')," \
    "$(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')," \
    "$(h2load --version | head -1 | awk '{print "h2load " $2}')"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the runs;" \
    "pinning: $([[ $PIN == 1 ]] && echo 'load generators on CPU 1, servers on CPU 0' || echo none)"
echo "limits:   open files $nofile, somaxconn $somaxconn, haproxy maxconn $hap_maxconn"
log "nginx worker $ngx_worker, haproxy $hap_pid, rproxy $rp_pid; ${ROUNDS} rounds of: $SCENARIOS" \
    "(${DURATION}s runs)"
# busy idle steal: the machine's CPU ticks so far (steal = taken by the hypervisor).
ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat; }
ticks_start=$(ticks)
row_format='%-10s %-8s %5s %9s %8s %8s %7s %12s %11s\n'
# shellcheck disable=SC2059
printf "$row_format" scenario target round 'req/s' 'p50 ms' 'p99 ms' failed 'peak RSS KiB' \
    'CPU us/req'
# Scenario by scenario, each with its rounds: the 2,000-connection burst of tls-new comes after
# the keep-alive runs, so the memory it leaves behind does not count in their peaks.
for scenario in $SCENARIOS; do
    for round in $(seq "$ROUNDS"); do
        # Every peer in turn, the order rotated each round.
        peers=(nginx haproxy rproxy)
        r=$(((round - 1) % 3))
        targets="${peers[*]:r} ${peers[*]:0:r}"
        [[ $scenario == upstream ]] && targets=upstream
        for target in $targets; do
            case $target in
            nginx) pid=$ngx_worker ;;
            haproxy) pid=$hap_pid ;;
            rproxy) pid=$rp_pid ;;
            upstream) pid=$up_worker ;;
            esac
            sleep 1 # let the previous run's connections close
            [[ $target != upstream ]] && peak_reset "$pid"
            cpu0=$(cpu_ns "$pid")
            row=$(run_scenario "$scenario" "$target") || exit 1
            cpu1=$(cpu_ns "$pid")
            read -r rps p50 p99 failed count <<<"$row"
            # One request per connection, timed from after the handshake: not a latency figure.
            [[ $scenario == tls-new ]] && p50=- p99=-
            [[ -n $rps && $count -gt 0 ]] || die "no result for $scenario against $target"
            rss=-
            [[ $target != upstream ]] && rss=$(peak_kib "$pid")
            cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$count" 'BEGIN { printf "%.1f", (b - a) / n / 1000 }')
            # shellcheck disable=SC2059
            printf "$row_format" "$scenario" "$target" "$round" "$rps" "$p50" "$p99" "$failed" \
                "$rss" "$cpu"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$round" "$rps" \
                "$p50" "$p99" "$failed" "$rss" "$cpu" >>"$results"
        done
    done
done
kill -0 "$rp_pid" 2>/dev/null || die "rproxy exited during the run (see $work/rproxy.log)"
kill -0 "$hap_pid" 2>/dev/null || die "haproxy exited during the run (see $work/haproxy/haproxy.log)"
read -r b0 i0 s0 <<<"$ticks_start"
read -r b1 i1 s1 <<<"$(ticks)"
awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) -v s=$((s1 - s0)) 'BEGIN { t = b + i + s
    printf "machine during the runs: %.0f%% busy, %.0f%% idle, %.0f%% stolen by the hypervisor\n",
        100 * b / t, 100 * i / t, 100 * s / t }'

# --- profile (optional) ------------------------------------------------------------------------
if [[ -n ${PROFILE:-} ]]; then
    mkdir -p "$PROFILE"
    command -v perf >/dev/null || die "PROFILE needs perf (Debian: linux-perf)"
    PROFILE_SCENARIO=${PROFILE_SCENARIO:-h1-100}
    log "profiling rproxy under the $PROFILE_SCENARIO load for ${DURATION}s into $PROFILE"
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,65528 -p "$rp_pid" \
        -o "$PROFILE/perf.data" -- sleep $((DURATION + 1)) 2>"$PROFILE/record.log" &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 0.5
    run_scenario "$PROFILE_SCENARIO" rproxy >"$PROFILE/load.txt"
    wait "$perf_pid" || true
    report() { perf report -i "$PROFILE/perf.data" --stdio -g none --percent-limit 0.3 "$@" 2>/dev/null; }
    report --no-children --sort dso >"$PROFILE/by-dso.txt"
    report --no-children --sort symbol >"$PROFILE/self.txt"
    report --children --sort symbol >"$PROFILE/inclusive.txt"
    log "profile written: $PROFILE/{by-dso,self,inclusive}.txt"
fi

# --- instructions per request (optional) -------------------------------------------------------
# Each proxy in turn under callgrind (which counts user-space instructions exactly, whatever else
# the machine does): warm up, zero the counters, one h1 run with 10 connections, dump, and divide
# the instructions by the requests wrk counted. The measured instances are stopped first (same
# ports); nginx runs as one process (master_process off) so that its worker is the one counted.
count_ir() { # name url command... -> "instructions requests"
    local name=$1 url=$2 vg out requests ir
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name" "$@" \
        >>"$work/$name-callgrind.log" 2>&1 &
    vg=$!
    pids+=("$vg")
    wait_http "$url"
    timeout 60 wrk -t1 -c10 -d3s "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null
    out=$(timeout $((DURATION + 60)) wrk -t1 -c10 -d"${DURATION}s" -s "$work/report.lua" "$url" |
        grep '^RESULT') || die "wrk failed against $name under callgrind"
    callgrind_control -d "$vg" >/dev/null
    kill -TERM "$vg" 2>/dev/null || true
    timeout 30 tail --pid="$vg" -f /dev/null 2>/dev/null || kill -KILL "$vg" 2>/dev/null || true
    requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
    ir=$(cat "$work/callgrind.$name".*[0-9] 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')
    echo "$ir $requests"
}
if [[ -n ${INSTRUCTIONS:-} ]]; then
    log "instructions per request under callgrind (${DURATION}s h1 runs, 10 connections)"
    kill -TERM "$rp_pid" "$ngx_master" "$hap_pid" 2>/dev/null || true
    for p in "$rp_pid" "$ngx_master" "$hap_pid"; do
        timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || true
    done
    read -r ngx_ir ngx_n <<<"$(count_ir nginx "http://127.0.0.1:$NGX_HTTP/" \
        nginx -e "$work/nginx-proxy/error.log" -p "$work/nginx-proxy" \
        -c "$work/nginx-proxy/nginx.conf" -g 'daemon off; master_process off;')"
    read -r hap_ir hap_n <<<"$(count_ir haproxy "http://127.0.0.1:$HAP_HTTP/" \
        haproxy -db -f "$work/haproxy/haproxy.cfg")"
    read -r rp_ir rp_n <<<"$(RPROXY_LOG=warn count_ir rproxy "http://127.0.0.1:$RP_HTTP/" \
        "$RPROXY_BIN" -c "$work/proxy.yaml")"
    echo
    awk -v a="$ngx_ir" -v an="$ngx_n" -v h="$hap_ir" -v hn="$hap_n" -v b="$rp_ir" -v bn="$rp_n" 'BEGIN {
        if (an == 0 || hn == 0 || bn == 0 || a == 0 || h == 0) { print "instructions: no requests counted"; exit }
        printf "instructions per h1 request (callgrind): nginx %.0f (%d requests), haproxy %.0f (%d requests), rproxy %.0f (%d requests); rproxy / nginx %.2f, rproxy / haproxy %.2f\n",
            a / an, an, h / hn, hn, b / bn, bn, (b / bn) / (a / an), (b / bn) / (h / hn) }'
fi

# --- summary ------------------------------------------------------------------------------------
echo
echo "median of $ROUNDS rounds (one disturbed round does not move it); x = rproxy / the better peer" \
    "(the higher req/s, the lower p99); RSS: the highest peak of the rounds, x = rproxy / nginx;" \
    "CPU: the proxy's CPU time per request in us (nginx: its worker); failed: failed or non-2xx" \
    "responses over all rounds"
awk -F'\t' -v scenarios="$SCENARIOS" -v conns="$CONNS" '
    # med(k, col): the median of column col over the rounds of key k (insertion sort; mawk has no asort).
    function med(k, col,    m, i, j, t, v) {
        m = n[k]
        for (i = 1; i <= m; i++) v[i] = val[k, col, i] + 0
        for (i = 2; i <= m; i++) {
            t = v[i]
            for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]
            v[j + 1] = t
        }
        return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    function lat(k) { return sprintf("%.2f/%.2f", med(k, 5), med(k, 6)) }
    {
        k = $1 SUBSEP $2
        r = ++n[k]
        for (c = 4; c <= 9; c++) val[k, c, r] = $c
        fail[k] += $7
        if ($8 != "-" && $8 > rss[k]) rss[k] = $8
    }
    END {
        ns = split(scenarios, s, " ")
        for (i = 1; i <= ns; i++) {
            a = s[i] SUBSEP "nginx"; h = s[i] SUBSEP "haproxy"; b = s[i] SUBSEP "rproxy"
            if (s[i] != "upstream" && n[a] && n[h] && n[b]) pts[++np] = s[i]
        }
        if (!np) exit
        printf "%-10s %10s %11s %10s %5s %-8s %13s %13s %13s %5s %s\n", "scenario", "nginx r/s",
            "haproxy r/s", "rproxy r/s", "x", "better", "nginx p50/99", "hapr p50/99", "rprx p50/99",
            "p99 x", "lower p99"
        for (i = 1; i <= np; i++) {
            p = pts[i]; a = p SUBSEP "nginx"; h = p SUBSEP "haproxy"; b = p SUBSEP "rproxy"
            best = med(h, 4) > med(a, 4) ? h : a
            ratio[p] = med(b, 4) / med(best, 4)
            bname[p] = best == h ? "haproxy" : "nginx"
            if (p == "tls-new") {
                la = lh = lb = px[p] = lname[p] = "-"
            } else {
                low = med(h, 6) < med(a, 6) ? h : a
                la = lat(a); lh = lat(h); lb = lat(b)
                lname[p] = low == h ? "haproxy" : "nginx"
                px[p] = med(low, 6) > 0 ? sprintf("%.2f", med(b, 6) / med(low, 6)) : "-"
            }
            printf "%-10s %10.0f %11.0f %10.0f %5.2f %-8s %13s %13s %13s %5s %s\n", p, med(a, 4),
                med(h, 4), med(b, 4), ratio[p], bname[p], la, lh, lb, px[p], lname[p]
        }
        print ""
        printf "%-10s %9s %9s %9s %5s %9s %9s %9s %16s\n", "scenario", "nginx KiB", "hapr KiB",
            "rprx KiB", "RSS x", "nginx CPU", "hapr CPU", "rprx CPU", "failed n/h/r"
        for (i = 1; i <= np; i++) {
            p = pts[i]; a = p SUBSEP "nginx"; h = p SUBSEP "haproxy"; b = p SUBSEP "rproxy"
            printf "%-10s %9d %9d %9d %5.2f %9.1f %9.1f %9.1f %16s\n", p, rss[a], rss[h], rss[b],
                rss[a] ? rss[b] / rss[a] : 0, med(a, 9), med(h, 9), med(b, 9),
                sprintf("%d/%d/%d", fail[a], fail[h], fail[b])
        }
        print ""
        for (i = 1; i <= np; i++) {
            p = pts[i]; a = p SUBSEP "nginx"; h = p SUBSEP "haproxy"; b = p SUBSEP "rproxy"
            printf "verdict %-10s %-7s rproxy %.3f x the req/s of %s", p,
                (ratio[p] >= 1.0 ? "ahead:" : "behind:"), ratio[p], bname[p]
            if (px[p] != "-") printf ", p99 %s x that of %s", px[p], lname[p]
            if (fail[a] + fail[h] + fail[b] > 0)
                printf "; FAILED requests: nginx %d, haproxy %d, rproxy %d", fail[a], fail[h], fail[b]
            print ""
        }
        u = "upstream" SUBSEP "upstream"; p = "h1-" conns
        if (!n[p SUBSEP "rproxy"]) p = "h1"
        if (n[u] && n[p SUBSEP "rproxy"] && n[p SUBSEP "nginx"] && n[p SUBSEP "haproxy"])
            printf "upstream alone (wrk, %d connections): %.0f req/s, p50/p99 %.2f/%.2f ms, %.1f us CPU/req; %s through nginx = %.0f%%, haproxy = %.0f%%, rproxy = %.0f%% of it\n",
                conns, med(u, 4), med(u, 5), med(u, 6), med(u, 9), p,
                100 * med(p SUBSEP "nginx", 4) / med(u, 4), 100 * med(p SUBSEP "haproxy", 4) / med(u, 4),
                100 * med(p SUBSEP "rproxy", 4) / med(u, 4)
        else if (n[u])
            printf "upstream alone (wrk, %d connections): %.0f req/s, p50/p99 %.2f/%.2f ms, %.1f us CPU/req\n",
                conns, med(u, 4), med(u, 5), med(u, 6), med(u, 9)
    }' "$results"
