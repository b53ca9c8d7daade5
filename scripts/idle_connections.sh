#!/usr/bin/env bash
# rproxy's memory at 10,000 idle HTTP/1.1 keep-alive connections (docs/memory.md).
# Builds rproxy in release mode, raises the open-file limit, and runs idle_connections.py, which
# starts a tiny upstream and rproxy on 127.0.0.1, opens the connections (one request each, then
# idle) and prints VmRSS/VmHWM before, with all of them open, and per connection.
#
#   scripts/idle_connections.sh [--connections N] [--threads T] ...   (flags go to the .py)
#
# RPROXY_BIN skips the build. The run is bounded by the .py's --deadline (240 s) and, around it,
# `timeout 300`; the .py stops rproxy and the upstream itself, and the trap below is a backstop.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${RPROXY_BIN:-} ]]; then
    (cd "$root" && cargo build --release --bin rproxy)
    RPROXY_BIN=$root/target/release/rproxy
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n)"

py=
cleanup() {
    if [[ -n $py ]] && kill -0 "$py" 2>/dev/null; then kill -TERM "$py" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

timeout 300 python3 "$root/scripts/idle_connections.py" --bin "$RPROXY_BIN" "$@" &
py=$!
wait "$py"
