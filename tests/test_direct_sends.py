"""The send endpoints are served before Starlette's stack (missive/api/direct.py) and
answer exactly as the same endpoints behind it do."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from missive.api.app import create_app
from tests.harness import Server, provision, settings_for

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}


def _comparable(response) -> tuple[int, str, dict]:  # type: ignore[no-untyped-def]
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {"text": response.text}
    # What differs from one request to the next.
    for key in ("instance", "message_uuid"):
        if key in body:
            body[key] = type(body[key]).__name__
    return response.status_code, response.headers.get("content-type", ""), body


def test_the_exact_path_and_its_trailing_slash_answer_alike(server: Server) -> None:
    requests = [
        {"json": SMS, "auth": server.basic},
        {"json": SMS, "headers": server.bearer()},
        {"json": {**SMS, "to": "not a number", "text": ""}, "auth": server.basic},  # 422, two fields
        {"json": {**SMS, "channel": "mms"}, "auth": server.basic},  # 422 unsupported
        {"content": b'{"channel": ', "headers": {"Content-Type": "application/json"}, "auth": server.basic},
        {"content": b"channel=sms", "headers": {"Content-Type": "text/plain"}, "auth": server.basic},
        {"json": SMS, "auth": (server.api_key, "wrong")},
        {"json": SMS},
    ]
    with server.client() as client:
        for path in ("/v1/messages", "/beta/messages"):
            for kwargs in requests:
                if path == "/beta/messages" and "json" in kwargs:
                    continue  # the beta format has its own bodies, below
                direct = client.post(path, **kwargs)
                routed = client.post(f"{path}/", **kwargs)
                assert _comparable(direct) == _comparable(routed), (path, kwargs)
        beta = {"from": {"type": "sms", "number": "Acme"}, "to": {"type": "sms", "number": "447700900000"},
                "message": {"content": {"type": "text", "text": "hi"}}}
        direct = client.post("/beta/messages", json=beta, auth=server.basic)
        routed = client.post("/v0.1/messages/", json=beta, auth=server.basic)
        assert direct.status_code == 202
        assert _comparable(direct) == _comparable(routed)


def test_sends_do_not_enter_starlettes_stack(tmp_path: Path) -> None:
    account, _app = provision(tmp_path)
    app = create_app(settings_for(tmp_path, dispatch_in_serve=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        entered = []

        async def stack(scope, receive, send):  # type: ignore[no-untyped-def]
            entered.append(scope["path"])
            await send({"type": "http.response.start", "status": 418, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        app.middleware_stack = stack
        auth = (account["api_key"], account["api_secret"])
        for path in ("/v1/messages", "/v0.1/messages", "/beta/messages"):
            assert client.post(path, json=SMS, auth=auth).status_code in (202, 422), path
        assert entered == []
        # Everything else still goes through it.
        assert client.post("/v1/messages/", json=SMS, auth=auth).status_code == 418
        assert client.get("/v1/messages", auth=auth).status_code == 418
        assert entered == ["/v1/messages/", "/v1/messages"]
