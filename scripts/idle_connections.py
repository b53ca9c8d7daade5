#!/usr/bin/env python3
"""Memory of rproxy at N idle HTTP/1.1 keep-alive connections.

Starts a tiny upstream (asyncio, 127.0.0.1), then rproxy with a route to it, opens N client
connections that each send one request, read the whole response and stay open and idle, then
reads rproxy's VmRSS/VmHWM from /proc/<pid>/status while all of them are open. Connections are
spread over source addresses 127.0.0.2.. so ephemeral ports never run short. Everything is
bounded: a deadline for the whole run, and rproxy and the upstream are stopped at the end.

    python3 scripts/idle_connections.py --bin target/release/rproxy [--connections 10000]

Run it through scripts/idle_connections.sh, which builds rproxy and raises `ulimit -n`.
"""

import argparse
import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rproxy_env():
    """rproxy's environment; RPROXY_LD_PRELOAD (e.g. a jemalloc .so) is preloaded into rproxy only."""
    env = {**os.environ, "RPROXY_LOG": "warn"}
    env.pop("RPROXY_LD_PRELOAD", None)
    if os.environ.get("RPROXY_LD_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["RPROXY_LD_PRELOAD"]
    return env


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def upstream_handler(reader, writer):
    """HTTP/1.1 keep-alive: answers every request head with a short 200."""
    body = b"ok\n"
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    except asyncio.CancelledError:
        pass  # the run is over; asyncio.run cancels the handlers still waiting
    finally:
        writer.close()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m is None:
        raise RuntimeError("response without content-length: %r" % head[:200])
    await reader.readexactly(int(m.group(1)))
    return status


async def open_one(i, port, sources, conns, stats, silent):
    src = f"127.0.0.{2 + i % sources}"
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(src, 0)
    )
    if silent:
        stats["silent"] = stats.get("silent", 0) + 1
    else:
        writer.write(b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n")
        await writer.drain()
        status = await read_response(reader)
        stats[status] = stats.get(status, 0) + 1
    conns.append((reader, writer))


async def open_all(n, port, sources, batch, conns, silent=False):
    stats = {}
    errors = 0
    for start in range(0, n, batch):
        results = await asyncio.gather(
            *(open_one(i, port, sources, conns, stats, silent) for i in range(start, min(n, start + batch))),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, Exception):
                errors += 1
                if errors <= 5:
                    print(f"  connection error: {r!r}", file=sys.stderr)
    return stats, errors


async def still_open(conns):
    """Connections rproxy has not closed: no EOF is waiting to be read."""
    alive = 0
    for reader, _ in conns:
        if not reader.at_eof() and not reader._buffer:  # nothing arrived while idle
            alive += 1
    return alive


async def wait_port(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rproxy exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("rproxy did not start listening")


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the rproxy binary")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500, help="connections opened at once")
    ap.add_argument("--sources", type=int, default=50, help="source addresses 127.0.0.2..")
    ap.add_argument("--threads", type=int, default=2, help="rproxy server.threads")
    ap.add_argument("--deadline", type=float, default=240, help="seconds for the whole run")
    ap.add_argument("--waves", type=int, default=1,
                    help="open, measure and close the connections this many times in one rproxy")
    ap.add_argument("--silent", action="store_true",
                    help="connect and send nothing (server.header_timeout is raised to 60s)")
    args = ap.parse_args()
    deadline = time.monotonic() + args.deadline

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 1000
    if soft < need:
        sys.exit(f"ulimit -n is {soft}; need at least {need} (idle_connections.sh raises it)")

    upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0, backlog=4096)
    up_port = upstream.sockets[0].getsockname()[1]
    http_port, admin_port = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="rproxy-idle-")
    config = os.path.join(work, "proxy.yaml")
    with open(config, "w") as f:
        f.write(
            f"""server:
  threads: {args.threads}
  header_timeout: {"60s" if args.silent else "10s"}
  keepalive_timeout: 120s
listen:
  http: "127.0.0.1:{http_port}"
  admin: "127.0.0.1:{admin_port}"
upstreams:
  app:
    servers: [127.0.0.1:{up_port}]
routes:
  - path: /
    upstream: app
"""
        )
    log = open(os.path.join(work, "rproxy.log"), "w")
    proc = subprocess.Popen(
        [args.bin, "-c", config], stdout=log, stderr=subprocess.STDOUT,
        env=rproxy_env(),
    )
    conns = []
    try:
        await wait_port(http_port, proc, deadline)
        # One request first, so the baseline includes a warmed-up runtime and an upstream pool.
        warm = []
        stats, errors = await open_all(1, http_port, 1, 1, warm)
        for _, w in warm:
            w.close()
        await asyncio.sleep(1)
        pid = proc.pid
        base_rss, base_hwm = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
        print(f"rproxy pid {pid}, {args.threads} threads; upstream 127.0.0.1:{up_port}")
        print(f"baseline (idle, after one request): VmRSS {base_rss} KiB, VmHWM {base_hwm} KiB, fds {fd_count(pid)}")

        failed = False
        for wave in range(1, args.waves + 1):
            label = f"wave {wave}: " if args.waves > 1 else ""
            t0 = time.monotonic()
            stats, errors = await open_all(
                args.connections, http_port, args.sources, args.batch, conns, args.silent
            )
            t_open = time.monotonic() - t0
            print(f"{label}opened {len(conns)} connections in {t_open:.1f} s (errors {errors}); "
                  f"{'silent' if args.silent else 'responses'}: {stats}")
            # Let allocator and runtime settle, well inside the 120 s keepalive_timeout.
            await asyncio.sleep(5)
            alive = await still_open(conns)
            rss, hwm = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
            fds = fd_count(pid)
            since_first = time.monotonic() - t0
            print(f"{label}with {alive} idle connections open ({since_first:.0f} s after the first): "
                  f"VmRSS {rss} KiB, VmHWM {hwm} KiB, fds {fds}")
            n = max(alive, 1)
            print(f"{label}per connection: {(rss - base_rss) * 1024 / n:.0f} bytes of RSS "
                  f"({(hwm - base_hwm) * 1024 / n:.0f} bytes of peak) over the baseline")
            for (_, w) in conns:
                w.close()
            conns.clear()
            await asyncio.sleep(3)
            print(f"{label}after closing them: VmRSS {status_kib(pid, 'VmRSS')} KiB, fds {fd_count(pid)}")
            failed = failed or errors > 0 or alive < args.connections
        return 1 if failed else 0
    finally:
        for (_, w) in conns:
            w.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        upstream.close()
        log.close()


def on_term(signum, frame):
    raise SystemExit(128 + signum)  # runs the `finally` that stops rproxy


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    sys.exit(asyncio.run(main()))
