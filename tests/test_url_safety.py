"""Outbound URL safety: which webhook and media URLs Missive accepts and sends to.

The checker itself (every refused range, IPv6 forms, numeric spellings, internal names);
the API and the CLI refusing internal URLs with the field named; and a real server with
MISSIVE_ALLOW_PRIVATE_URLS=false whose webhook sender refuses a receiver on 127.0.0.1,
does not follow a redirect to it, and cuts off receivers that answer too much or too
slowly. 127.0.0.2 stands for an allowed receiver (MISSIVE_ALLOWED_URL_NETWORKS): Linux
routes all of 127/8 to loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pydantic
import pytest

from missive.channels.base import ChannelLink, OutboundMessage
from missive.channels.viber import ViberChannel
from missive.config import Settings
from missive.url_guard import AddressGuard, GuardedResolver, RefusedAddress
from missive.url_safety import STRICT, UnsafeUrl, UrlPolicy, address_kind, check_url, parse_networks
from tests.fakes.fake_viber import MEDIA_SIZE, FakeViber
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server, query

ALLOWED_HOST = "127.0.0.2"
TIMEOUT = 2.0
REFUSING = {
    "MISSIVE_ALLOW_PRIVATE_URLS": "false",
    "MISSIVE_ALLOWED_URL_NETWORKS": f"{ALLOWED_HOST}/32",
    "MISSIVE_WEBHOOK_TIMEOUT": str(TIMEOUT),
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.2",
    "MISSIVE_POLL_INTERVAL": "0.05",
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.1",
}
SILENT = "447700900003"  # the sandbox answers `submitted` and nothing more: one status webhook


# -- the checker ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.170", "reserved"),
        ("192.0.2.1", "documentation"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "reserved"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
        ("fc00::1", "private"),
        ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata service
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("2001::1", "reserved"),  # Teredo
        ("100::1", "reserved"),
        ("64:ff9b:1::1", "private"),
        # IPv6 forms carrying an IPv4 address are judged by it.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_kind(ip) == kind
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeUrl, match="must not point into a private network"):
        check_url(f"http://{host}:8080/status")
    assert check_url(f"http://{host}:8080/status", UrlPolicy(allow_private=True))


@pytest.mark.parametrize(
    "url",
    ["https://example.com/status", "http://8.8.8.8/", "http://1.1.1.1:8080/x", "http://[2606:4700:4700::1111]/",
     "http://[::ffff:8.8.8.8]/", "http://[64:ff9b::808:808]/", "http://[2002:808:808::1]/", "http://100.128.0.1/",
     "http://172.32.0.1/", "http://192.169.0.1/", "https://hooks.example.co.uk:8443/a?b=c"],
)
def test_public_addresses_and_names_are_allowed(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0x7F000001", "017700000001", "0177.0.0.1", "127.1", "127.0.1", "0x7f.0.0.1",
     "0x7f.1", "2852039166", "0xa9fea9fe", "1.2.3.4.5", "example.123", "0"],
)
def test_numeric_spellings_other_than_dotted_quads_are_refused_even_when_private_is_allowed(host: str) -> None:
    for policy in (STRICT, UrlPolicy(allow_private=True)):
        with pytest.raises(UnsafeUrl, match="dotted-quad"):
            check_url(f"http://{host}/status", policy)


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "localhost.", "api.localhost", "metadata.google.internal", "metadata.google.internal.",
     "instance-data.ec2.internal", "metadata", "instance-data", "metadata.goog", "printer.local", "router.home.arpa",
     "db.localdomain", "kubernetes"],
)
def test_internal_names_are_refused_without_dns(host: str) -> None:
    with pytest.raises(UnsafeUrl, match="internal host name"):
        check_url(f"http://{host}:8080/status")
    assert check_url(f"http://{host}:8080/status", UrlPolicy(allow_private=True))


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)", "//example.com/x",
     "http:///x", "http://exa mple.com/", "http://example.com:99999/", "http://[::1/"],
)
def test_only_well_formed_http_urls_pass_whatever_the_policy(url: str) -> None:
    for policy in (STRICT, UrlPolicy(allow_private=True)):
        with pytest.raises(UnsafeUrl, match="absolute http or https URL"):
            check_url(url, policy)


def test_allowed_networks_open_only_themselves() -> None:
    policy = UrlPolicy(allowed_networks=parse_networks(" 127.0.0.2/32, 10.1.0.0/16 fd12::/16"))
    for allowed in ("http://127.0.0.2/", "http://10.1.200.3/", "http://[::ffff:127.0.0.2]/", "http://[fd12::5]/"):
        assert check_url(allowed, policy)
    for refused in ("http://127.0.0.1/", "http://10.2.0.1/", "http://169.254.169.254/", "http://[fd13::5]/"):
        with pytest.raises(UnsafeUrl):
            check_url(refused, policy)


def test_settings_default_to_refusing_and_reject_bad_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSIVE_ALLOW_PRIVATE_URLS", raising=False)
    monkeypatch.delenv("MISSIVE_ALLOWED_URL_NETWORKS", raising=False)
    assert Settings().allow_private_urls is False
    monkeypatch.setenv("MISSIVE_ALLOWED_URL_NETWORKS", "127.0.0.2/32,nonsense")
    with pytest.raises(pydantic.ValidationError, match="allowed_url_networks"):
        Settings()


# -- send time: resolution through the guard ----------------------------------------------


def test_the_guard_resolves_names_and_refuses_internal_answers() -> None:
    async def scenario() -> None:
        strict = AddressGuard(STRICT)
        with pytest.raises(RefusedAddress, match="localhost resolves to .* loopback address"):
            await strict.addresses("localhost")
        # Refusals are kept too: the second look costs no lookup and says the same.
        with pytest.raises(RefusedAddress, match="loopback"):
            await strict.addresses("localhost")
        loopback = UrlPolicy(allowed_networks=parse_networks("127.0.0.0/8, ::1/128"))
        found = await AddressGuard(loopback).addresses("localhost")
        assert found and all(ipaddress.ip_address(address).is_loopback for _, address in found)

    asyncio.run(scenario())


def test_aiohttp_connects_only_through_the_guard() -> None:
    """The connector's resolver is the guard: a name resolving to a refused address gets no
    connection at all, and an allowed one connects to the checked addresses."""

    async def post(policy: UrlPolicy, url: str) -> int:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(AddressGuard(policy)), use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as session, session.post(url, data=b"{}") as response:
            return response.status

    with WebhookReceiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            asyncio.run(post(STRICT, url))
        assert isinstance(refused.value.os_error, RefusedAddress)
        assert receiver.snapshot() == []
        assert asyncio.run(post(UrlPolicy(allowed_networks=parse_networks("127.0.0.1/32, ::1/128")), url)) == 200
        assert [h.path for h in receiver.snapshot()] == ["/hook"]


def test_viber_asks_media_sizes_only_where_the_policy_allows() -> None:
    """The one media fetch of Missive: Viber wants a video's size, asked of its host with a
    HEAD. A refused host, or a redirect to one, is not asked (size 0); allowed redirect
    hops are followed, each checked."""
    link = ChannelLink("link-1", "viber", "viber_service", {"service_id": "svc", "auth_token": "T", "sender_name": "Acme"})

    with FakeViber(auth_token="T") as viber, WebhookReceiver(ALLOWED_HOST) as hop:
        hop.respond = lambda hook: Reply(307, headers={"location": viber.url("/media/v.mp4")})

        def size(url: str, **settings: object) -> int:
            message = OutboundMessage("m-1", "viber_service", "video", "user-1", "svc", {"video": {"url": url}})

            async def run() -> None:
                channel = ViberChannel(Settings(viber_api_url=viber.url(), provider_timeout=2, **settings))  # type: ignore[arg-type]
                try:
                    await channel.send(message, link)
                finally:
                    await channel.close()

            asyncio.run(run())
            return int(viber.sent()[-1].json["size"])

        direct = viber.url("/media/v.mp4")
        assert size(direct) == 0
        assert size(hop.url("/v.mp4"), allowed_url_networks=f"{ALLOWED_HOST}/32") == 0
        assert [h.path for h in hop.snapshot()] == ["/v.mp4"]
        assert viber.media_heads == []
        assert size(hop.url("/v.mp4"), allowed_url_networks="127.0.0.0/8") == MEDIA_SIZE
        assert size(direct, allow_private_urls=True) == MEDIA_SIZE
        assert viber.media_heads == ["/media/v.mp4", "/media/v.mp4"]


# -- the API and the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that refuses private URLs but allows 127.0.0.2."""
    running = provisioned_server(tmp_path_factory.mktemp("refusing"), env=REFUSING)
    yield running
    running.stop()


