"""Numbers: `/v1/numbers`, `missive number add|list|remove`, and `number_of`, the lookup an
inbound SMS makes with the SMSC's destination address among its link's account's numbers.

A real server on 127.0.0.1 with two accounts: each has its own numbers, and what one
registers neither conflicts with nor shows to the other.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from missive.store.db import make_engine
from missive.store.numbers import normalise_number, number_of
from missive.store.tables import accounts as accounts_table
from tests.harness import Server, missive, missive_json, provisioned_server, settings_for

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Accounts:
    server: Server  # the first account, with its application
    other: tuple[str, str]  # the second account's api_key, api_secret
    other_app: str  # the second account's application


def new_app(server: Server, auth: tuple[str, str]) -> str:
    with server.client() as client:
        response = client.post("/v2/applications", json={"name": "numbers"}, auth=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    server = provisioned_server(tmp_path_factory.mktemp("numbers"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    try:
        other = missive_json(server.data_dir, "account", "create")
        auth = (other["api_key"], other["api_secret"])
        yield Accounts(server, auth, new_app(server, auth))
    finally:
        server.stop()


def add(server: Server, body: Any, auth: tuple[str, str] | None = None) -> Any:
    with server.client() as client:
        return client.post("/v1/numbers", json=body, auth=auth or server.basic)


def assert_problem(response: Any, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= {"type", "title", "detail", "instance"}
    return dict(body)


def missive_many(data_dir: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several `missive` commands at once: each CLI start takes about a second."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: missive(data_dir, *args), commands))


# -- normalising ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("447700900000", "447700900000"),
        ("+447700900000", "447700900000"),
        ("00447700900000", "447700900000"),
        ("+44 7700 900000", "447700900000"),
        ("+1 (415) 555-0100", "14155550100"),
        ("12345", "12345"),
        ("888", "888"),
    ],
)
def test_numbers_are_normalised(raw: str, number: str) -> None:
    assert normalise_number(raw) == number


@pytest.mark.parametrize("raw", ["", "12", "abc", "4477009000O0", "+", "0", "07700900000", "1234567890123456", "٤٤٧٧٠٠٩٠٠٠٠٠"])
def test_bad_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_number(raw)


# -- /v1/numbers ---------------------------------------------------------------------------------


def test_number_create_list_read_update_delete(accounts: Accounts) -> None:
    server = accounts.server
    created = add(server, {"number": "+44 7700 900001", "application_id": server.app_id})
    assert created.status_code == 201, created.text
    view = created.json()
    assert set(view) == {"number", "application_id", "created_at"}
    assert view["number"] == "447700900001" and view["application_id"] == server.app_id
    assert ISO_MS.match(view["created_at"])
    with server.client() as client:
        listed = client.get("/v1/numbers", auth=server.basic)
        assert listed.status_code == 200 and view in listed.json()["_embedded"]["numbers"]
        for spelled in ("447700900001", "%2B447700900001", "00447700900001", "447700900001/"):
            one = client.get(f"/v1/numbers/{spelled}", auth=server.basic)
            assert one.status_code == 200 and one.json() == view, spelled
        cleared = client.patch("/v1/numbers/447700900001", json={"application_id": None}, auth=server.basic)
        assert cleared.status_code == 200 and cleared.json() == {**view, "application_id": None}
        again = client.put("/v1/numbers/447700900001", json={"application_id": server.app_id}, auth=server.basic)
        assert again.status_code == 200 and again.json() == view
        assert client.get("/v1/numbers/447700900001", auth=server.basic).json() == view
        removed = client.delete("/v1/numbers/447700900001", auth=server.basic)
        assert removed.status_code == 204 and removed.content == b""
        assert_problem(client.get("/v1/numbers/447700900001", auth=server.basic), 404)
        assert_problem(client.delete("/v1/numbers/447700900001", auth=server.basic), 404)
        assert_problem(client.patch("/v1/numbers/447700900001", json={"application_id": None}, auth=server.basic), 404)
        assert_problem(client.get("/v1/numbers/not-a-number", auth=server.basic), 404)
        numbers = [n["number"] for n in client.get("/v1/numbers", auth=server.basic).json()["_embedded"]["numbers"]]
        assert "447700900001" not in numbers


def test_account_wide_number_and_short_code(accounts: Accounts) -> None:
    server = accounts.server
    for body, number in (({"number": "447700900002"}, "447700900002"), ({"number": "55501"}, "55501")):
        created = add(server, body)
        assert created.status_code == 201, created.text
        assert created.json()["number"] == number and created.json()["application_id"] is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/numbers"),
        ("GET", "/v1/numbers"),
        ("GET", "/v1/numbers/447700900003"),
        ("PATCH", "/v1/numbers/447700900003"),
        ("PUT", "/v1/numbers/447700900003"),
        ("DELETE", "/v1/numbers/447700900003"),
    ],
)
def test_numbers_want_account_basic_auth(accounts: Accounts, method: str, path: str) -> None:
    server = accounts.server
    with server.client() as client:
        client.post("/v1/numbers", json={"number": "447700900003", "application_id": server.app_id}, auth=server.basic)
        body = {"number": "447700900004"} if method == "POST" else {"application_id": None}
        for attempt in ({"headers": server.bearer()}, {"auth": (server.api_key, "wrong-secret")}, {}):
            response = client.request(method, path, json=body, **attempt)
            assert assert_problem(response, 401)["title"] == "Unauthorized", attempt
        # Nothing changed by the refused requests.
        kept = client.get("/v1/numbers/447700900003", auth=server.basic)
        assert kept.status_code == 200 and kept.json()["application_id"] == server.app_id
        assert client.get("/v1/numbers/447700900004", auth=server.basic).status_code == 404


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"number": "abc"}, ["number"]),
        ({"number": "12"}, ["number"]),
        ({"number": "07700900000"}, ["number"]),
        ({"number": "+999 1234 5678"}, ["number"]),
        ({"number": "4477009000051234567"}, ["number"]),
        ({"number": 447700900005}, ["number"]),
        ({"number": ""}, ["number"]),
        ({}, ["number"]),
        ({"number": "447700900005", "application_id": "no-such-app"}, ["application_id"]),
        ({"number": "447700900005", "application_id": 7}, ["application_id"]),
        ({"number": "447700900005", "colour": "blue"}, ["colour"]),
        ([{"number": "447700900005"}], ["body"]),
    ],
    ids=["letters", "too-short", "national", "unknown-country", "too-long", "not-a-string", "empty", "missing",
         "unknown-app", "app-not-a-string", "unknown-field", "not-an-object"],
)
def test_number_validation(accounts: Accounts, body: Any, names: list[str]) -> None:
    problem = assert_problem(add(accounts.server, body), 422)
    assert [p["name"] for p in problem["invalid_parameters"]] == names
    with accounts.server.client() as client:
        assert client.get("/v1/numbers/447700900005", auth=accounts.server.basic).status_code == 404


@pytest.mark.parametrize(
    ("body", "names"),
    [({}, ["application_id"]), ({"application_id": "no-such-app"}, ["application_id"]),
     ({"application_id": None, "number": "447700900007"}, ["number"]), ("x", ["body"])],
    ids=["missing", "unknown-app", "number-is-the-path", "not-an-object"],
)
def test_number_update_validation(accounts: Accounts, body: Any, names: list[str]) -> None:
    server = accounts.server
    add(server, {"number": "447700900006", "application_id": server.app_id})
    with server.client() as client:
        problem = assert_problem(client.patch("/v1/numbers/447700900006", json=body, auth=server.basic), 422)
        assert [p["name"] for p in problem["invalid_parameters"]] == names
        assert client.get("/v1/numbers/447700900006", auth=server.basic).json()["application_id"] == server.app_id


def test_each_account_has_its_own_numbers(accounts: Accounts) -> None:
    server, other = accounts.server, accounts.other
    assert add(server, {"number": "447700900008"}).status_code == 201
    # Again by its owner, in any spelling: a conflict.
    for spelled in ("447700900008", "+447700900008", "00447700900008", "+44 7700 900008"):
        problem = assert_problem(add(server, {"number": spelled}, server.basic), 409)
        assert "447700900008" in problem["detail"] and "already linked to this account" in problem["detail"]
    with server.client() as client:
        # The other account neither sees it nor changes it.
        assert client.get("/v1/numbers/447700900008", auth=other).status_code == 404
        patched = client.patch("/v1/numbers/447700900008", json={"application_id": None}, auth=other)
        assert patched.status_code == 404
        assert client.delete("/v1/numbers/447700900008", auth=other).status_code == 404
        theirs = client.get("/v1/numbers", auth=other).json()["_embedded"]["numbers"]
        assert "447700900008" not in [n["number"] for n in theirs]
        # Nor links it to the first account's application, nor the first to its.
        wrong = add(server, {"number": "447700900009", "application_id": server.app_id}, other)
        assert assert_problem(wrong, 422)["invalid_parameters"][0]["name"] == "application_id"
        moved = client.patch("/v1/numbers/447700900008", json={"application_id": accounts.other_app}, auth=server.basic)
        assert assert_problem(moved, 422)["invalid_parameters"][0]["name"] == "application_id"
        mine = client.get("/v1/numbers/447700900008", auth=server.basic)
        assert mine.status_code == 200 and mine.json()["application_id"] is None
    # Registering it in the other account is not refused (which would tell that someone
    # has it) and leaves the first account's number as it was.
    theirs = add(server, {"number": "+44 7700 900008", "application_id": accounts.other_app}, other)
    assert theirs.status_code == 201 and theirs.json()["number"] == "447700900008"
    with server.client() as client:
        mine = client.get("/v1/numbers/447700900008", auth=server.basic)
        assert mine.status_code == 200 and mine.json()["application_id"] is None
        assert client.delete("/v1/numbers/447700900008", auth=other).status_code == 204
        assert client.get("/v1/numbers/447700900008", auth=server.basic).status_code == 200


def test_number_of_reads_the_smsc_destination_among_the_account_numbers(accounts: Accounts) -> None:
    server = accounts.server
    assert add(server, {"number": "447700900010", "application_id": server.app_id}).status_code == 201
    assert add(server, {"number": "447700900011"}, accounts.other).status_code == 201

    async def lookups() -> dict[str, tuple[str | None] | None]:
        engine = make_engine(settings_for(server.data_dir))
        try:
            async with engine.connect() as conn:
                account_id = (await conn.execute(
                    select(accounts_table.c.id).where(accounts_table.c.api_key == server.api_key))).scalar_one()
                return {
                    addr: await number_of(conn, account_id, addr)
                    for addr in ("447700900010", "+447700900010", "00447700900010", "447700900011",
                                 "447700900012", "not a number", "")
                }
        finally:
            await engine.dispose()

    found = asyncio.run(lookups())
    assert found["447700900010"] == (server.app_id,)
    assert found["+447700900010"] == found["00447700900010"] == (server.app_id,)
    # The other account's number is not this account's, whatever the other has.
    assert found["447700900011"] is None
    assert found["447700900012"] is None and found["not a number"] is None and found[""] is None


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_add_list_remove(accounts: Accounts) -> None:
    server, data_dir = accounts.server, accounts.server.data_dir
    results = missive_many(
        data_dir,
        ["number", "add", "+44 7700 900020", "--app", server.app_id, "--api-key", server.api_key, "--json"],
        ["number", "add", "447700900021", "--api-key", server.api_key, "--json"],
        ["number", "add", "447700900022", "--api-key", accounts.other[0], "--json"],
    )
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    with_app, account_wide, others = (json.loads(r.stdout) for r in results)
    assert with_app["number"] == "447700900020" and with_app["application_id"] == server.app_id
    assert account_wide["number"] == "447700900021" and account_wide["application_id"] is None
    assert ISO_MS.match(with_app["created_at"])
    with server.client() as client:
        assert client.get("/v1/numbers/447700900020", auth=server.basic).json() == with_app
        api_made = add(server, {"number": "447700900023"}).json()

    listed, plain, refused = missive_many(
        data_dir,
        ["number", "list", "--api-key", server.api_key, "--json"],
        ["number", "list", "--api-key", server.api_key],
        ["number", "add", "447700900021", "--api-key", server.api_key],  # its own again
    )
    assert listed.returncode == 0, listed.stderr
    views = {v["number"]: v for v in json.loads(listed.stdout)}
    assert views["447700900020"] == with_app and views["447700900021"] == account_wide
    assert views["447700900023"] == api_made and "447700900022" not in views
    assert plain.returncode == 0 and "447700900020" in plain.stdout and server.app_id in plain.stdout
    assert refused.returncode == 1 and "already linked" in refused.stderr

    # A bad number, the other account's application, no account named (there are two).
    bad, wrong_app, several, removed = missive_many(
        data_dir,
        ["number", "add", "abc", "--api-key", server.api_key],
        ["number", "add", "447700900024", "--app", accounts.other_app, "--api-key", server.api_key],
        ["number", "add", "447700900024"],
        ["number", "remove", "+447700900020", "--api-key", server.api_key],
    )
    assert bad.returncode == 1 and "E.164" in bad.stderr
    assert wrong_app.returncode == 1 and accounts.other_app in wrong_app.stderr
    assert several.returncode == 1 and "--api-key" in several.stderr
    assert removed.returncode == 0, removed.stderr
    with server.client() as client:
        assert client.get("/v1/numbers/447700900020", auth=server.basic).status_code == 404
        assert client.get("/v1/numbers/447700900024", auth=server.basic).status_code == 404
    again = missive(data_dir, "number", "remove", "447700900020", "--api-key", server.api_key)
    assert again.returncode == 1 and "447700900020" in again.stderr
