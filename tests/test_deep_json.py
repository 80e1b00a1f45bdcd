"""JSON bodies nested too deep get a 422 naming the member nested too deep (or, past
the 1024 levels orjson reads, the 400 invalid-json problem), never a 500: orjson writes
at most 254 levels, so a stored 300-level value could not be read back or sent on. A
body nested as deep as allowed goes in and comes back out unchanged."""

from __future__ import annotations

import json

import httpx
import pytest

from missive.api.body import MAX_JSON_DEPTH, parse_json, too_deep
from missive.api.errors import ProblemError
from tests.harness import Server

SMS = {"channel": "sms", "message_type": "text", "to": "447700900000", "from": "Acme", "text": "hi"}


def nested(levels: int) -> object:
    """`levels` levels of arrays and objects in all, alternating, built without recursion."""
    value: object = {}
    for level in range(levels - 1):
        value = {"a": value} if level % 2 else [value]
    return value


def deep_application(field: str, levels: int) -> bytes:
    """An application body with `levels` arrays nested in `field` (written by hand: the
    json module's encoder recurses)."""
    inner = b"[" * levels + b"]" * levels
    if field == "capabilities":
        inner = b'{"voice": ' + inner + b"}"
    return b'{"name": "deep", "' + field.encode() + b'": ' + inner + b"}"


def assert_too_deep(response: httpx.Response, member: str) -> None:
    assert response.headers["content-type"] == "application/problem+json", response.text
    problem = response.json()
    if response.status_code == 400:  # beyond what orjson reads at all
        assert set(problem) == {"type", "title", "detail", "instance"}, problem
        assert problem["type"].endswith("#invalid-json") and "depth limit" in problem["detail"], problem
        return
    assert response.status_code == 422, response.text
    assert set(problem) == {"type", "title", "detail", "instance", "invalid_parameters"}, problem
    assert problem["invalid_parameters"] == [
        {"name": member, "reason": f"Arrays and objects may nest at most {MAX_JSON_DEPTH} levels deep."}
    ], problem


def post_app(client: httpx.Client, server: Server, body: dict) -> httpx.Response:
    return client.post(f"{server.url}/v2/applications", json=body, auth=server.basic)


@pytest.mark.parametrize("field", ["capabilities", "privacy"])
@pytest.mark.parametrize("levels", [300, 2000])
def test_an_application_nested_too_deep_is_refused_on_create_and_update(server: Server, field: str, levels: int) -> None:
    body = deep_application(field, levels)
    headers = {"Content-Type": "application/json"}
    with server.client() as client:
        refused = client.post(f"{server.url}/v2/applications", content=body, headers=headers, auth=server.basic)
        assert refused.status_code == (422 if levels < 1024 else 400)
        assert_too_deep(refused, field)
        created = post_app(client, server, {"name": "shallow"})
        assert created.status_code == 201, created.text
        app_id = created.json()["id"]
        assert_too_deep(client.put(f"{server.url}/v2/applications/{app_id}", content=body, headers=headers,
                                   auth=server.basic), field)
        # Nothing deep was stored: the application and the list still read back.
        assert client.get(f"{server.url}/v2/applications/{app_id}", auth=server.basic).status_code == 200
        assert client.get(f"{server.url}/v2/applications", auth=server.basic).status_code == 200


def test_an_application_as_deep_as_allowed_goes_round_trip(server: Server) -> None:
    # The body is the outermost level, capabilities the second, voice the third.
    voice = nested(MAX_JSON_DEPTH - 2)
    body = {"name": "deep enough", "capabilities": {"voice": voice}, "privacy": nested(MAX_JSON_DEPTH - 1)}
    with server.client() as client:
        created = post_app(client, server, body)
        assert created.status_code == 201, created.text
        app_id = created.json()["id"]
        read = client.get(f"{server.url}/v2/applications/{app_id}", auth=server.basic).json()
        assert read["capabilities"]["voice"] == voice and read["privacy"] == body["privacy"]
        listed = client.get(f"{server.url}/v2/applications", params={"page_size": 1000}, auth=server.basic)
        assert listed.status_code == 200, listed.text
        found = [app for app in listed.json()["_embedded"]["applications"] if app["id"] == app_id]
        assert found and found[0]["capabilities"]["voice"] == voice
        updated = client.put(f"{server.url}/v2/applications/{app_id}", json=body, auth=server.basic)
        assert updated.status_code == 200 and updated.json()["privacy"] == body["privacy"], updated.text
        too_deep_body = {**body, "privacy": nested(MAX_JSON_DEPTH)}
        assert_too_deep(post_app(client, server, too_deep_body), "privacy")
        assert post_app(client, server, too_deep_body).status_code == 422


def test_a_message_nested_too_deep_is_refused(server: Server) -> None:
    with server.client() as client:
        response = client.post(f"{server.url}/v1/messages", json={**SMS, "sms": nested(300)}, auth=server.basic)
    assert response.status_code == 422
    assert_too_deep(response, "sms")


# --- the helper the API and the provider callbacks share --------------------------------------


def test_parse_json_bounds_the_depth() -> None:
    assert parse_json(json.dumps(nested(MAX_JSON_DEPTH)).encode()) == nested(MAX_JSON_DEPTH)
    with pytest.raises(ProblemError) as refused:
        parse_json(json.dumps(nested(MAX_JSON_DEPTH + 1)).encode())
    assert refused.value.status == 422 and refused.value.invalid_parameters[0].name == "a"
    with pytest.raises(ProblemError) as refused:
        parse_json(b'{"a": 1, "b": [[[[1]]]], "c": [[[1]]]}', max_depth=4)
    assert [p.name for p in refused.value.invalid_parameters] == ["b"]
    assert parse_json(b'{"b": [[[1]]]}', max_depth=4) == {"b": [[[1]]]}
    with pytest.raises(ProblemError) as refused:
        parse_json(b"[" * 2000 + b"]" * 2000)
    assert refused.value.status == 400


def test_brackets_in_strings_and_wide_bodies_are_not_depth() -> None:
    brackets = {"text": "[{" * 500, "list": [[1]] * 1000}
    assert parse_json(json.dumps(brackets).encode()) == brackets


def test_the_depth_walk_needs_no_recursion() -> None:
    assert too_deep(nested(200_000), 100_000) == "body"
    assert too_deep({"deep": nested(200_000)}, 200_000) == "deep"
    assert too_deep(nested(200_000), 200_000) is None
    assert too_deep("scalar", 0) is None and too_deep([], 1) is None and too_deep({}, 0) == "body"