def sms(**extra: object) -> dict:
    return {"channel": "sms", "message_type": "text", "to": SILENT, "from": "Acme", "text": "hi", **extra}


def messenger_image(url: str) -> dict:
    return {"channel": "messenger", "message_type": "image", "to": "psid-1", "from": "page-1", "image": {"url": url}}


def problem_names(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {p["name"] for p in response.json()["invalid_parameters"]}


def application(status_url: str, inbound_url: str = "https://example.com/inbound") -> dict:
    hooks = {"status_url": {"address": status_url, "http_method": "POST"},
             "inbound_url": {"address": inbound_url, "http_method": "POST"}}
    return {"name": "hooks", "capabilities": {"messages": {"webhooks": hooks}}}


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/status", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.0.0.5/",
     "http://[::ffff:169.254.169.254]/", "http://2130706433/", "http://0x7f000001/", "http://localhost:8080/",
     "http://metadata.google.internal/computeMetadata/v1/"],
)
def test_the_api_refuses_internal_webhook_urls(refusing: Server, url: str) -> None:
    with refusing.client() as client:
        response = client.post("/v1/messages", json=sms(webhook_url=url), auth=refusing.basic)
    assert problem_names(response) == {"webhook_url"}


def test_the_api_refuses_internal_media_urls_with_their_field_named(refusing: Server) -> None:
    with refusing.client() as client:
        v1 = client.post("/v1/messages", json=messenger_image("http://192.168.0.10/cat.jpg"), auth=refusing.basic)
        beta = client.post("/beta/messages", auth=refusing.basic, json={
            "from": {"type": "messenger", "id": "page-1"}, "to": {"type": "messenger", "id": "psid-1"},
            "message": {"content": {"type": "image", "image": {"url": "http://169.254.169.254/cat.jpg"}}}})
        failover = client.post("/v1/messages", auth=refusing.basic, json={
            **sms(), "failover": [{**messenger_image("http://[fd00::1]/cat.jpg")}]})
        # Several bad fields at once are all named, URLs among them.
        several = client.post("/v1/messages", auth=refusing.basic,
                              json={**messenger_image("http://127.0.0.1/x.jpg"), "webhook_url": "http://10.0.0.1/", "ttl": 1})
    assert problem_names(v1) == {"image.url"}
    assert "169.254.169.254 is a link-local" in beta.text
    assert problem_names(beta) == {"message.content.image.url"}
    assert problem_names(failover) == {"failover[0].image.url"}
    assert problem_names(several) == {"image.url", "webhook_url", "ttl"}


