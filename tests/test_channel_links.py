"""Channel links: `/v1/channels`, `missive channel add|list|remove`, routing and rate limits.

Real servers on 127.0.0.1 and a real webhook receiver. What a link does is observed from
outside: the sandbox's receipt delays are exact (a `delivered` is timestamped precisely
`delivered_after` after its `submitted`), so which link carried a message shows in the
gap between its webhooks' timestamps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.webhook_receiver import Hook, WebhookReceiver
from tests.harness import Server, missive, missive_json, provisioned_server

FAST = {
    "MISSIVE_SANDBOX_DELIVERED_AFTER": "0.2",
    "MISSIVE_SANDBOX_READ_AFTER": "0.4",
    "MISSIVE_DISPATCH_BACKOFF_BASE": "0.05",
    "MISSIVE_WEBHOOK_BACKOFF_BASE": "0.05",
    "MISSIVE_POLL_INTERVAL": "0.05",
}
VIEW_KEYS = {
    "id",
    "kind",
    "channel",
    "name",
    "application_id",
    "tps",
    "default",
    "config",
    "created_at",
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def sms(to: str = "447700900000", text: str = "hello") -> dict:
    return {"channel": "sms", "message_type": "text", "to": to, "from": "Acme", "text": text}


def link_body(channel: str = "sms", **extra: Any) -> dict:
    return {
        "kind": "sandbox",
        "channel": channel,
        "name": f"link-{uuidlib.uuid4().hex[:6]}",
        **extra,
    }


def missive_many(data_dir: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several `missive` commands at once: each CLI start takes about a second."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: missive(data_dir, *args), commands))


def new_app(
    server: Server, name: str, status_url: str | None = None, auth: tuple[str, str] | None = None
) -> tuple[str, str]:
    body: dict[str, Any] = {"name": name}
    if status_url:
        body["capabilities"] = {
            "messages": {"webhooks": {"status_url": {"address": status_url, "http_method": "POST"}}}
        }
    with server.client() as client:
        response = client.post("/v2/applications", json=body, auth=auth or server.basic)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["keys"]["private_key"]


# -- the server: routing links for its first account ---------------------------------------------


DEFAULT_DELAY = 0.6  # the account's default SMS link (5 messages per second)
FIRST_DELAY = 1.2  # an account-wide SMS link made first, not the default
APP_DELAY = 0.2  # the application's own SMS link
TPS = 5


@dataclass
class Routed:
    server: Server
    receiver: WebhookReceiver
    sandbox_log: Path
    app2: tuple[str, str]  # its own link, 5/s
    app3: tuple[str, str]  # no link of its own


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    data_dir = tmp_path_factory.mktemp("routing")
    sandbox_log = data_dir / "sandbox-sends.log"
    with WebhookReceiver() as receiver:
        server = provisioned_server(data_dir, env={**FAST, "MISSIVE_SANDBOX_LOG": str(sandbox_log)})
        try:
            # All set up before the first message: nothing is cached yet.
            with server.client() as client:
                app1 = {
                    "name": "one",
                    "capabilities": {
                        "messages": {"webhooks": {"status_url": {"address": receiver.url("/app1")}}}
                    },
                }
                assert (
                    client.put(
                        f"/v2/applications/{server.app_id}", json=app1, auth=server.basic
                    ).status_code
                    == 200
                )
            app2 = new_app(server, "two", receiver.url("/app2"))
            app3 = new_app(server, "three", receiver.url("/app3"))
            assert (
                create(server, link_body(config={"delivered_after": FIRST_DELAY})).status_code
                == 201
            )
            results = missive_many(
                data_dir,
                [
                    "account",
                    "update",
                    "--api-key",
                    server.api_key,
                    "--status-url",
                    receiver.url("/account"),
                ],
                [
                    "channel",
                    "add",
                    "sandbox",
                    "--channel",
                    "sms",
                    "--tps",
                    str(TPS),
                    "--default",
                    "--delivered-after",
                    str(DEFAULT_DELAY),
                    "--api-key",
                    server.api_key,
                ],
            )
            assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
            assert (
                create(
                    server,
                    link_body(application_id=server.app_id, config={"delivered_after": APP_DELAY}),
                ).status_code
                == 201
            )
            assert (
                create(
                    server,
                    link_body(
                        application_id=app2[0], tps=TPS, config={"delivered_after": APP_DELAY}
                    ),
                ).status_code
                == 201
            )
            yield Routed(server, receiver, sandbox_log, app2, app3)
        finally:
            server.stop()


@dataclass
class Links:
    server: Server  # the routing server, seen as a second account (with its own application)
    other: dict  # the first account: api_key, api_secret, app_id


@pytest.fixture(scope="module")
def links(routed: Routed) -> Links:
    """/v1/channels and the CLI are exercised as a second account of the routing server:
    links are per account, so nothing made here routes the first account's messages."""
    main = routed.server
    account = missive_json(main.data_dir, "account", "create")
    app_id, private_key = new_app(main, "links", auth=(account["api_key"], account["api_secret"]))
    server = dataclasses.replace(
        main,
        api_key=account["api_key"],
        api_secret=account["api_secret"],
        signature_secret=account["signature_secret"],
        app_id=app_id,
        private_key=private_key,
    )
    return Links(
        server, {"api_key": main.api_key, "api_secret": main.api_secret, "app_id": main.app_id}
    )


