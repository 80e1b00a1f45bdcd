"""Fuzzing: schemathesis against Missive's own OpenAPI document, and the vendor's examples.

Every operation of /openapi.json gets valid and invalid data (positive and negative
generation, after the document's own request examples), with a valid Basic credential,
and again with a valid JWT where the operation takes one. No answer may be a 5xx or
break the schema the document gives for its status. MISSIVE_FUZZ_EXAMPLES (12 a mode by
default, which keeps this file near 30 s on two cores) and MISSIVE_FUZZ_COVERAGE=1
(schemathesis' boundary cases, minutes) make a longer hunt.

Then the request examples of the vendor's `messages-beta.yml` and `workflows-dispatch.yml`
are posted unchanged to the matching endpoints.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from missive.api.openapi import openapi_document
from missive.api.openapi_examples import EXAMPLES
from tests.harness import Server, provisioned_server

REFERENCE = Path(__file__).resolve().parent / "reference"
MAX_EXAMPLES = int(os.environ.get("MISSIVE_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, response_schema_conformance]

CONFIG = {
    "generation": {
        "mode": "all",  # positive and negative
        "max-examples": MAX_EXAMPLES,
        # Credentials are ours to give (below), not the generator's to invent.
        "with-security-parameters": False,
        "database": "none",
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": os.environ.get("MISSIVE_FUZZ_COVERAGE") == "1"},
        "fuzzing": {"enabled": True},
    },
}

# The document the server serves (test_the_server_serves_this_document checks that it
# is), loaded at collection so that every operation is a test of its own.
schema = schemathesis.openapi.from_dict(openapi_document(), config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: the fuzzer creates applications and numbers at random."""
    server = provisioned_server(tmp_path_factory.mktemp("fuzz"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield server
    server.stop()


def basic_header(server: Server) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{server.api_key}:{server.api_secret}".encode()).decode()}


def _takes_jwt(operation: schemathesis.APIOperation) -> bool:
    return any("bearerAuth" in requirement for requirement in operation.definition.raw.get("security", []))


@schema.parametrize()
def test_no_operation_fails_or_breaks_its_schema(case: schemathesis.Case, fuzzed: Server) -> None:
    case.call_and_validate(base_url=fuzzed.url, headers=basic_header(fuzzed), checks=CHECKS, timeout=30)
    if _takes_jwt(case.operation):
        case.call_and_validate(base_url=fuzzed.url, headers=fuzzed.bearer(), checks=CHECKS, timeout=30)


def test_the_server_serves_this_document(fuzzed: Server) -> None:
    served = httpx.get(f"{fuzzed.url}/openapi.json").json()
    assert served == json.loads(json.dumps(openapi_document()))
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert len(labels) >= 25 and {"POST /v1/messages", "POST /v0.1/dispatch"} <= labels


@pytest.mark.parametrize(("path", "name"), [(path, name) for (path, _), named in EXAMPLES.items() for name in named])
def test_our_documented_examples_are_accepted(fuzzed: Server, path: str, name: str) -> None:
    body = EXAMPLES[(path, "post")][name][1]
    for headers in (basic_header(fuzzed), fuzzed.bearer()):
        response = httpx.post(f"{fuzzed.url}{path}", json=body, headers=headers)
        assert response.status_code == 202, response.text


# --- the vendor's examples ----------------------------------------------------------------


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def examples_of(spec: dict, node: dict) -> list[Any]:
    """Every request the schema's `example` values make: one per `oneOf` branch, each
    object holding every property that has an example (what schemathesis' examples
    phase composes from such a file)."""
    node = _resolve(spec, node)
    if "example" in node:
        return [node["example"]]
    if "oneOf" in node:
        return [example for branch in node["oneOf"] for example in examples_of(spec, branch)]
    if "allOf" in node:
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            (value,) = examples_of(spec, part)
            merged.update(value)
        return [merged]
    if node.get("type") == "array":
        return [examples_of(spec, node["items"])]
    body: dict[str, Any] = {}
    for name, prop in node.get("properties", {}).items():
        values = examples_of(spec, prop)
        if values not in ([], [{}]):
            (body[name],) = values
    return [body]


def _load(name: str) -> dict:
    return yaml.safe_load((REFERENCE / name).read_text())


def _beta_examples() -> list[dict]:
    spec = _load("messages-beta.yml")
    return examples_of(spec, spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"])


def _expected(example: dict) -> tuple[int, set[str] | None]:
    """What Missive answers by its contract (../shared/API.md), with the problem's fields."""
    channel, content = example["to"]["type"], example["message"]["content"]["type"]
    if channel == "mms":
        return 422, {"to.type"}  # not a channel of Missive yet: 422 #1240
    if channel == "viber_service_msg":
        # Viber text, image, video, file only; and the file's example value for
        # `viber_service_msg.type` is "template", which the bot API cannot carry either
        # (docs/channels.md, Viber): each refusal names its field.
        invalid = {"message.content.type"} if content == "template" else set()
        if (example["message"].get("viber_service_msg") or {}).get("type") == "template":
            invalid.add("message.viber_service_msg.type")
        if invalid:
            return 422, invalid
    if channel == "messenger":
        # The file's `messenger` example pairs category `update` with the message tag
        # CONFIRMED_EVENT_UPDATE; API.md takes a tag only with category `message_tag`.
        return 422, {"message.messenger.tag"}
    return 202, None


@pytest.mark.parametrize("example", _beta_examples(), ids=lambda e: f"{e['to']['type']}-{e['message']['content']['type']}")
def test_vendor_beta_examples(server: Server, example: dict) -> None:
    status, invalid = _expected(example)
    for path in ("/v0.1/messages", "/beta/messages"):
        response = httpx.post(f"{server.url}{path}", json=example, auth=server.basic)
        assert response.status_code == status, response.text
        if invalid is not None:
            assert {p["name"] for p in response.json()["invalid_parameters"]} == invalid, response.text
    if example["to"]["type"] == "messenger":
        tagged = {**example, "message": {**example["message"], "messenger": {
            **example["message"]["messenger"], "category": "message_tag"}}}
        response = httpx.post(f"{server.url}/v0.1/messages", json=tagged, headers=server.bearer())
        assert response.status_code == 202, response.text
    if invalid and "message.viber_service_msg.type" in invalid and "message.content.type" not in invalid:
        untyped = {**example, "message": {**example["message"], "viber_service_msg": {
            k: v for k, v in example["message"]["viber_service_msg"].items() if k != "type"}}}
        response = httpx.post(f"{server.url}/v0.1/messages", json=untyped, auth=server.basic)
        assert response.status_code == 202, response.text


def test_vendor_beta_examples_cover_the_file() -> None:
    examples = _beta_examples()
    assert len(examples) == 16
    # sms text and image and the six of whatsapp (the Viber ones carry type "template").
    assert sum(_expected(e)[0] == 202 for e in examples) == 7


def test_vendor_workflow_example(server: Server) -> None:
    """createWorkflow's examples: an array of `oneOf` items composes one step of each
    branch, the message with `failover` first and the one without last, as the file
    says a workflow is made."""
    spec = _load("workflows-dispatch.yml")
    (body,) = examples_of(spec, spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert body["template"] == "failover" and len(body["workflow"]) == 2
    assert "failover" in body["workflow"][0] and "failover" not in body["workflow"][1]
    for path in ("/v0.1/dispatch", "/beta/workflows"):
        response = httpx.post(f"{server.url}{path}", json=body, auth=server.basic)
        assert response.status_code == 202, response.text
        assert set(response.json()) == {"dispatch_uuid"}
