"""`/openapi.json` and the interactive docs at `/docs` (Swagger UI, served locally)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from missive.api.openapi import openapi_document

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Missive API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


async def openapi_json(_request: Request) -> Response:
    return Response(orjson.dumps(openapi_document()), media_type="application/json")


async def docs_page(_request: Request) -> Response:
    return HTMLResponse(PAGE)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static"),
]