# -- /v1/channels and the CLI --------------------------------------------------------------------


def create(server: Server, body: dict, auth: tuple[str, str] | None = None) -> Any:
    with server.client() as client:
        return client.post("/v1/channels", json=body, auth=auth or server.basic)


def check_view(view: dict, body: dict) -> None:
    assert set(view) == VIEW_KEYS, view
    assert view["kind"] == body["kind"]
    assert view["channel"] == body["channel"]
    assert view["name"] == body["name"]
    assert view["application_id"] == body.get("application_id")
    assert view["tps"] == body.get("tps")
    assert view["default"] is body.get("default", False)
    assert view["config"] == body.get("config", {})
    assert ISO_MS.match(view["created_at"])
    uuidlib.UUID(view["id"])


def test_link_create_list_read_delete_over_http(links: Links) -> None:
    server = links.server
    body = link_body(
        "messenger",
        tps=20.5,
        default=True,
        config={"delivered_after": 0.5, "read_after": 1.5},
        application_id=server.app_id,
    )
    response = create(server, body)
    assert response.status_code == 201, response.text
    view = response.json()
    check_view(view, body)
    with server.client() as client:
        listed = client.get("/v1/channels", auth=server.basic)
        assert listed.status_code == 200
        assert view in listed.json()["_embedded"]["channels"]
        one = client.get(f"/v1/channels/{view['id']}", auth=server.basic)
        assert one.status_code == 200 and one.json() == view
        # A trailing slash is the same path.
        assert client.get(f"/v1/channels/{view['id']}/", auth=server.basic).json() == view
        removed = client.delete(f"/v1/channels/{view['id']}", auth=server.basic)
        assert removed.status_code == 204 and removed.content == b""
        gone = client.get(f"/v1/channels/{view['id']}", auth=server.basic)
        assert gone.status_code == 404
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert set(gone.json()) >= {"type", "title", "detail", "instance"}
        assert client.delete(f"/v1/channels/{view['id']}", auth=server.basic).status_code == 404
        assert view["id"] not in [
            c["id"]
            for c in client.get("/v1/channels", auth=server.basic).json()["_embedded"]["channels"]
        ]


