"""The official `vonage` Python SDK (4.x) against a real Missive over HTTPS.

The SDK always builds `https://{api_host}{path}` and lets `requests` verify the
certificate, so the server runs with `--tls-self-signed` and the SDK is told only two
things: `api_host` and, through REQUESTS_CA_BUNDLE, which certificate to trust.
"""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from vonage import Auth, HttpClientOptions, Vonage
from vonage_application import (
    ApplicationConfig,
    ApplicationUrl,
    Capabilities,
    Keys,
    ListApplicationsFilter,
    Messages,
    MessagesWebhooks,
)
from vonage_http_client.errors import AuthenticationError, HttpRequestError, NotFoundError
from vonage_messages import (
    MessengerImage,
    MessengerOptions,
    MessengerResource,
    MessengerText,
    Sms,
    SmsOptions,
    ViberText,
    ViberTextOptions,
)

from tests.harness import Server, missive_json, provisioned_server


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("missive-tls")
    # Dispatch off: what a test reads back is what the API stored, status `accepted`.
    running = provisioned_server(
        data_dir, "--tls-self-signed", scheme="https", env={"MISSIVE_DISPATCH_IN_SERVE": "false"}
    )
    try:
        cert = data_dir / "tls" / "missive-selfsigned.crt"
        assert cert.is_file(), running.log()
        running.extra["cert"] = cert
        running.extra["api_host"] = running.url.removeprefix("https://")
        yield running
    finally:
        # The SDK clients of the tests are gone, but their keep-alive connections stay open
        # until collected, and the server's graceful shutdown would wait 10 s for them.
        gc.collect()
        running.stop()


@pytest.fixture
def cert(tls_server: Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's certificate, trusted by `requests` (and so by the SDK) for this test."""
    path: Path = tls_server.extra["cert"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(path))
    return path


def sdk(server: Server, **auth: str) -> Vonage:
    return Vonage(Auth(**auth), HttpClientOptions(api_host=server.extra["api_host"]))


def jwt_sdk(server: Server, app_id: str | None = None, private_key: str | None = None) -> Vonage:
    return sdk(server, application_id=app_id or server.app_id, private_key=private_key or server.private_key)


def basic_sdk(server: Server, api_key: str | None = None, api_secret: str | None = None) -> Vonage:
    return sdk(server, api_key=api_key or server.api_key, api_secret=api_secret or server.api_secret)


def stored(
    server: Server, cert: Path, message_uuid: str, basic: tuple[str, str] | None = None
) -> dict[str, Any]:
    """GET /v1/messages/{uuid} over httpx, trusting only the server's certificate."""
    verify = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=server.url, verify=verify, timeout=30) as client:
        response = client.get(f"/v1/messages/{message_uuid}", auth=basic or server.basic)
    assert response.status_code == 200, response.text
    return response.json()


def new_public_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private_pem, public_pem


def public_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def messages_capability(status_url: str, inbound_url: str) -> Capabilities:
    return Capabilities(
        messages=Messages(
            webhooks=MessagesWebhooks(
                status_url=ApplicationUrl(address=status_url, http_method="POST"),
                inbound_url=ApplicationUrl(address=inbound_url, http_method="POST"),
            )
        )
    )


SMS_TEXT = "hello from the SDK"

SDK_MESSAGES = [
    pytest.param(
        Sms(to="447700900000", from_="Acme", text=SMS_TEXT, client_ref="sdk-sms", sms=SmsOptions(encoding_type="text")),
        {
            "channel": "sms",
            "message_type": "text",
            "to": "447700900000",
            "from": "Acme",
            "client_ref": "sdk-sms",
            "content": {"text": SMS_TEXT, "sms": {"encoding_type": "text"}},
        },
        id="sms",
    ),
    pytest.param(
        MessengerText(
            to="1234567890",
            from_="9876543210",
            text="your ticket moved",
            messenger=MessengerOptions(category="message_tag", tag="CONFIRMED_EVENT_UPDATE"),
        ),
        {
            "channel": "messenger",
            "message_type": "text",
            "to": "1234567890",
            "from": "9876543210",
            "content": {
                "text": "your ticket moved",
                "messenger": {"category": "message_tag", "tag": "CONFIRMED_EVENT_UPDATE"},
            },
        },
        id="messenger-text-message-tag",
    ),
    pytest.param(
        ViberText(
            to="447700900001",
            from_="16273",
            text="your order shipped",
            viber_service=ViberTextOptions(category="transaction", ttl=600),
        ),
        {
            "channel": "viber_service",
            "message_type": "text",
            "to": "447700900001",
            "from": "16273",
            "content": {"text": "your order shipped", "viber_service": {"category": "transaction", "ttl": 600}},
        },
        id="viber-text",
    ),
    pytest.param(
        MessengerImage(to="1234567890", from_="9876543210", image=MessengerResource(url="https://example.com/cat.jpg")),
        {
            "channel": "messenger",
            "message_type": "image",
            "to": "1234567890",
            "from": "9876543210",
            "content": {"image": {"url": "https://example.com/cat.jpg"}, "messenger": {"category": "response"}},
        },
        id="messenger-image",
    ),
]


