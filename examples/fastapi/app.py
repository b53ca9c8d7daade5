"""A small FastAPI app to put behind rproxy.

Every answer names the worker that produced it (the port it listens on, and its pid), so you can
watch rproxy spread requests over several workers:

    GET  /api/hello     JSON greeting from this worker
    GET  /api/headers   the forwarding headers this worker received (X-Forwarded-*, Host, ...)
    GET  /api/slow      answers after ?seconds=N (default 1): try it while stopping rproxy
    GET  /health        200 while healthy, 503 after POST /admin/fail
    POST /admin/fail    make this worker's /health answer 503 (rproxy then stops sending to it)
    POST /admin/recover make /health answer 200 again
    WS   /ws            WebSocket echo: every text or binary message comes back unchanged

Run one worker with `python3 -m uvicorn app:app --host 127.0.0.1 --port 8001`, or three workers and
rproxy in front of them with `./run.sh`.
"""

import asyncio
import os
import socket

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

app = FastAPI(title="rproxy example")

# Per worker process: each uvicorn worker is its own process with its own flag.
_healthy = True


def _worker(scope) -> dict:
    """Identify this worker: the port it listens on (from the ASGI scope), its pid and host
    (containers all listen on 8000 as pid 1, so the hostname tells them apart)."""
    server = scope.get("server") or (None, None)
    return {"worker": server[1], "pid": os.getpid(), "host": socket.gethostname()}


@app.get("/api/hello")
async def hello(request: Request) -> dict:
    return {"message": "hello from FastAPI", **_worker(request.scope)}


@app.get("/api/headers")
async def headers(request: Request) -> dict:
    wanted = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip")
    return {"headers": {k: request.headers.get(k) for k in wanted}, **_worker(request.scope)}


@app.get("/api/slow")
async def slow(request: Request, seconds: float = 1.0) -> dict:
    await asyncio.sleep(max(0.0, min(seconds, 30.0)))
    return {"slept": seconds, **_worker(request.scope)}


@app.get("/health")
async def health(request: Request) -> JSONResponse:
    body = {"healthy": _healthy, **_worker(request.scope)}
    return JSONResponse(body, status_code=200 if _healthy else 503)


@app.post("/admin/fail")
async def fail(request: Request) -> dict:
    global _healthy
    _healthy = False
    return {"healthy": _healthy, **_worker(request.scope)}


@app.post("/admin/recover")
async def recover(request: Request) -> dict:
    global _healthy
    _healthy = True
    return {"healthy": _healthy, **_worker(request.scope)}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return
