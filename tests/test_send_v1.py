"""POST /v1/messages: accepted messages are stored, normalised and readable."""

from __future__ import annotations

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


def test_trailing_question_mark_and_slash_work(server: Server) -> None:
    body = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "?"}
    with server.client() as client:
        for path in ("/v1/messages?", "/v1/messages/"):
            response = client.post(path, json=body, auth=server.basic)
            assert response.status_code == 202, (path, response.text)