def test_the_api_refuses_internal_application_urls(refusing: Server) -> None:
    field = "capabilities.messages.webhooks.{}_url.address"
    with refusing.client() as client:
        created = client.post("/v2/applications", json=application("http://169.254.169.254/"), auth=refusing.basic)
        both = client.post("/v2/applications", json=application("http://10.1.1.1/", "http://localhost/"), auth=refusing.basic)
        good = client.post("/v2/applications", json=application(f"http://{ALLOWED_HOST}:9/status"), auth=refusing.basic)
        assert good.status_code == 201, good.text
        replaced = client.put(f"/v2/applications/{good.json()['id']}", json=application("http://[::1]/"), auth=refusing.basic)
    assert problem_names(created) == {field.format("status")}
    assert problem_names(both) == {field.format("status"), field.format("inbound")}
    assert problem_names(replaced) == {field.format("status")}


def test_the_api_accepts_public_and_allowed_network_urls(refusing: Server) -> None:
    # Only the local URL is used by a message: this server's sender would post to the others.
    with refusing.client() as client:
        response = client.post("/v1/messages", json=sms(webhook_url=f"http://{ALLOWED_HOST}:9/status"), auth=refusing.basic)
        assert response.status_code == 202, response.text
        for url in ("https://example.com/status", "http://[::ffff:8.8.8.8]/", "http://93.184.215.14:8080/"):
            response = client.post("/v2/applications", json=application(url), auth=refusing.basic)
            assert response.status_code == 201, (url, response.text)


