"""The webhook receiver of bench/dispatch.py: a bare ASGI app on uvicorn (httptools, uvloop).

It answers every POST with 200 at once and keeps, per webhook, its message_uuid, status
and arrival time (time.time(), comparable with the load generator's clock on the same
machine). Two GET paths serve the bench:

    GET /stats    {"total": n, "statuses": {"submitted": n, "delivered": n, ...}}
    GET /records  every webhook so far: [[message_uuid, status, arrived_at], ...]

    python bench/webhook_sink.py --port 8082
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import orjson
import uvicorn

OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
EMPTY = {"type": "http.response.body", "body": b""}
JSON = [(b"content-type", b"application/json")]

records: list[tuple[str, str, float]] = []
statuses: Counter[str] = Counter()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] == "GET":
        if scope["path"] == "/stats":
            body = orjson.dumps({"total": len(records), "statuses": statuses})
        else:
            body = orjson.dumps(records)
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": body})
        return
    event = await receive()
    body = event.get("body", b"")
    while event.get("more_body"):
        event = await receive()
        body += event.get("body", b"")
    arrived = time.time()
    payload = orjson.loads(body)
    records.append((payload["message_uuid"], payload["status"], arrived))
    statuses[payload["status"]] += 1
    await send(OK)
    await send(EMPTY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="on", workers=1)


if __name__ == "__main__":
    main()
