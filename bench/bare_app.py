"""The baseline for bench/accept.py: the same stack as `missive serve`, doing nothing.

Starlette served by uvicorn with the options `missive serve` uses (uvloop, httptools
with each answer written in one send, no access log, one worker). It answers every POST /v1/messages with 202 and a small
JSON body, so the ratio missive/bare is what Missive's own work costs.

    python bench/bare_app.py --port 8081
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The shape of Missive's answer, so both servers send the same number of bytes.
BODY = b'{"message_uuid":"00000000-0000-4000-8000-000000000000"}'


async def accept(request: Request) -> Response:
    return Response(BODY, 202, media_type="application/json")


app = Starlette(routes=[Route("/v1/messages", accept, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="missive.api.joined_writes:JoinedWritesProtocol",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
