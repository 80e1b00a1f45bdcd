"""GET /v1/messages and /v1/messages/{uuid}: filters, cursor pages and scoping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Server, missive_json, provisioned_server, query


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Dispatch off: the outbox rows stay, and statuses stay `accepted`, for exact assertions.
    running = provisioned_server(tmp_path_factory.mktemp("readback"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield running
    running.stop()


def sms(to: str, ref: str) -> dict:
    return {"channel": "sms", "message_type": "text", "to": to, "from": "Acme", "text": ref, "client_ref": ref}


def messenger(ref: str) -> dict:
    return {"channel": "messenger", "message_type": "text", "to": "12345", "from": "67890", "text": ref, "client_ref": ref}


def test_every_202_is_already_in_the_database(fresh: Server) -> None:
    with fresh.client() as client:
        uuids = [
            client.post("/v1/messages", json=sms("447700900000", f"d{i}"), auth=fresh.basic).json()["message_uuid"]
            for i in range(20)
        ]
    # Read the file directly, not through the server: the row and its outbox row exist.
    stored = {row[0] for row in query(fresh.data_dir, "SELECT uuid FROM messages")}
    queued = {row[0] for row in query(fresh.data_dir, "SELECT message_uuid FROM outbox")}
    assert set(uuids) <= stored
    assert set(uuids) <= queued


def test_filters_and_cursor_pages(fresh: Server) -> None:
    with fresh.client() as client:
        for i in range(7):
            assert client.post("/v1/messages", json=sms("14155550100", f"page-{i}"), auth=fresh.basic).status_code == 202
        assert client.post("/v1/messages", json=messenger("page-m"), auth=fresh.basic).status_code == 202

        seen: list[str] = []
        url = "/v1/messages?to=14155550100&page_size=3"
        while url:
            page = client.get(url, auth=fresh.basic)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [m["client_ref"] for m in body["_embedded"]["messages"]]
            url = body["_links"].get("next", {}).get("href")
        assert seen == [f"page-{i}" for i in reversed(range(7))]

        only = client.get("/v1/messages", params={"channel": "messenger"}, auth=fresh.basic).json()
        assert [m["client_ref"] for m in only["_embedded"]["messages"]] == ["page-m"]
        by_ref = client.get("/v1/messages", params={"client_ref": "page-3"}, auth=fresh.basic).json()
        assert [m["client_ref"] for m in by_ref["_embedded"]["messages"]] == ["page-3"]
        none_yet = client.get("/v1/messages", params={"status": "delivered"}, auth=fresh.basic).json()
        assert none_yet["_embedded"]["messages"] == []
        future = client.get("/v1/messages", params={"since": "2999-01-01T00:00:00Z"}, auth=fresh.basic).json()
        assert future["_embedded"]["messages"] == []


@pytest.mark.parametrize(
    ("query", "name"),
    [("status=sent", "status"), ("channel=fax", "channel"), ("since=yesterday", "since"),
     ("cursor=%%%", "cursor"), ("page_size=0", "page_size"), ("page_size=1000", "page_size"),
     ("client_ref=a%00b", "client_ref"), ("to=4477%00", "to")],
)
def test_bad_filters_are_named(fresh: Server, query: str, name: str) -> None:
    with fresh.client() as client:
        response = client.get(f"/v1/messages?{query}", auth=fresh.basic)
    assert response.status_code == 422
    assert [p["name"] for p in response.json()["invalid_parameters"]] == [name]


def test_application_sees_only_its_messages_and_account_sees_all(fresh: Server) -> None:
    other = missive_json(fresh.data_dir, "app", "create", "--name", "other", "--api-key", fresh.api_key)
    other_token = {"Authorization": "Bearer " + fresh.jwt(private_key=other["private_key"], application_id=other["id"])}
    with fresh.client() as client:
        mine = client.post("/v1/messages", json=sms("447700900000", "mine"), headers=fresh.bearer()).json()["message_uuid"]
        theirs = client.post("/v1/messages", json=sms("447700900000", "theirs"), headers=other_token).json()["message_uuid"]

        assert client.get(f"/v1/messages/{theirs}", headers=fresh.bearer()).status_code == 404
        assert client.get(f"/v1/messages/{mine}", headers=other_token).status_code == 404
        assert client.get(f"/v1/messages/{theirs}", auth=fresh.basic).status_code == 200
        listed = client.get("/v1/messages", params={"client_ref": "theirs"}, headers=fresh.bearer()).json()
        assert listed["_embedded"]["messages"] == []


def test_other_accounts_messages_are_not_found(fresh: Server) -> None:
    stranger = missive_json(fresh.data_dir, "account", "create")
    with fresh.client() as client:
        message_uuid = client.post("/v1/messages", json=sms("447700900000", "private"), auth=fresh.basic).json()["message_uuid"]
        response = client.get(f"/v1/messages/{message_uuid}", auth=(stranger["api_key"], stranger["api_secret"]))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("path", ["/v1/messages/a%00b", "/v1/channels/a%00b", "/v1/numbers/44%00",
                                  "/v1/applications/a%00b", "/v1/messages/a%00b/provider-logs"])
def test_a_path_with_nul_names_nothing(fresh: Server, path: str) -> None:
    # PostgreSQL text cannot hold NUL: a name with one reached its query and failed (500).
    with fresh.client() as client:
        response = client.get(path, auth=fresh.basic)
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"
