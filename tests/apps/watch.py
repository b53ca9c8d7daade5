"""The app behind rproxy in tests/every_answer.rs: it tells what it saw of each request.

- POST /upload reads the body as it comes and records the bytes it got and whether the body
  ended (a body cut by rproxy must never look complete here).
- GET /slow works up to `secs` seconds (before any response byte), polling
  `request.is_disconnected()`; it records when it saw its client leave.
- GET /sse streams an event every 100 ms for up to `secs` seconds, and records when it saw
  its client leave.
- GET /seen returns everything recorded, by request tag (`?tag=`).
"""
import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

app = FastAPI()
seen = {}


def record(tag, **what):
    seen.setdefault(tag, {}).update(what)


@app.post("/upload")
async def upload(request: Request, tag: str = ""):
    got = 0
    record(tag, started=True)
    try:
        async for chunk in request.stream():
            got += len(chunk)
            record(tag, bytes=got)
    except ClientDisconnect:
        record(tag, bytes=got, complete=False)
        return JSONResponse({"bytes": got})
    record(tag, bytes=got, complete=True)
    return JSONResponse({"bytes": got})


@app.get("/slow")
async def slow(request: Request, tag: str = "", secs: float = 8.0):
    start = time.monotonic()
    record(tag, started=True)
    while time.monotonic() - start < secs:
        if await request.is_disconnected():
            record(tag, left_after=time.monotonic() - start)
            return JSONResponse({"left": True})
        await asyncio.sleep(0.05)
    record(tag, finished=True)
    return JSONResponse({"left": False})


@app.get("/sse")
async def sse(request: Request, tag: str = "", secs: float = 8.0):
    start = time.monotonic()
    record(tag, started=True)

    async def events():
        n = 0
        try:
            while time.monotonic() - start < secs:
                if await request.is_disconnected():
                    record(tag, left_after=time.monotonic() - start)
                    return
                yield f"data: {n}\n\n"
                n += 1
                await asyncio.sleep(0.1)
            record(tag, finished=True)
        except asyncio.CancelledError:
            record(tag, left_after=time.monotonic() - start)
            raise

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/seen")
async def get_seen(tag: str):
    return JSONResponse(seen.get(tag, {}))


@app.get("/health")
async def health():
    return {"ok": True}
