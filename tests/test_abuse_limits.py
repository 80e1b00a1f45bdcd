"""Abuse limits on the real server: request rate per api_key/application (429), body size
(413), single-use JWTs (MISSIVE_JWT_SINGLE_USE), and failed authentications that look and
take the same whether the api_key exists or not."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, missive_json, provisioned_server, query, start_server

LIMITS = {
    "MISSIVE_DISPATCH_IN_SERVE": "false",
    # One request every 2 s after a burst of 5: slow enough that a loaded machine cannot
    # refill a token between two requests of a test.
    "MISSIVE_REQUEST_RATE": "0.5",
    "MISSIVE_REQUEST_BURST": "5",
    "MISSIVE_MAX_BODY_BYTES": "4096",
    "MISSIVE_JWT_SINGLE_USE": "true",
    "MISSIVE_JWT_LEEWAY": "0",
}
SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}
UNAUTHORIZED = {
    "type": "https://developer.nexmo.com/api-errors#unauthorized",
    "title": "Unauthorized",
    "detail": "You did not provide correct credentials.",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = provisioned_server(tmp_path_factory.mktemp("limits"), env=LIMITS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def twin(limited: Server) -> Iterator[Server]:
    """A second API process on the same database, with the same credentials."""
    server = start_server(limited.data_dir, env=LIMITS)
    yield dataclasses.replace(limited, url=server.url, process=server.process, log_path=server.log_path)
    server.stop()


def fresh_caller(server: Server) -> Server:
    """The same server, seen by a new account and application (buckets of their own)."""
    account = missive_json(server.data_dir, "account", "create")
    app = missive_json(server.data_dir, "app", "create", "--name", "abuse", "--api-key", account["api_key"])
    return dataclasses.replace(server, api_key=account["api_key"], api_secret=account["api_secret"],
                               app_id=app["id"], private_key=app["private_key"])


def send(server: Server, client: httpx.Client, **kwargs: object) -> httpx.Response:
    kwargs.setdefault("auth", server.basic)
    return client.post(f"{server.url}/v1/messages", json=SMS, **kwargs)  # type: ignore[arg-type]


def assert_problem(response: httpx.Response, status: int, title: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "detail", "instance"} and problem["title"] == title
    return problem


# --- request rate ----------------------------------------------------------------------------


def test_request_rate_is_limited_per_api_key_and_per_application(limited: Server) -> None:
    caller, other = fresh_caller(limited), fresh_caller(limited)
    with httpx.Client(timeout=30) as client:
        statuses = [send(caller, client).status_code for _ in range(7)]
        assert statuses[:5] == [202] * 5 and 429 in statuses[5:], statuses
        refused = send(caller, client)
        problem = assert_problem(refused, 429, "Too Many Requests")
        assert problem["type"].endswith("#throttled")
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1

        # Another account, and the caller's own application (JWT), have buckets of their own.
        assert send(other, client).status_code == 202
        assert send(caller, client, auth=None, headers=caller.bearer()).status_code == 202
        # Reads count too.
        assert client.get(f"{caller.url}/v1/messages", auth=caller.basic).status_code == 429

        time.sleep(int(retry_after))
        assert send(caller, client).status_code == 202


def test_application_over_its_rate_gets_429(limited: Server) -> None:
    caller = fresh_caller(limited)
    with httpx.Client(timeout=30) as client:
        statuses = [send(caller, client, auth=None, headers=caller.bearer()).status_code for _ in range(7)]
    assert statuses[:5] == [202] * 5 and 429 in statuses[5:], statuses


def test_a_reused_jwt_is_held_to_its_applications_rate(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Single use off: from its second request on, the token is known to the process
    # (answered from its cache, `Authenticator.known`) and still counted.
    server = provisioned_server(tmp_path_factory.mktemp("reused"), env={**LIMITS, "MISSIVE_JWT_SINGLE_USE": "false"})
    try:
        token = server.bearer()
        with httpx.Client(timeout=30) as client:
            statuses = [send(server, client, auth=None, headers=token).status_code for _ in range(7)]
        assert statuses[:5] == [202] * 5 and 429 in statuses[5:], statuses
    finally:
        server.stop()


def test_failed_authentications_are_not_throttled_as_the_key(limited: Server) -> None:
    """Guessing at a key's secret does not lock its owner out (or tell the guesser anything)."""
    caller = fresh_caller(limited)
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            assert send(caller, client, auth=(caller.api_key, "wrong-secret-123")).status_code == 401
        assert send(caller, client).status_code == 202


# --- body size -------------------------------------------------------------------------------