def test_private_urls_are_accepted_when_allowed(server: Server) -> None:
    """The shared server of the suite runs with MISSIVE_ALLOW_PRIVATE_URLS=true (the harness's
    default): internal addresses pass; the scheme and numeric spellings are still checked."""
    with server.client() as client:
        for body in (sms(webhook_url="http://127.0.0.1:9/status"), messenger_image("http://10.0.0.1/cat.jpg")):
            response = client.post("/v1/messages", json=body, auth=server.basic)
            assert response.status_code == 202, response.text
        created = client.post("/v2/applications", json=application("http://169.254.169.254/"), auth=server.basic)
        assert created.status_code == 201, created.text
        assert problem_names(client.post("/v1/messages", json=sms(webhook_url="http://2130706433/"), auth=server.basic)) == {"webhook_url"}
        assert problem_names(client.post("/v1/messages", json=sms(webhook_url="ftp://10.0.0.1/"), auth=server.basic)) == {"webhook_url"}


def test_the_cli_refuses_internal_webhook_urls(tmp_path: Path) -> None:
    account = missive_json(tmp_path, "account", "create")
    refuse = {"MISSIVE_ALLOW_PRIVATE_URLS": "false"}
    update = missive(tmp_path, "account", "update", "--api-key", account["api_key"],
                     "--status-url", "http://169.254.169.254/", env=refuse)
    assert update.returncode == 1 and "--status-url" in update.stderr and "link-local" in update.stderr, update.stderr
    create = missive(tmp_path, "app", "create", "--name", "x", "--inbound-url", "http://localhost:3000/in", env=refuse)
    assert create.returncode == 1 and "--inbound-url" in create.stderr and "internal host name" in create.stderr, create.stderr
    bad_scheme = missive(tmp_path, "account", "update", "--api-key", account["api_key"], "--status-url", "ftp://example.com/")
    assert bad_scheme.returncode == 1 and "absolute http or https" in bad_scheme.stderr
    # Clearing with '' is always fine; allowed (the harness's default), private URLs pass.
    assert missive(tmp_path, "account", "update", "--api-key", account["api_key"], "--status-url", "", env=refuse).returncode == 0
    assert missive(tmp_path, "account", "update", "--api-key", account["api_key"],
                   "--status-url", "http://127.0.0.1:9/status").returncode == 0
    assert query(tmp_path, "SELECT status_url FROM accounts WHERE api_key = :k", k=account["api_key"]) == [("http://127.0.0.1:9/status",)]


# -- the webhook sender -------------------------------------------------------------------


def send(server: Server, body: dict, auth: tuple[str, str] | None = None) -> str:
    with server.client() as client:
        response = client.post("/v1/messages", json=body, auth=auth or server.basic)
    assert response.status_code == 202, response.text
    return str(response.json()["message_uuid"])


def webhook_of(server: Server, message_uuid: str, auth: tuple[str, str] | None = None, until=lambda hook: True,
               timeout: float = 15.0) -> dict:
    """The message's one webhook as GET /v1/messages/{uuid} shows it, once `until` holds."""
    deadline = time.monotonic() + timeout
    while True:
        with server.client() as client:
            hooks = client.get(f"/v1/messages/{message_uuid}", auth=auth or server.basic).json().get("webhooks", [])
        if hooks and until(hooks[0]):
            return hooks[0]
        assert time.monotonic() < deadline, f"webhook of {message_uuid} never matched: {hooks}"
        time.sleep(0.05)


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def attempts(server: Server, message_uuid: str) -> list[tuple]:
    return query(server.data_dir, "SELECT a.status_code, a.error, a.duration_ms FROM webhook_attempts a JOIN webhook_outbox o "
                 "ON a.webhook_id = o.id WHERE o.message_uuid = :u ORDER BY a.at", u=message_uuid)


