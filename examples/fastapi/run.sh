#!/usr/bin/env bash
# Starts three FastAPI workers on 127.0.0.1:8001-8003 and rproxy in front of them
# (http://127.0.0.1:8080, https://127.0.0.1:8443, admin http://127.0.0.1:9901).
# Ctrl-C stops rproxy gracefully, then the workers.
#
#   python3 -m pip install -r examples/fastapi/requirements.txt   # once
#   examples/fastapi/run.sh
#
# RPROXY=/path/to/rproxy uses that binary instead of building one with cargo.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! python3 -c 'import fastapi, uvicorn' 2>/dev/null; then
    echo "FastAPI or uvicorn is missing: python3 -m pip install -r $here/requirements.txt" >&2
    exit 1
fi

if [[ -z "${RPROXY:-}" ]]; then
    (cd "$root" && cargo build --release --bin rproxy)
    RPROXY="${CARGO_TARGET_DIR:-$root/target}/release/rproxy"
fi

pids=()
cleanup() {
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap cleanup EXIT

for port in 8001 8002 8003; do
    (cd "$here" && exec python3 -m uvicorn app:app --host 127.0.0.1 --port "$port" --log-level warning) &
    pids+=("$!")
done

echo "workers on 127.0.0.1:8001-8003; rproxy on http://127.0.0.1:8080 and https://127.0.0.1:8443" >&2
echo "try: curl -s http://127.0.0.1:8080/api/hello" >&2
# rproxy runs in the foreground: Ctrl-C (SIGINT) reaches it and it drains before exiting.
"$RPROXY" -c "$here/proxy.yaml"
