"""A JWT is good for at most MISSIVE_JWT_MAX_LIFETIME (a day) after its `iat`, whatever
its `exp` says; one asking for a longer life is refused, and so is one without `iat`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, provisioned_server

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}
HOUR = 3600
DAY = 24 * HOUR
YEAR = 365 * DAY


def status_with(server: Server, **claims: object) -> int:
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{server.url}/v1/messages", json=SMS, headers=server.bearer(**claims))
    if response.status_code == 401:
        assert response.json()["title"] == "Unauthorized", response.text
    return response.status_code


CASES = [
    # (name, iat relative to now or None for none, exp relative to now or None, status)
    ("the SDKs' default: iat now, exp 15 minutes on", 0, 15 * 60, 202),
    ("no exp, iat now", 0, None, 202),
    ("a day's lifetime exactly", 0, DAY, 202),
    ("issued 23 hours ago for a day", -23 * HOUR, HOUR, 202),
    ("iat two days ago, exp in ten years", -2 * DAY, 10 * YEAR, 401),
    ("iat a year ago, exp in a minute", -YEAR, 60, 401),
    ("iat now, exp in 25 hours", 0, 25 * HOUR, 401),
    ("iat now, exp in ten years", 0, 10 * YEAR, 401),
    ("no iat, exp in 15 minutes", None, 15 * 60, 401),
    ("no iat, no exp", None, None, 401),
]


@pytest.mark.parametrize(("iat", "exp", "status"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_lifetime_of_a_token(server: Server, iat: int | None, exp: int | None, status: int) -> None:
    now = int(time.time())
    claims = {"iat": None if iat is None else now + iat, "exp": None if exp is None else now + exp}
    assert status_with(server, **claims) == status


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = provisioned_server(
        tmp_path_factory.mktemp("lifetime"),
        env={"MISSIVE_DISPATCH_IN_SERVE": "false", "MISSIVE_JWT_MAX_LIFETIME": str(HOUR), "MISSIVE_JWT_MAX_AGE": str(2 * HOUR)},
    )
    yield running
    running.stop()


def test_the_maximum_lifetime_is_configurable(short_lived: Server) -> None:
    now = int(time.time())
    assert status_with(short_lived, iat=now, exp=now + HOUR) == 202
    assert status_with(short_lived, iat=now, exp=now + 2 * HOUR) == 401
    assert status_with(short_lived, iat=now - 2 * HOUR, exp=now + 60) == 401
    # Without `exp` a token lives jwt_max_age, but never past the maximum lifetime.
    assert status_with(short_lived, iat=now - HOUR // 2) == 202
    assert status_with(short_lived, iat=now - HOUR - 120) == 401
