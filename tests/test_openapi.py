"""The published OpenAPI document describes what the server accepts."""

from __future__ import annotations

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.harness import Server

V1_OK = [
    {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"},
    {"channel": "messenger", "message_type": "video", "to": "1", "from": "2", "video": {"url": "https://e.com/v.mp4"}},
    {"channel": "viber_service", "message_type": "image", "to": "447700900000", "from": "3",
     "image": {"url": "https://e.com/i.png", "caption": "c"}, "viber_service": {"ttl": 600}},
]
V1_BAD = [
    {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "x" * 1001},
    {"channel": "fax", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"},
    {"channel": "viber_service", "message_type": "audio", "to": "1", "from": "2", "audio": {"url": "https://e.com/a"}},
    {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi", "ttl": 5},
]
BETA_OK = {"from": {"type": "sms", "number": "447700900001"}, "to": {"type": "sms", "number": "447700900000"},
           "message": {"content": {"type": "text", "text": "This is an SMS sent from the Messages API"}}}


@pytest.fixture(scope="module")
def document(server: Server) -> dict:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    return response.json()


def validator(document: dict, name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def test_every_route_is_documented(document: dict) -> None:
    paths = document["paths"]
    assert set(paths["/v1/messages"]) == {"post", "get"}
    assert {"get", "patch"} <= set(paths["/v1/messages/{message_uuid}"])
    assert "post" in paths["/v0.1/messages"] and "post" in paths["/beta/messages"]
    assert set(paths["/v2/applications"]) == {"post", "get"}
    assert set(paths["/v2/applications/{app_id}"]) == {"get", "put", "delete"}
    assert set(paths["/v1/channels"]) == {"post", "get"}
    assert set(paths["/v1/channels/{link_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/v1/numbers"]) == {"post", "get"}
    assert set(paths["/v1/numbers/{number}"]) == {"get", "patch", "put", "delete"}
    assert "post" in paths["/v1/sandbox/inbound"]
    Draft202012Validator.check_schema(document["components"]["schemas"]["V1Message"])


@pytest.mark.parametrize("body", V1_OK)
def test_documented_valid_bodies_are_accepted(server: Server, document: dict, body: dict) -> None:
    assert validator(document, "V1Message").is_valid(body)
    response = httpx.post(f"{server.url}/v1/messages", json=body, auth=server.basic)
    assert response.status_code == 202, response.text
    assert validator(document, "MessageAccepted").is_valid(response.json())


@pytest.mark.parametrize("body", V1_BAD)
def test_documented_invalid_bodies_are_refused(server: Server, document: dict, body: dict) -> None:
    assert not validator(document, "V1Message").is_valid(body)
    response = httpx.post(f"{server.url}/v1/messages", json=body, auth=server.basic)
    assert response.status_code == 422
    assert validator(document, "Problem").is_valid(response.json())


def test_beta_schema_and_read_back_shape(server: Server, document: dict) -> None:
    assert validator(document, "BetaMessage").is_valid(BETA_OK)
    sent = httpx.post(f"{server.url}/beta/messages", json=BETA_OK, auth=server.basic)
    assert sent.status_code == 202
    read = httpx.get(f"{server.url}/v1/messages/{sent.json()['message_uuid']}", auth=server.basic)
    assert validator(document, "Message").is_valid(read.json()), read.text
    page = httpx.get(f"{server.url}/v1/messages", auth=server.basic)
    assert validator(document, "MessagePage").is_valid(page.json())


def test_channel_link_and_sandbox_shapes(server: Server, document: dict) -> None:
    body = {"kind": "sandbox", "channel": "sms", "name": "doc", "config": {"delivered_after": 0.1}}
    assert validator(document, "ChannelLinkRequest").is_valid(body)
    created = httpx.post(f"{server.url}/v1/channels", json=body, auth=server.basic)
    assert created.status_code == 201, created.text
    assert validator(document, "ChannelLink").is_valid(created.json())
    listed = httpx.get(f"{server.url}/v1/channels", auth=server.basic)
    assert validator(document, "ChannelLinkList").is_valid(listed.json())
    httpx.delete(f"{server.url}/v1/channels/{created.json()['id']}", auth=server.basic)
    inbound = {"channel": "messenger", "from": "123", "text": "hi"}
    assert validator(document, "SandboxInbound").is_valid(inbound)
    sent = httpx.post(f"{server.url}/v1/sandbox/inbound", json=inbound, auth=server.basic)
    assert sent.status_code == 202 and validator(document, "MessageAccepted").is_valid(sent.json())


def test_interactive_docs_are_served_locally(server: Server) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    script = httpx.get(f"{server.url}/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