def test_minimal_link_gets_defaults(links: Links) -> None:
    body = link_body("viber_service")
    response = create(links.server, body)
    assert response.status_code == 201, response.text
    check_view(response.json(), body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/channels"),
        ("GET", "/v1/channels"),
        ("GET", "/v1/channels/ID"),
        ("DELETE", "/v1/channels/ID"),
    ],
)
def test_channels_want_account_basic_auth(links: Links, method: str, path: str) -> None:
    server = links.server
    created = create(server, link_body())
    assert created.status_code == 201
    link_id = created.json()["id"]
    path = path.replace("ID", link_id)
    body = link_body() if method == "POST" else None
    with server.client() as client:
        for attempt in (
            {"headers": server.bearer()},
            {"auth": (server.api_key, "wrong-secret")},
            {},
        ):
            response = client.request(method, path, json=body, **attempt)
            assert response.status_code == 401, (attempt, response.text)
            assert response.json()["title"] == "Unauthorized"
        # The link is untouched by the refused requests.
        assert client.get(f"/v1/channels/{link_id}", auth=server.basic).status_code == 200


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"kind": "carrier-pigeon", "channel": "sms", "name": "x"}, ["kind"]),
        ({"kind": "sandbox", "channel": "fax", "name": "x"}, ["channel"]),
        ({"kind": "sandbox", "channel": "mms", "name": "x"}, ["channel"]),
        (
            {"kind": "sandbox", "channel": "sms", "name": "x", "config": {"delivered_after": -1}},
            ["config.delivered_after"],
        ),
        (
            {"kind": "sandbox", "channel": "sms", "name": "x", "config": {"read_after": -0.5}},
            ["config.read_after"],
        ),
        (
            {
                "kind": "sandbox",
                "channel": "sms",
                "name": "x",
                "config": {"delivered_after": -1, "read_after": -2},
            },
            ["config.delivered_after", "config.read_after"],
        ),
        (
            {"kind": "sandbox", "channel": "sms", "name": "x", "config": {"delivered_after": "1"}},
            ["config.delivered_after"],
        ),
        (
            {"kind": "sandbox", "channel": "sms", "name": "x", "config": {"colour": "blue"}},
            ["config.colour"],
        ),
        ({"kind": "sandbox", "channel": "sms", "name": "x", "tps": 0}, ["tps"]),
        ({"kind": "sandbox", "channel": "sms", "name": "x", "tps": -5}, ["tps"]),
        ({"kind": "sandbox", "channel": "sms", "name": ""}, ["name"]),
        ({"kind": "sandbox", "channel": "sms"}, ["name"]),
        ({"kind": "sandbox", "channel": "sms", "name": "x", "default": "yes"}, ["default"]),
        ({"kind": "sandbox", "channel": "sms", "name": "x", "surprise": 1}, ["surprise"]),
        ([{"kind": "sandbox"}], ["body"]),
    ],
    ids=[
        "unknown-kind",
        "bad-channel",
        "unsupported-channel",
        "negative-delivered",
        "negative-read",
        "both-negative",
        "string-delay",
        "unknown-config",
        "zero-tps",
        "negative-tps",
        "empty-name",
        "no-name",
        "default-not-bool",
        "unknown-field",
        "not-an-object",
    ],
)
def test_link_validation_names_every_bad_field(links: Links, body: Any, names: list[str]) -> None:
    response = create(links.server, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert sorted(p["name"] for p in problem["invalid_parameters"]) == sorted(names)
    assert all(p["reason"] for p in problem["invalid_parameters"])


def test_link_validation_names_all_bad_fields_at_once(links: Links) -> None:
    body = {
        "kind": "sandbox",
        "channel": "fax",
        "name": "",
        "tps": -1,
        "config": {"delivered_after": -1},
    }
    response = create(links.server, body)
    assert response.status_code == 422, response.text
    names = sorted(p["name"] for p in response.json()["invalid_parameters"])
    assert names == ["channel", "config.delivered_after", "name", "tps"]


def test_link_to_another_accounts_application_is_refused(links: Links) -> None:
    response = create(links.server, link_body(application_id=links.other["app_id"]))
    assert response.status_code == 422, response.text
    assert [p["name"] for p in response.json()["invalid_parameters"]] == ["application_id"]
    # Nor an application that does not exist at all.
    response = create(links.server, link_body(application_id=str(uuidlib.uuid4())))
    assert [p["name"] for p in response.json()["invalid_parameters"]] == ["application_id"]
    # The other account may link its own application (Viber: its SMS routing is not disturbed).
    other_auth = (links.other["api_key"], links.other["api_secret"])
    body = link_body("viber_service", application_id=links.other["app_id"])
    response = create(links.server, body, auth=other_auth)
    assert response.status_code == 201, response.text
    check_view(response.json(), body)


def test_links_are_private_to_their_account(links: Links) -> None:
    server = links.server
    mine = create(server, link_body()).json()
    other_auth = (links.other["api_key"], links.other["api_secret"])
    with server.client() as client:
        assert client.get(f"/v1/channels/{mine['id']}", auth=other_auth).status_code == 404
        assert client.delete(f"/v1/channels/{mine['id']}", auth=other_auth).status_code == 404
        theirs = client.get("/v1/channels", auth=other_auth).json()["_embedded"]["channels"]
        assert mine["id"] not in [c["id"] for c in theirs]
        assert client.get(f"/v1/channels/{mine['id']}", auth=server.basic).status_code == 200


def test_cli_add_list_remove(links: Links) -> None:
    server, data_dir = links.server, links.server.data_dir
    results = missive_many(
        data_dir,
        [
            "channel",
            "add",
            "sandbox",
            "--channel",
            "messenger",
            "--delivered-after",
            "0.5",
            "--read-after",
            "1",
            "--default",
            "--tps",
            "7",
            "--name",
            "cli-link",
            "--api-key",
            server.api_key,
            "--json",
        ],
        [
            "channel",
            "add",
            "sandbox",
            "--channel",
            "sms",
            "--app",
            server.app_id,
            "--api-key",
            server.api_key,
            "--json",
        ],
    )
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    added, for_app = (json.loads(r.stdout) for r in results)
    check_view(
        added,
        {
            "kind": "sandbox",
            "channel": "messenger",
            "name": "cli-link",
            "tps": 7.0,
            "default": True,
            "config": {"delivered_after": 0.5, "read_after": 1.0},
        },
    )
    check_view(
        for_app,
        {
            "kind": "sandbox",
            "channel": "sms",
            "name": "sandbox-sms",
            "application_id": server.app_id,
        },
    )
    # What the CLI made, the API shows, and the other way round.
    with server.client() as client:
        assert client.get(f"/v1/channels/{added['id']}", auth=server.basic).json() == added
        api_made = create(server, link_body("viber_service")).json()
    result = missive(data_dir, "channel", "list", "--json", "--api-key", server.api_key)
    assert result.returncode == 0, result.stderr
    listed = {view["id"]: view for view in json.loads(result.stdout)}
    assert (
        listed[added["id"]] == added
        and listed[for_app["id"]] == for_app
        and listed[api_made["id"]] == api_made
    )

    removed = missive(data_dir, "channel", "remove", added["id"], "--api-key", server.api_key)
    assert removed.returncode == 0, removed.stderr
    assert added["id"] in removed.stdout
    with server.client() as client:
        assert client.get(f"/v1/channels/{added['id']}", auth=server.basic).status_code == 404
    again = missive(data_dir, "channel", "remove", added["id"], "--api-key", server.api_key)
    assert again.returncode == 1 and added["id"] in again.stderr


BAD_CLI_LINKS = {
    "bad-channel": (["sandbox", "--channel", "fax"], "channel"),
    "negative-delay": (
        ["sandbox", "--channel", "sms", "--delivered-after", "-1"],
        "delivered_after",
    ),
    "unknown-app": (["sandbox", "--channel", "sms", "--app", "no-such-app"], "no-such-app"),
}


@pytest.fixture(scope="module")
def bad_cli_links(links: Links) -> dict[str, subprocess.CompletedProcess[str]]:
    server = links.server
    commands = [
        ["channel", "add", *args, "--api-key", server.api_key] for args, _ in BAD_CLI_LINKS.values()
    ]
    return dict(zip(BAD_CLI_LINKS, missive_many(server.data_dir, *commands), strict=False))


@pytest.mark.parametrize("case", list(BAD_CLI_LINKS))
def test_cli_add_refuses_bad_links(links: Links, bad_cli_links: dict, case: str) -> None:
    result = bad_cli_links[case]
    assert result.returncode == 1
    assert BAD_CLI_LINKS[case][1] in result.stderr
    with links.server.client() as client:
        names = [
            c["name"]
            for c in client.get("/v1/channels", auth=links.server.basic).json()["_embedded"][
                "channels"
            ]
        ]
    assert "sandbox-fax" not in names


# -- routing and rate limits ----------------------------------------------------------------------


def post_all(server: Server, bodies: list[dict], token: str | None = None) -> list[str]:
    with server.client() as client:
        uuids = []
        for body in bodies:
            if token is None:
                response = client.post("/v1/messages", json=body, auth=server.basic)
            else:
                response = client.post(
                    "/v1/messages", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            assert response.status_code == 202, response.text
            uuids.append(response.json()["message_uuid"])
    return uuids


def by_message(hooks: list[Hook], uuids: list[str]) -> dict[str, list[Hook]]:
    found: dict[str, list[Hook]] = {u: [] for u in uuids}
    for hook in hooks:
        if 200 <= hook.answered < 300 and hook.json.get("message_uuid") in found:
            found[hook.json["message_uuid"]].append(hook)
    return {u: sorted(hooks, key=lambda h: h.json["timestamp"]) for u, hooks in found.items()}


def wait_delivered(
    receiver: WebhookReceiver, uuids: list[str], timeout: float = 15
) -> dict[str, list[Hook]]:
    receiver.wait_for(
        lambda hooks: all(len(v) >= 2 for v in by_message(hooks, uuids).values()), timeout=timeout
    )
    return by_message(receiver.snapshot(), uuids)


def stamp(hooks: list[Hook], status: str) -> float:
    return next(epoch(h.json["timestamp"]) for h in hooks if h.json["status"] == status)


def test_application_link_wins_over_the_account_default(routed: Routed) -> None:
    server = routed.server
    app1 = post_all(server, [sms()], server.jwt())
    basic = post_all(server, [sms()])
    app3 = post_all(
        server, [sms()], server.jwt(private_key=routed.app3[1], application_id=routed.app3[0])
    )
    found = wait_delivered(routed.receiver, app1 + basic + app3)
    expected = {
        app1[0]: ("/app1", APP_DELAY),
        basic[0]: ("/account", DEFAULT_DELAY),
        app3[0]: ("/app3", DEFAULT_DELAY),
    }
    for message_uuid, (path, delay) in expected.items():
        hooks = found[message_uuid]
        assert [(h.path, h.json["status"]) for h in hooks] == [
            (path, "submitted"),
            (path, "delivered"),
        ]
        # The account default wins over the account's first link (1.2 s); the
        # application's own link over both.
        assert stamp(hooks, "delivered") - stamp(hooks, "submitted") == pytest.approx(
            delay, abs=0.004
        )


def test_tps_makes_messages_wait_and_none_fail(routed: Routed) -> None:
    server = routed.server
    # 15 on the account's 5/s link, and 15 at the same time on the application's
    # link, which has no limit.
    limited = post_all(server, [sms(text=f"tps {i}") for i in range(15)])
    free = post_all(server, [sms(text=f"free {i}") for i in range(15)], server.jwt())
    found = wait_delivered(routed.receiver, limited + free)
    for message_uuid in limited + free:
        assert [h.json["status"] for h in found[message_uuid]] == ["submitted", "delivered"]
    submitted = sorted(stamp(found[u], "submitted") for u in limited)
    spread = submitted[-1] - submitted[0]
    # A second of burst (5), then 5 per second: the 15th goes about 2 s after the first.
    assert 1.8 <= spread <= 4.0, spread
    unlimited = sorted(stamp(found[u], "submitted") for u in free)
    assert unlimited[-1] - unlimited[0] < 1.5
    # Waiting is not failing: each message reached the sandbox exactly once.
    sends = routed.sandbox_log.read_text().split()
    for message_uuid in limited:
        assert sends.count(message_uuid) == 1


def test_tps_counts_sms_parts(routed: Routed) -> None:
    server = routed.server
    app_id, key = routed.app2
    # 400 GSM characters: three parts (153 characters each) per message, 15 parts in all.
    uuids = post_all(
        server,
        [sms(text="p" * 400) for _ in range(5)],
        server.jwt(private_key=key, application_id=app_id),
    )
    found = wait_delivered(routed.receiver, uuids)
    submitted = sorted(stamp(found[u], "submitted") for u in uuids)
    assert submitted[-1] - submitted[0] >= 1.5
