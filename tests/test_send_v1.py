"""POST /v1/messages: accepted messages are stored, normalised and readable."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid

import pytest

from tests.harness import Server


def send(server: Server, body: dict, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    with server.client() as client:
        response = client.post("/v1/messages", json=body, auth=server.basic, **kwargs)
    assert response.status_code == 202, response.text
    return response.json()


def read(server: Server, message_uuid: str) -> dict:
    with server.client() as client:
        response = client.get(f"/v1/messages/{message_uuid}", auth=server.basic)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"channel": "sms", "message_type": "text", "to": "+44 7700 900000", "from": "Acme", "text": "hi"},
            {"to": "447700900000", "from": "Acme", "content": {"text": "hi"}},
        ),
        (
            {"channel": "sms", "message_type": "text", "to": "14155550100", "from": "447700900001", "text": "x",
             "sms": {"encoding_type": "unicode"}, "ttl": 600, "client_ref": "ref-1"},
            {"to": "14155550100", "client_ref": "ref-1", "content": {"text": "x", "sms": {"encoding_type": "unicode"}, "ttl": 600}},
        ),
        (
            {"channel": "messenger", "message_type": "text", "to": "1234567890", "from": "9876543210", "text": "hello"},
            {"content": {"text": "hello", "messenger": {"category": "response"}}},
        ),
        (
            {"channel": "messenger", "message_type": "image", "to": "1234", "from": "5678",
             "image": {"url": "https://example.com/cat.jpg"}, "messenger": {"category": "message_tag", "tag": "ticket_update"}},
            {"content": {"image": {"url": "https://example.com/cat.jpg"}, "messenger": {"category": "message_tag", "tag": "ticket_update"}}},
        ),
        (
            {"channel": "viber_service", "message_type": "text", "to": "447700900000", "from": "16273", "text": "hey"},
            {"content": {"text": "hey", "viber_service": {"category": "transaction"}}},
        ),
        (
            {"channel": "viber_service", "message_type": "file", "to": "01234567890A=", "from": "16273",
             "file": {"url": "https://example.com/a.pdf"}, "viber_service": {"category": "promotion", "ttl": 600}},
            {"to": "01234567890A=", "content": {"file": {"url": "https://example.com/a.pdf"}, "viber_service": {"category": "promotion", "ttl": 600}}},
        ),
    ],
    ids=["sms-normalised", "sms-options", "messenger-default-category", "messenger-tag", "viber-default-category", "viber-file"],
)
def test_accepted_message_is_stored_normalised(server: Server, body: dict, expected: dict) -> None:
    message_uuid = send(server, body)["message_uuid"]
    stored = read(server, message_uuid)
    assert stored["status"] == "accepted"
    assert stored["channel"] == body["channel"]
    assert stored["history"][0]["status"] == "accepted"
    for key, value in expected.items():
        assert stored[key] == value, key


def test_jwt_message_belongs_to_application(server: Server) -> None:
    body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "jwt"}
    with server.client() as client:
        response = client.post("/v1/messages", json=body, headers=server.bearer())
        assert response.status_code == 202, response.text
        message_uuid = response.json()["message_uuid"]
        seen = client.get(f"/v1/messages/{message_uuid}", headers=server.bearer())
    assert seen.status_code == 200
    assert seen.json()["application_id"] == server.app_id


@pytest.mark.parametrize("path", ["/v1/messages?", "/v1/messages/", "/beta/messages?", "/v0.1/messages/?"])
def test_trailing_question_mark_and_slash_work(server: Server, path: str) -> None:
    if path.startswith("/v1"):
        body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "?"}
    else:
        body = {"from": {"type": "sms", "number": "447700900001"}, "to": {"type": "sms", "number": "447700900000"},
                "message": {"content": {"type": "text", "text": "?"}}}
    # Raw bytes on a socket: HTTP clients may drop an empty query before sending.
    payload = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").split(":")
    credentials = base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {credentials}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]
    assert b'"message_uuid"' in answer


def test_message_uuids_are_time_ordered(server: Server) -> None:
    # Version 7: keys that grow with time keep the messages/outbox indexes append-only
    # (missive/ids.py); a random version 4 key would scatter every insert.
    body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}
    uuids = []
    for _ in range(3):
        uuids.append(send(server, body)["message_uuid"])
        time.sleep(0.002)  # a new millisecond: v7 orders across milliseconds
    parsed = [uuid.UUID(u) for u in uuids]
    assert [u.version for u in parsed] == [7, 7, 7]
    assert uuids == sorted(uuids)
    stamp_ms = parsed[0].int >> 80
    assert abs(stamp_ms / 1000 - time.time()) < 60