def test_server_prints_the_certificate_it_serves(tls_server: Server) -> None:
    assert f"TLS certificate: {tls_server.extra['cert'].resolve()}" in tls_server.log()


def test_the_sdk_trusts_the_server_only_through_requests_ca_bundle(
    tls_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client = jwt_sdk(tls_server)
    with pytest.raises(requests.exceptions.SSLError):
        client.messages.send(Sms(to="447700900000", from_="Acme", text="untrusted"))


@pytest.mark.parametrize(("message", "expected"), SDK_MESSAGES)
def test_jwt_send_is_stored(tls_server: Server, cert: Path, message: Any, expected: dict[str, Any]) -> None:
    client = jwt_sdk(tls_server)
    response = client.messages.send(message)
    assert response.message_uuid
    sent = client.http_client.last_request
    assert sent.url == f"https://{tls_server.extra['api_host']}/v1/messages"
    authorization = sent.headers["Authorization"]
    assert (authorization.decode() if isinstance(authorization, bytes) else authorization).startswith("Bearer ")

    view = stored(tls_server, cert, response.message_uuid)
    assert view["message_uuid"] == response.message_uuid
    assert view["status"] == "accepted"
    assert view["application_id"] == tls_server.app_id
    for key, value in expected.items():
        assert view[key] == value, key


def test_basic_auth_sms(tls_server: Server, cert: Path) -> None:
    client = basic_sdk(tls_server)
    response = client.messages.send(Sms(to="14155550100", from_="447700900002", text="basic auth", ttl=600))
    assert client.http_client.last_request.headers["Authorization"].startswith("Basic ")

    view = stored(tls_server, cert, response.message_uuid)
    assert view["channel"] == "sms"
    assert view["to"] == "14155550100"
    assert view["from"] == "447700900002"
    assert view["content"] == {"text": "basic auth", "ttl": 600}
    assert "application_id" not in view


def test_invalid_params_reach_the_sdk_as_an_http_error(tls_server: Server, cert: Path) -> None:
    # The SDK's Sms allows 3200 characters; the Messages API (and Missive) allow 1000.
    client = jwt_sdk(tls_server)
    with pytest.raises(HttpRequestError) as error:
        client.messages.send(Sms(to="447700900000", from_="Acme", text="x" * 1001))
    assert type(error.value) is HttpRequestError
    response = error.value.response
    assert response.status_code == 422
    assert response.json()["invalid_parameters"] == [
        {"name": "text", "reason": "String should have at most 1000 characters"}
    ]


@pytest.fixture
def account(tls_server: Server) -> dict[str, str]:
    """A second account of its own, so that application counts are exact."""
    return missive_json(tls_server.data_dir, "account", "create")


def test_application_lifecycle(tls_server: Server, cert: Path, account: dict[str, str]) -> None:
    client = basic_sdk(tls_server, account["api_key"], account["api_secret"])
    apps = client.application

    created = apps.create_application(
        ApplicationConfig(
            name="sdk app",
            capabilities=messages_capability("https://example.com/status", "https://example.com/inbound"),
        )
    )
    assert created.id
    assert created.name == "sdk app"
    assert created.link == f"/v2/applications/{created.id}"
    webhooks = created.capabilities.messages.webhooks
    assert webhooks.status_url.address == "https://example.com/status"
    assert webhooks.status_url.http_method == "POST"
    assert webhooks.inbound_url.address == "https://example.com/inbound"
    private_key = created.keys.model_extra["private_key"]
    assert "BEGIN PRIVATE KEY" in private_key
    assert public_of(private_key) == created.keys.public_key

    # The returned private key is the application's: it signs JWTs the server accepts.
    sent = jwt_sdk(tls_server, created.id, private_key).messages.send(
        Sms(to="447700900000", from_="Acme", text="new app")
    )
    own_basic = (account["api_key"], account["api_secret"])
    assert stored(tls_server, cert, sent.message_uuid, own_basic)["application_id"] == created.id
    # ...and another account cannot read that message.
    with httpx.Client(base_url=tls_server.url, verify=ssl.create_default_context(cafile=str(cert))) as other:
        assert other.get(f"/v1/messages/{sent.message_uuid}", auth=tls_server.basic).status_code == 404

    others = [
        apps.create_application(ApplicationConfig(name=f"sdk app {n}")) for n in (2, 3)
    ]
    everything, next_page = apps.list_applications()
    assert [a.id for a in everything] == [created.id] + [a.id for a in others]
    assert next_page is None
    assert "private_key" not in (everything[0].keys.model_extra or {})

    first, next_page = apps.list_applications(ListApplicationsFilter(page_size=2))
    assert [a.id for a in first] == [created.id, others[0].id]
    assert next_page == 2
    second, next_page = apps.list_applications(ListApplicationsFilter(page_size=2, page=2))
    assert [a.id for a in second] == [others[1].id]
    assert next_page is None

    fetched = apps.get_application(created.id)
    assert fetched.name == "sdk app"
    assert fetched.keys.public_key == created.keys.public_key
    assert fetched.capabilities.messages.webhooks.status_url.address == "https://example.com/status"

    updated = apps.update_application(
        created.id,
        ApplicationConfig(
            name="sdk app renamed",
            capabilities=messages_capability("https://example.com/status2", "https://example.com/inbound"),
        ),
    )
    assert updated.id == created.id
    assert updated.name == "sdk app renamed"
    assert updated.capabilities.messages.webhooks.status_url.address == "https://example.com/status2"
    assert updated.keys.public_key == created.keys.public_key
    refetched = apps.get_application(created.id)
    assert refetched.name == "sdk app renamed"
    assert refetched.capabilities.messages.webhooks.status_url.address == "https://example.com/status2"

    assert apps.delete_application(created.id) is None
    with pytest.raises(NotFoundError) as missing:
        apps.get_application(created.id)
    assert missing.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        apps.delete_application(created.id)
    remaining, _ = apps.list_applications()
    assert [a.id for a in remaining] == [a.id for a in others]


def test_application_with_own_public_key(tls_server: Server, cert: Path) -> None:
    private_pem, public_pem = new_public_key()
    apps = basic_sdk(tls_server).application
    created = apps.create_application(ApplicationConfig(name="byo key", keys=Keys(public_key=public_pem)))
    assert created.keys.public_key == public_pem
    assert "private_key" not in (created.keys.model_extra or {})
    assert apps.get_application(created.id).keys.public_key == public_pem

    sent = jwt_sdk(tls_server, created.id, private_pem).messages.send(
        Sms(to="447700900000", from_="Acme", text="own key")
    )
    assert stored(tls_server, cert, sent.message_uuid)["application_id"] == created.id
    apps.delete_application(created.id)


def test_wrong_api_secret_is_an_authentication_error(tls_server: Server, cert: Path) -> None:
    client = basic_sdk(tls_server, api_secret="Wrong0Secret0000")
    with pytest.raises(AuthenticationError) as messages_error:
        client.messages.send(Sms(to="447700900000", from_="Acme", text="nope"))
    assert messages_error.value.response.status_code == 401
    with pytest.raises(AuthenticationError) as applications_error:
        client.application.list_applications()
    assert applications_error.value.response.status_code == 401


def test_jwt_signed_with_another_key_is_an_authentication_error(tls_server: Server, cert: Path) -> None:
    other_private, _ = new_public_key()
    client = jwt_sdk(tls_server, tls_server.app_id, other_private)
    with pytest.raises(AuthenticationError) as error:
        client.messages.send(Sms(to="447700900000", from_="Acme", text="nope"))
    assert error.value.response.status_code == 401
    assert error.value.response.headers["content-type"].startswith("application/")
    assert error.value.response.json()["title"] == "Unauthorized"