def test_body_limit_counts_declared_and_streamed_bytes(limited: Server) -> None:
    caller = fresh_caller(limited)
    at_limit = json.dumps(SMS).encode()
    at_limit += b" " * (4096 - len(at_limit))

    def chunked():  # type: ignore[no-untyped-def]
        yield at_limit[:-1]
        yield b"  "  # one byte past the limit, with no Content-Length to announce it

    with httpx.Client(timeout=30, headers={"Content-Type": "application/json"}) as client:
        url = f"{caller.url}/v1/messages"
        assert client.post(url, content=at_limit, auth=caller.basic).status_code == 202
        too_long = client.post(url, content=at_limit + b" ", auth=caller.basic)
        assert_problem(too_long, 413, "Request too large")
        streamed = client.post(url, content=chunked(), auth=caller.basic)
        assert "content-length" not in streamed.request.headers
        assert_problem(streamed, 413, "Request too large")


# --- single-use JWTs -------------------------------------------------------------------------


def unauthorized_body(response: httpx.Response) -> dict:
    problem = assert_problem(response, 401, "Unauthorized")
    problem.pop("instance")
    return problem


def test_a_jwt_is_used_once(limited: Server) -> None:
    token = limited.bearer()
    with httpx.Client(timeout=30) as client:
        assert send(limited, client, auth=None, headers=token).status_code == 202
        assert unauthorized_body(send(limited, client, auth=None, headers=token)) == UNAUTHORIZED
        assert unauthorized_body(send(limited, client, auth=None, headers=limited.bearer(jti=None))) == UNAUTHORIZED


def test_a_replay_is_refused_by_another_process(limited: Server, twin: Server) -> None:
    token = limited.bearer()
    with httpx.Client(timeout=30) as client:
        assert send(limited, client, auth=None, headers=token).status_code == 202
        assert unauthorized_body(send(twin, client, auth=None, headers=token)) == UNAUTHORIZED
        assert send(twin, client, auth=None, headers=limited.bearer()).status_code == 202


def test_used_jtis_are_kept_until_the_token_expires(limited: Server) -> None:
    short = limited.bearer(exp=int(time.time()) + 2, jti="short-lived")
    with httpx.Client(timeout=30) as client:
        assert send(limited, client, auth=None, headers=short).status_code == 202
        assert query(limited.data_dir, "SELECT count(*) FROM used_jtis WHERE expires_at < :t", t=time.time() + 5) == [(1,)]
        time.sleep(3)
        # A new process purges expired rows on its first recorded use.
        later = start_server(limited.data_dir, env=LIMITS)
        try:
            assert send(dataclasses.replace(limited, url=later.url), client, auth=None, headers=limited.bearer()).status_code == 202
        finally:
            later.stop()
    rows = query(limited.data_dir, "SELECT expires_at FROM used_jtis")
    assert rows and all(expires_at > time.time() for (expires_at,) in rows), rows


def test_tokens_are_reusable_by_default(server: Server) -> None:
    """MISSIVE_JWT_SINGLE_USE is off by default: one token for many curl calls."""
    token = server.bearer()
    with httpx.Client(timeout=30) as client:
        assert [send(server, client, auth=None, headers=token).status_code for _ in range(3)] == [202] * 3


# --- failed authentication: one answer, one time -----------------------------------------------


def _comparable_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}


def test_unknown_key_and_wrong_secret_get_identical_answers(server: Server) -> None:
    with httpx.Client(timeout=30) as client:
        wrong = send(server, client, auth=(server.api_key, "Wrong0Secret0123"))
        unknown = send(server, client, auth=("0badc0de", "Wrong0Secret0123"))
    assert _comparable_headers(wrong) == _comparable_headers(unknown)
    assert wrong.content.replace(wrong.headers["x-request-id"].encode(), b"") == \
        unknown.content.replace(unknown.headers["x-request-id"].encode(), b"")
    assert unauthorized_body(wrong) == UNAUTHORIZED


def test_unknown_key_and_wrong_secret_take_the_same_time(server: Server) -> None:
    def attempt(client: httpx.Client, api_key: str) -> float:
        started = time.perf_counter()
        assert send(server, client, auth=(api_key, "Wrong0Secret0123")).status_code == 401
        return time.perf_counter() - started

    with httpx.Client(timeout=30) as client:
        for key in (server.api_key, "0badc0de"):
            attempt(client, key)  # warm the connection and the credentials cache
        wrong, unknown = [], []
        for _ in range(30):
            wrong.append(attempt(client, server.api_key))
            unknown.append(attempt(client, "0badc0de"))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 < ratio < 2.0, (ratio, statistics.median(wrong), statistics.median(unknown))
