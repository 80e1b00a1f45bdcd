"""Malformed and hostile requests: every one gets the exact status and an RFC 7807 body.

One table, one request per row, against the real server. For each row we check the
status, `Content-Type: application/problem+json`, the problem keys, the problem `type`,
for validation errors the exact set of `invalid_parameters[].name` (every bad field
named, nothing else), that every 401 is the same body apart from `instance`, and that
no answer ever leaks a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import Server

ERRORS = "https://developer.nexmo.com/api-errors"
T_INVALID = f"{ERRORS}/messages#1150"
T_UNSUPPORTED_CHANNEL = f"{ERRORS}/messages#1240"
T_UNAUTHORIZED = f"{ERRORS}#unauthorized"
T_INVALID_JSON = f"{ERRORS}#invalid-json"
T_TOO_LARGE = f"{ERRORS}#request-too-large"
T_CONTENT_TYPE = f"{ERRORS}#content-type-header"
T_NOT_FOUND = f"{ERRORS}#not-found"
T_WRONG_VERB = f"{ERRORS}#wrong-verb"
DEFAULT_TYPE = {
    400: T_INVALID_JSON,
    401: T_UNAUTHORIZED,
    404: T_NOT_FOUND,
    405: T_WRONG_VERB,
    413: T_TOO_LARGE,
    415: T_CONTENT_TYPE,
    422: T_INVALID,
}
UNAUTHORIZED_BODY = {
    "type": T_UNAUTHORIZED,
    "title": "Unauthorized",
    "detail": "You did not provide correct credentials.",
}
PROBLEM_KEYS = {"type", "title", "detail", "instance"}
MAX_BODY = 1024 * 1024  # Settings.max_body_bytes default: 1 MiB


# --- bodies -----------------------------------------------------------------------------

_DROP = object()


def _build(base: dict, overrides: dict) -> dict:
    body = dict(base)
    for key, value in overrides.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def sms(**overrides: object) -> dict:
    return _build(
        {
            "channel": "sms",
            "message_type": "text",
            "to": "447700900000",
            "from": "Acme",
            "text": "hi",
        },
        overrides,
    )


def sms_from(sender: object) -> dict:
    return _build(sms(), {"from": sender})


def messenger(**overrides: object) -> dict:
    return _build(
        {
            "channel": "messenger",
            "message_type": "text",
            "to": "1234567890",
            "from": "9876543210",
            "text": "hi",
        },
        overrides,
    )


def viber(**overrides: object) -> dict:
    return _build(
        {
            "channel": "viber_service",
            "message_type": "text",
            "to": "447700900000",
            "from": "16273",
            "text": "hi",
        },
        overrides,
    )


def beta(channel: str = "sms", content: dict | None = None, **message_options: object) -> dict:
    if channel == "sms":
        sender, recipient = (
            {"type": "sms", "number": "447700900001"},
            {"type": "sms", "number": "447700900000"},
        )
    elif channel == "messenger":
        sender, recipient = (
            {"type": "messenger", "id": "9876543210"},
            {"type": "messenger", "id": "1234567890"},
        )
    else:
        sender, recipient = (
            {"type": channel, "id": "16273"},
            {"type": channel, "number": "447700900000"},
        )
    message: dict = {"content": content or {"type": "text", "text": "Hello"}, **message_options}
    return {"from": sender, "to": recipient, "message": message}


def beta_with(body: dict, path: str, value: object) -> dict:
    """A copy of `body` with the dotted `path` set to `value` (or removed with _DROP)."""
    copy = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = copy
    for part in parents:
        node = node[part]
    if value is _DROP:
        node.pop(last, None)
    else:
        node[last] = value
    return copy


def exactly_one_mib() -> bytes:
    """A valid message padded with trailing whitespace to exactly the body limit."""
    raw = json.dumps(sms(text="at the byte limit")).encode()
    return raw + b" " * (MAX_BODY - len(raw))


def over_one_mib() -> bytes:
    raw = json.dumps(sms(text="x" * MAX_BODY)).encode()
    assert len(raw) > MAX_BODY
    return raw


def chunked_over_one_mib() -> Iterator[bytes]:
    """No Content-Length: the server has to count while it reads."""
    yield b'{"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "'
    for _ in range(17):
        yield b"x" * 65536
    yield b'"}'


# --- credentials ------------------------------------------------------------------------

Auth = Callable[[Server], dict[str, str]]


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")))


def basic_auth(server: Server) -> dict[str, str]:
    return {"Authorization": "Basic " + b64(f"{server.api_key}:{server.api_secret}")}


def no_auth(_server: Server) -> dict[str, str]:
    return {}


def bearer_auth(server: Server) -> dict[str, str]:
    return server.bearer()


def header(value: str) -> Auth:
    return lambda _server: {"Authorization": value}


def bearer_token(make: Callable[[Server], str]) -> Auth:
    return lambda server: {"Authorization": f"Bearer {make(server)}"}


def claims(server: Server, **extra: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "application_id": server.app_id,
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
    }
    payload.update(extra)
    return payload


@cache
def _public_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@lru_cache(maxsize=1)
def _stranger_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def jwt_alg_none(server: Server) -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(claims(server))}."


def jwt_hs256_with_public_key(server: Server) -> str:
    """The classic key-confusion attack: HMAC keyed with the (public) RSA key."""
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT'})}.{b64url_json(claims(server))}"
    mac = hmac.new(_public_pem(server.private_key), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def jwt_tampered(server: Server) -> str:
    head, payload, signature = server.jwt().split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["jti"] = "tampered-" + str(uuid.uuid4())
    return f"{head}.{b64url_json(decoded)}.{signature}"


def jwt_other_alg(algorithm: str) -> Callable[[Server], str]:
    return lambda server: jwt.encode(claims(server), server.private_key, algorithm=algorithm)


def signed(**extra: object) -> Callable[[Server], str]:
    """A token signed with the application's real key, with claims computed at send time.

    Callables in `extra` are called with the current time.
    """

    def make(server: Server) -> str:
        now = int(time.time())
        resolved = {k: (v(now) if callable(v) else v) for k, v in extra.items()}
        return server.jwt(**resolved)

    return make


# --- the table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    body: object = None  # JSON-encoded when `raw` is None
    raw: bytes | Callable[[], bytes | Iterable[bytes]] | None = None
    content_type: str | None = "application/json"
    auth: Auth = basic_auth
    params: Callable[[Server], dict[str, str]] | None = None
    method: str = "POST"
    path: str = "/v1/messages"
    invalid: frozenset[str] | None = None  # exact invalid_parameters names for 422
    type: str | None = None  # problem type; DEFAULT_TYPE[status] when None
    xfail: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


def bad(case_id: str, body: object, *names: str, status: int = 422, **kwargs: object) -> Case:
    """A validation failure naming exactly `names`."""
    return Case(case_id, status, body=body, invalid=frozenset(names), **kwargs)  # type: ignore[arg-type]


def ok(case_id: str, body: object, **kwargs: object) -> Case:
    return Case(case_id, 202, body=body, **kwargs)  # type: ignore[arg-type]


def unauthorized(case_id: str, auth: Auth, **kwargs: object) -> Case:
    return Case(case_id, 401, body=sms(), auth=auth, **kwargs)  # type: ignore[arg-type]


def now_minus(seconds: int) -> Callable[[int], int]:
    return lambda now: now - seconds


def now_plus(seconds: int) -> Callable[[int], int]:
    return lambda now: now + seconds


CASES: list[Case] = [
    # -- wrong JSON types, one field at a time ---------------------------------------------
    bad("type-to-number", sms(to=447700900000), "to"),
    bad("type-from-number", sms_from(447700900001), "from"),
    bad("type-text-list", sms(text=["hi"]), "text"),
    bad("type-text-number-messenger", messenger(text=5), "text"),
    bad("type-ttl-string", sms(ttl="600"), "ttl"),
    bad("type-ttl-float", sms(ttl=600.0), "ttl"),
    bad("type-ttl-bool", sms(ttl=True), "ttl"),
    bad("type-client_ref-object", sms(client_ref={"id": 1}), "client_ref"),
    bad("type-channel-number", sms(channel=5), "channel"),
    bad("type-channel-list", sms(channel=["sms"]), "channel"),
    bad("type-message_type-list", sms(message_type=["text"]), "message_type"),
    bad("type-sms-options-string", sms(sms="unicode"), "sms"),
    bad("type-messenger-options-list", messenger(messenger=["response"]), "messenger"),
    bad(
        "type-image-string",
        messenger(message_type="image", image="https://example.com/a.jpg"),
        "image",
    ),
    bad("type-webhook_url-number", sms(webhook_url=42), "webhook_url"),
    bad(
        "type-many-fields-at-once",
        sms(to=447700900000, text=["a"], ttl="600", client_ref={"x": 1}),
        "to",
        "text",
        "ttl",
        "client_ref",
    ),
    # -- missing fields ----------------------------------------------------------------------
    bad("missing-channel", sms(channel=_DROP), "channel"),
    bad("missing-message_type", sms(message_type=_DROP), "message_type"),
    bad("missing-to", sms(to=_DROP), "to"),
    bad("missing-from", sms_from(_DROP), "from"),
    bad("missing-text-sms", sms(text=_DROP), "text"),
    bad("missing-text-messenger", messenger(text=_DROP), "text"),
    bad("missing-image", messenger(message_type="image", text=_DROP), "image"),
    bad(
        "missing-image-url",
        messenger(message_type="image", text=_DROP, image={"caption": "c"}),
        "image.url",
    ),
    bad("missing-everything", {}, "channel"),
    # -- lengths -------------------------------------------------------------------------------
    ok("limit-sms-text-1000", sms(text="a" * 1000)),
    bad("over-sms-text-1001", sms(text="a" * 1001), "text"),
    ok("limit-messenger-text-640", messenger(text="a" * 640)),
    bad("over-messenger-text-641", messenger(text="a" * 641), "text"),
    ok("limit-viber-text-1000", viber(text="a" * 1000)),
    bad("over-viber-text-1001", viber(text="a" * 1001), "text"),
    bad("empty-text", sms(text=""), "text"),
    ok("limit-client_ref-100", sms(client_ref="r" * 100)),
    bad("over-client_ref-101", sms(client_ref="r" * 101), "client_ref"),
    bad("over-messenger-to-51", messenger(to="1" * 51), "to"),
    # -- numbers and senders -----------------------------------------------------------------
    bad("number-letters", sms(to="44770090000a"), "to"),
    bad("number-all-letters", sms(to="not-a-number"), "to"),
    bad("number-too-short", sms(to="123456"), "to"),
    bad("number-too-long", sms(to="4477009000001234"), "to"),
    bad("number-leading-00", sms(to="00447700900000"), "to"),
    bad("number-leading-0", sms(to="07700900000"), "to"),
    bad("number-unknown-country-999", sms(to="999123456789"), "to"),
    bad("number-impossible-length-fr", sms(to="33123456"), "to"),
    bad("number-impossible-length-us", sms(to="141555501"), "to"),
    bad("number-viber-unknown-country", viber(to="999123456789"), "to"),
    bad("sender-alphanumeric-12", sms_from("AcmeCorpLtd1"), "from"),
    bad("sender-alphanumeric-15", sms_from("AcmeCorporation"), "from"),
    bad("sender-bad-characters", sms_from("Acme<script>"), "from"),
    bad("sender-numeric-2-digits", sms_from("12"), "from"),
    ok("sender-alphanumeric-11", sms_from("AcmeCorpLtd")),
    # -- channels and message types ----------------------------------------------------------
    bad("channel-unknown", sms(channel="telegram"), "channel"),
    bad("channel-empty-string", sms(channel=""), "channel"),
    bad("channel-mms-unsupported", sms(channel="mms"), "channel", type=T_UNSUPPORTED_CHANNEL),
    bad("channel-whatsapp-from-a-name", sms(channel="whatsapp"), "from"),
    bad(
        "type-audio-on-viber",
        viber(message_type="audio", text=_DROP, audio={"url": "https://example.com/a.mp3"}),
        "message_type",
    ),
    bad(
        "type-image-on-sms",
        sms(message_type="image", image={"url": "https://example.com/a.jpg"}),
        "message_type",
    ),
    # Without `text`, sms also names the text an sms needs: both fields are wrong for sms.
    bad(
        "type-image-on-sms-without-text",
        sms(message_type="image", text=_DROP, image={"url": "https://example.com/a.jpg"}),
        "message_type",
        "text",
    ),
    bad("type-unknown-message_type", sms(message_type="hologram"), "message_type"),
    # -- channel options -----------------------------------------------------------------------
    bad(
        "messenger-message_tag-without-tag",
        messenger(messenger={"category": "message_tag"}),
        "messenger.tag",
    ),
    bad(
        "messenger-tag-with-response",
        messenger(messenger={"category": "response", "tag": "ticket_update"}),
        "messenger.tag",
    ),
    bad(
        "messenger-tag-without-category",
        messenger(messenger={"tag": "ticket_update"}),
        "messenger.tag",
    ),
    bad("messenger-bad-category", messenger(messenger={"category": "spam"}), "messenger.category"),
    bad(
        "viber-bad-category",
        viber(viber_service={"category": "marketing"}),
        "viber_service.category",
    ),
    bad("viber-ttl-29", viber(viber_service={"ttl": 29}), "viber_service.ttl"),
    bad("viber-ttl-259201", viber(viber_service={"ttl": 259201}), "viber_service.ttl"),
    ok("viber-ttl-30", viber(viber_service={"ttl": 30})),
    ok("viber-ttl-259200", viber(viber_service={"ttl": 259200})),
    bad("viber-ttl-string", viber(viber_service={"ttl": "600"}), "viber_service.ttl"),
    bad("sms-ttl-19", sms(ttl=19), "ttl"),
    bad("sms-ttl-604801", sms(ttl=604801), "ttl"),
    bad("sms-ttl-negative", sms(ttl=-1), "ttl"),
    ok("sms-ttl-20", sms(ttl=20)),
    ok("sms-ttl-604800", sms(ttl=604800)),
    bad("sms-bad-encoding_type", sms(sms={"encoding_type": "utf8"}), "sms.encoding_type"),
    bad(
        "sms-bad-encoding-and-content_id",
        sms(sms={"encoding_type": "ascii", "content_id": "c" * 101}),
        "sms.encoding_type",
        "sms.content_id",
    ),
    # -- URLs and webhook_version ------------------------------------------------------------
    bad("webhook_url-javascript", sms(webhook_url="javascript:alert(1)"), "webhook_url"),
    bad("webhook_url-ftp", sms(webhook_url="ftp://example.com/status"), "webhook_url"),
    bad("webhook_url-relative", sms(webhook_url="/status"), "webhook_url"),
    bad("webhook_url-no-host", sms(webhook_url="https:///status"), "webhook_url"),
    bad("webhook_url-empty", sms(webhook_url=""), "webhook_url"),
    bad(
        "media-url-javascript",
        messenger(message_type="image", text=_DROP, image={"url": "javascript:alert(1)"}),
        "image.url",
    ),
    bad(
        "media-url-ftp",
        viber(message_type="file", text=_DROP, file={"url": "ftp://example.com/a.pdf"}),
        "file.url",
    ),
    bad(
        "media-url-relative",
        messenger(message_type="video", text=_DROP, video={"url": "video.mp4"}),
        "video.url",
    ),
    bad(
        "webhook_url-port-out-of-range",
        sms(webhook_url="http://example.com:99999/status"),
        "webhook_url",
    ),
    bad(
        "webhook_url-space-in-host",
        sms(webhook_url="http://exa mple.com/status"),
        "webhook_url",
    ),
    bad("webhook_version-v2", sms(webhook_version="v2"), "webhook_version"),
    bad("webhook_version-number", sms(webhook_version=1), "webhook_version"),
    ok("webhook_url-https", sms(webhook_url="https://example.com/status", webhook_version="v0.1")),
    # -- bodies that are not a message ------------------------------------------------------
    bad(
        "failover-not-a-list",
        sms(failover="nope"),
        "failover",
    ),
    bad("body-json-array", [sms()], "body"),
    bad("body-json-string", "hello", "body"),
    bad("body-json-null", None, "body"),
    bad("body-json-number", 42, "body"),
    Case("body-empty", 400, raw=b""),
    Case("body-whitespace-only", 400, raw=b"  \r\n\t "),
    Case("body-malformed-json", 400, raw=b'{"channel": "sms", "to": '),
    Case("body-trailing-garbage", 400, raw=json.dumps(sms()).encode() + b" }{"),
    Case("body-single-quotes", 400, raw=b"{'channel': 'sms'}"),
    Case("body-nan", 400, raw=b'{"channel": "sms", "ttl": NaN}'),
    Case("body-deep-open-brackets-100k", 400, raw=b"[" * 100_000),
    Case("body-deep-balanced-100k", 400, raw=b"[" * 100_000 + b"]" * 100_000),
    Case(
        "body-deep-objects-in-field",
        400,
        raw=b'{"client_ref": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    ),
    bad(
        "body-moderately-deep-in-field",
        sms(client_ref=json.loads("[" * 500 + "]" * 500)),
        "client_ref",
    ),
    Case(
        "body-huge-integer-400-digits", 400, raw=b'{"channel": "sms", "ttl": 1' + b"0" * 400 + b"}"
    ),
    Case("body-huge-exponent", 400, raw=b'{"channel": "sms", "ttl": 1e400}'),
    bad(
        "body-integer-over-u64",
        None,
        "ttl",
        raw=json.dumps(sms()).encode()[:-1] + b', "ttl": 18446744073709551616}',
    ),
    Case("body-invalid-utf8", 400, raw=b'{"channel": "sms", "text": "\xff\xfe"}'),
    Case("body-lone-surrogate", 400, raw=b'{"channel": "sms", "text": "\\ud800"}'),
    Case("body-utf16-encoded", 400, raw=json.dumps(sms()).encode("utf-16")),
    ok("body-exactly-1mib", None, raw=exactly_one_mib),
    Case("body-over-1mib-content-length", 413, raw=over_one_mib),
    Case("body-over-1mib-chunked", 413, raw=chunked_over_one_mib),
    # -- content types -------------------------------------------------------------------------
    Case("content-type-text-plain", 415, raw=json.dumps(sms()).encode(), content_type="text/plain"),
    Case("content-type-missing", 415, raw=json.dumps(sms()).encode(), content_type=None),
    Case(
        "content-type-form",
        415,
        raw=b"channel=sms&message_type=text&to=447700900000&from=Acme&text=hi",
        content_type="application/x-www-form-urlencoded",
    ),
    Case("content-type-text-json", 415, raw=json.dumps(sms()).encode(), content_type="text/json"),
    Case(
        "content-type-jsonp-lookalike",
        415,
        raw=json.dumps(sms()).encode(),
        content_type="application/jsonp",
    ),
    ok("content-type-json-charset", sms(), content_type="application/json; charset=utf-8"),
    # -- the beta format: errors carry the beta paths ----------------------------------------
    ok("beta-valid-control", beta(), path="/v0.1/messages"),
    bad(
        "beta-text-too-long",
        beta(content={"type": "text", "text": "a" * 1001}),
        "message.content.text",
        path="/v0.1/messages",
    ),
    bad(
        "beta-text-list",
        beta(content={"type": "text", "text": ["a"]}),
        "message.content.text",
        path="/v0.1/messages",
    ),
    bad(
        "beta-to-number-letters",
        beta_with(beta(), "to.number", "abc"),
        "to.number",
        path="/v0.1/messages",
    ),
    bad(
        "beta-to-number-int",
        beta_with(beta(), "to.number", 447700900000),
        "to.number",
        path="/beta/messages",
    ),
    bad(
        "beta-messenger-tag-missing",
        beta("messenger", messenger={"category": "message_tag"}),
        "message.messenger.tag",
        path="/v0.1/messages",
    ),
    bad(
        "beta-from-type-mismatch",
        beta_with(beta(), "from", {"type": "messenger", "id": "9876543210"}),
        "from.type",
        path="/v0.1/messages",
    ),
    bad(
        "beta-viber-ttl",
        beta("viber_service_msg", viber_service_msg={"ttl": 10}),
        "message.viber_service_msg.ttl",
        path="/v0.1/messages",
    ),
    bad(
        "beta-to-missing-number",
        beta_with(beta(), "to.number", _DROP),
        "to.number",
        path="/v0.1/messages",
    ),
    bad(
        "beta-missing-message",
        beta_with(beta(), "message", _DROP),
        "message",
        path="/v0.1/messages",
    ),
    bad(
        "beta-unknown-channel",
        beta_with(beta_with(beta(), "to.type", "telegram"), "from.type", "telegram"),
        "to.type",
        "from.type",
        path="/v0.1/messages",
    ),
    bad(
        "beta-mms-unsupported",
        beta_with(beta_with(beta(), "to.type", "mms"), "from.type", "mms"),
        "to.type",
        path="/v0.1/messages",
        type=T_UNSUPPORTED_CHANNEL,
    ),
    bad(
        "beta-image-missing",
        beta("messenger", content={"type": "image"}),
        "message.content.image",
        path="/v0.1/messages",
    ),
    bad(
        "beta-client_ref-too-long",
        {**beta(), "client_ref": "r" * 101},
        "client_ref",
        path="/v0.1/messages",
    ),
    bad("beta-body-array", [beta()], "body", path="/v0.1/messages"),
    bad(
        "beta-type-error-and-length-error",
        beta_with(beta(content={"type": "text", "text": "a" * 1001}), "to.number", 447700900000),
        "to.number",
        "message.content.text",
        path="/v0.1/messages",
    ),
    bad(
        "beta-type-mismatch-and-length-error",
        beta_with(
            beta(content={"type": "text", "text": "a" * 1001}),
            "from",
            {"type": "messenger", "id": "9"},
        ),
        "from.type",
        "message.content.text",
        path="/v0.1/messages",
    ),
    # -- authentication --------------------------------------------------------------------------
    unauthorized("auth-none", no_auth),
    unauthorized(
        "auth-basic-wrong-secret",
        lambda s: {"Authorization": "Basic " + b64(f"{s.api_key}:wrong-secret")},
    ),
    unauthorized(
        "auth-basic-unknown-key",
        lambda s: {"Authorization": "Basic " + b64(f"deadbeef:{s.api_secret}")},
    ),
    unauthorized("auth-basic-not-base64", header("Basic !!!not-base64!!!")),
    unauthorized(
        "auth-basic-no-colon", lambda s: {"Authorization": "Basic " + b64(s.api_key + s.api_secret)}
    ),
    unauthorized(
        "auth-basic-empty-secret", lambda s: {"Authorization": "Basic " + b64(f"{s.api_key}:")}
    ),
    unauthorized("auth-basic-no-value", header("Basic")),
    unauthorized("auth-basic-invalid-utf8", header("Basic " + b64(b"\xff\xfe:\xff"))),
    # NUL: PostgreSQL text cannot hold it; the key's lookup failed there with a 500.
    unauthorized("auth-basic-nul-in-key", lambda s: {"Authorization": "Basic " + b64(f"dead\x00beef:{s.api_secret}")}),
    unauthorized("auth-basic-nul-in-secret", lambda s: {"Authorization": "Basic " + b64(f"{s.api_key}:se\x00cret")}),
    unauthorized("auth-query-nul-in-key", no_auth, params=lambda s: {"api_key": "a\x00b", "api_secret": s.api_secret}),
    unauthorized("jwt-application_id-nul", bearer_token(signed(application_id=lambda _now: "app\x00id"))),
    unauthorized(
        "auth-unknown-scheme",
        lambda s: {"Authorization": "Digest " + b64(f"{s.api_key}:{s.api_secret}")},
    ),
    ok(
        "auth-query-valid",
        sms(),
        auth=no_auth,
        params=lambda s: {"api_key": s.api_key, "api_secret": s.api_secret},
    ),
    unauthorized(
        "auth-query-wrong-secret",
        no_auth,
        params=lambda s: {"api_key": s.api_key, "api_secret": "nope"},
    ),
    unauthorized("auth-query-key-only", no_auth, params=lambda s: {"api_key": s.api_key}),
    unauthorized(
        "auth-query-valid-but-bad-header",
        header("Basic " + b64("deadbeef:nope")),
        params=lambda s: {"api_key": s.api_key, "api_secret": s.api_secret},
    ),
    ok("auth-jwt-valid", sms(), auth=bearer_auth),
    unauthorized("jwt-alg-none", bearer_token(jwt_alg_none)),
    unauthorized("jwt-hs256-public-key-as-secret", bearer_token(jwt_hs256_with_public_key)),
    unauthorized("jwt-rs512-right-key", bearer_token(jwt_other_alg("RS512"))),
    unauthorized("jwt-ps256-right-key", bearer_token(jwt_other_alg("PS256"))),
    unauthorized("jwt-expired", bearer_token(signed(exp=now_minus(3600)))),
    unauthorized("jwt-iat-too-old-no-exp", bearer_token(signed(iat=now_minus(16 * 60 + 60)))),
    unauthorized("jwt-iat-in-future", bearer_token(signed(iat=now_plus(3600)))),
    unauthorized("jwt-iat-string", bearer_token(signed(iat=lambda now: str(now)))),
    unauthorized("jwt-nbf-in-future", bearer_token(signed(nbf=now_plus(3600)))),
    unauthorized(
        "jwt-unknown-application",
        bearer_token(signed(application_id=lambda _now: str(uuid.uuid4()))),
    ),
    unauthorized("jwt-application_id-number", bearer_token(signed(application_id=12345))),
    unauthorized(
        "jwt-missing-application_id", bearer_token(signed(application_id=lambda _now: None))
    ),
    unauthorized("jwt-other-rsa-key", bearer_token(lambda s: s.jwt(private_key=_stranger_key()))),
    unauthorized("jwt-tampered-payload", bearer_token(jwt_tampered)),
    unauthorized("jwt-missing-iat", bearer_token(signed(iat=lambda _now: None))),
    unauthorized("jwt-garbage", header("Bearer garbage")),
    unauthorized("jwt-three-garbage-parts", header("Bearer a.b.c")),
    unauthorized("jwt-empty", header("Bearer")),
    unauthorized(
        "jwt-payload-is-array",
        bearer_token(lambda s: f"{b64url_json({'alg': 'RS256'})}.{b64url_json([1])}.x"),
    ),
    unauthorized(
        "jwt-exp-huge-integer-signed",
        bearer_token(signed(exp=10**400)),
    ),
    unauthorized(
        "jwt-iat-huge-negative-signed-no-exp",
        bearer_token(signed(iat=-(10**400))),
    ),
    # -- other routes ----------------------------------------------------------------------------
    Case(
        "read-unknown-message",
        404,
        method="GET",
        path=f"/v1/messages/{uuid.uuid4()}",
        raw=b"",
        content_type=None,
    ),
    Case(
        "read-sql-ish-id",
        404,
        method="GET",
        path="/v1/messages/'%20OR%201=1%20--",
        raw=b"",
        content_type=None,
    ),
    Case("unknown-path", 404, path="/v2/messages", body=sms()),
    Case("wrong-verb-put", 405, method="PUT", body=sms()),
    Case(
        "search-bad-filters",
        422,
        method="GET",
        raw=b"",
        content_type=None,
        params=lambda _s: {
            "status": "bogus",
            "channel": "pigeon",
            "since": "yesterday",
            "page_size": "0",
        },
        invalid=frozenset({"status", "channel", "since", "page_size"}),
    ),
    Case(
        "search-page_size-superscript-digit",
        422,
        method="GET",
        raw=b"",
        content_type=None,
        params=lambda _s: {"page_size": "\u00b2"},
        invalid=frozenset({"page_size"}),
    ),
    Case(
        "apps-page_size-superscript-digit",
        422,
        method="GET",
        path="/v2/applications",
        raw=b"",
        content_type=None,
        params=lambda _s: {"page_size": "\u00b2"},
        invalid=frozenset({"page_size"}),
    ),
    Case(
        "search-bad-cursor-and-status",
        422,
        method="GET",
        raw=b"",
        content_type=None,
        params=lambda _s: {"status": "bogus", "cursor": "!!!"},
        invalid=frozenset({"status", "cursor"}),
    ),
]


def _param(case: Case):  # type: ignore[no-untyped-def]
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def test_table_is_big_and_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 45


def _content(case: Case) -> bytes | Iterable[bytes]:
    if case.raw is not None:
        return case.raw() if callable(case.raw) else case.raw
    return json.dumps(case.body).encode()


def send(server: Server, case: Case) -> httpx.Response:
    headers = {**case.auth(server), **case.extra_headers}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    content = _content(case)
    kwargs: dict = {"headers": headers, "params": case.params(server) if case.params else None}
    if case.method in ("POST", "PUT", "PATCH") or content:
        kwargs["content"] = content
    with server.client() as client:
        response = client.request(case.method, case.path, **kwargs)
    sent = response.request.headers
    if case.content_type is None:
        assert "content-type" not in sent
    if isinstance(content, bytes) and "content" in kwargs:
        assert sent["content-length"] == str(len(content))
    elif "content" in kwargs:
        assert sent.get("transfer-encoding") == "chunked" and "content-length" not in sent
    return response


def assert_no_leak(response: httpx.Response) -> None:
    text = response.text
    assert "Traceback" not in text, text
    assert 'File "' not in text, text


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_hostile_request(server: Server, case: Case) -> None:
    response = send(server, case)
    assert_no_leak(response)
    assert response.status_code == case.status, response.text

    if case.status < 400:
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json().get("message_uuid"), str)
        return

    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert isinstance(problem, dict), problem
    assert problem.keys() >= PROBLEM_KEYS, problem
    assert problem.keys() <= PROBLEM_KEYS | {"invalid_parameters"}, problem
    for key in PROBLEM_KEYS:
        assert isinstance(problem[key], str) and problem[key], (key, problem)
    assert problem["type"] == (case.type or DEFAULT_TYPE[case.status]), problem

    if case.status == 401:
        assert {k: v for k, v in problem.items() if k != "instance"} == UNAUTHORIZED_BODY

    if case.invalid is None:
        assert "invalid_parameters" not in problem, problem
        return
    params = problem.get("invalid_parameters")
    assert isinstance(params, list) and params, problem
    names = [p["name"] for p in params]
    for p in params:
        assert set(p) == {"name", "reason"} and isinstance(p["reason"], str) and p["reason"], p
    assert len(names) == len(set(names)), f"a field named twice: {names}"
    assert set(names) == case.invalid, problem


def test_every_401_is_the_same_body(server: Server) -> None:
    """Across all the credential failures of the table: one body, a fresh instance each."""
    bodies, instances = [], set()
    for case in CASES:
        if case.status != 401 or case.xfail:
            continue
        response = send(server, case)
        assert response.status_code == 401, (case.id, response.text)
        problem = response.json()
        instances.add(problem.pop("instance"))
        bodies.append(problem)
    assert len(bodies) >= 20
    assert all(body == UNAUTHORIZED_BODY for body in bodies), bodies
    assert len(instances) == len(bodies), "instance must be a fresh trace id per answer"


def test_client_hanging_up_mid_body_is_no_error(server: Server) -> None:
    """A client that closes the connection before its body is complete leaves one INFO
    line, not an unhandled-error traceback, and nothing is stored."""
    before = len(server.log())
    host, port = server.url.removeprefix("http://").split(":")
    user, password = server.basic
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    body = b'{"channel": "sms", "message_type": "text", "to": "447700900000", '
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(head + body)
    deadline = time.monotonic() + 5
    while "client disconnected" not in server.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    written = server.log()[before:]
    assert "client disconnected before sending its whole request body" in written, written
    assert "Traceback" not in written and '"ERROR"' not in written, written
