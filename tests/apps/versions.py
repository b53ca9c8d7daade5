"""An ASGI app that says which HTTP version reached it (Hypercorn serves HTTP/2 as "2"),
for tests/upstream_protocols.rs; /stream sends `n` chunks of `size` bytes."""
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health():
    return {"ok": True}


@app.api_route("/version", methods=["GET", "POST"])
async def version(request: Request):
    body = await request.body()
    return {
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
