"""An ASGI app that says how a request reached it (HTTP version: Hypercorn serves HTTP/2 as
"2"; scheme; the connection's client port), for tests/upstream_protocols.rs; `/version?wait=`
answers after that many seconds, `/stream` sends `n` chunks of `size` bytes."""
import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health():
    return {"ok": True}


@app.api_route("/version", methods=["GET", "POST"])
async def version(request: Request, wait: float = 0.0):
    body = await request.body()
    if wait:
        await asyncio.sleep(wait)
    client = request.scope.get("client") or ("", 0)
    return {
        "client_port": client[1],
        "http_version": request.scope.get("http_version"),
        "scheme": request.scope.get("scheme"),
        "body": len(body),
        "forwarded_proto": request.headers.get("x-forwarded-proto"),
    }


@app.get("/stream")
async def stream(n: int = 100, size: int = 65536):
    async def chunks():
        for _ in range(n):
            yield b"x" * size

    return StreamingResponse(chunks(), media_type="application/octet-stream")