def test_the_sender_refuses_a_stored_url_to_loopback(refusing: Server) -> None:
    """A status URL stored while private URLs were allowed (here by the CLI with the
    harness's default) is refused at send time: nothing reaches the receiver, the attempt
    is recorded with the reason, and it is retried by the normal policy."""
    account = missive_json(refusing.data_dir, "account", "create")
    auth = (account["api_key"], account["api_secret"])
    with WebhookReceiver() as receiver:
        assert missive(refusing.data_dir, "account", "update", "--api-key", account["api_key"],
                       "--status-url", receiver.url("/status")).returncode == 0
        message_uuid = send(refusing, sms(), auth)
        hook = webhook_of(refusing, message_uuid, auth, until=lambda h: h["attempts"] >= 2)
        time.sleep(0.3)
        assert receiver.snapshot() == []
    assert hook["state"] == "pending" and "last_status_code" not in hook, hook
    assert hook["last_error"] == "refused: must not point into a private network: 127.0.0.1 is a loopback address"
    assert all(code is None and error == hook["last_error"] for code, error, _ in attempts(refusing, message_uuid))


def test_a_redirect_to_a_refused_address_is_not_followed(refusing: Server) -> None:
    with WebhookReceiver() as inside, WebhookReceiver(ALLOWED_HOST) as outside:
        outside.respond = lambda hook: Reply(307, headers={"location": inside.url("/stolen")})
        message_uuid = send(refusing, sms(webhook_url=outside.url("/status")))
        hook = webhook_of(refusing, message_uuid, until=lambda h: h["attempts"] >= 2)
        time.sleep(0.3)
        assert inside.snapshot() == []
        assert len(outside.snapshot()) >= 2
    assert hook["state"] == "pending" and hook["last_status_code"] == 307, hook
    assert hook["last_error"].startswith("HTTP 307: redirects are not followed (Location: http://127.0.0.1:")


def test_an_endless_answer_is_cut_off_and_the_status_counts(refusing: Server) -> None:
    """The status line is the answer: a body that never ends costs at most BODY_LIMIT bytes
    and the connection, not the attempt."""
    with WebhookReceiver(ALLOWED_HOST) as receiver:
        receiver.respond = lambda hook: Reply(200, stream=b"x" * 65536)
        message_uuid = send(refusing, sms(webhook_url=receiver.url("/huge")))
        hook = webhook_of(refusing, message_uuid, until=lambda h: h["attempts"] >= 1)
        wait_until(lambda: receiver.disconnects)  # the sender hung up
    assert hook["state"] == "delivered" and hook["attempts"] == 1, hook
    [(code, error, duration_ms)] = attempts(refusing, message_uuid)
    assert (code, error) == (200, None) and duration_ms < 1000 * TIMEOUT / 2, duration_ms


def test_a_dribbling_or_silent_receiver_is_cut_off_at_the_timeout(refusing: Server) -> None:
    with WebhookReceiver(ALLOWED_HOST) as receiver:
        receiver.respond = lambda hook: Reply(200, stream=b".", stream_every=0.1) if hook.path == "/dribble" else Reply(200, delay=TIMEOUT + 2)
        dribbled = send(refusing, sms(webhook_url=receiver.url("/dribble")))
        silent = send(refusing, sms(webhook_url=receiver.url("/silent")))
        dribble_hook = webhook_of(refusing, dribbled, until=lambda h: h["attempts"] >= 1)
        silent_hook = webhook_of(refusing, silent, until=lambda h: h["attempts"] >= 1)
        wait_until(lambda: receiver.disconnects)  # the sender hung up on the dribbling body
    # Headers and a status came in time: delivered, the body abandoned at the deadline.
    assert dribble_hook["state"] == "delivered", dribble_hook
    [(code, error, duration_ms), *_] = attempts(refusing, dribbled)
    assert code == 200 and error is None and 1000 * TIMEOUT * 0.9 <= duration_ms < 1000 * (TIMEOUT + 1.5), duration_ms
    # No status by the deadline: a failed attempt, retried.
    assert silent_hook["state"] == "pending" and "TimeoutError" in silent_hook["last_error"], silent_hook
    [(code, error, duration_ms), *_] = attempts(refusing, silent)
    assert code is None and duration_ms < 1000 * (TIMEOUT + 1.5), duration_ms
