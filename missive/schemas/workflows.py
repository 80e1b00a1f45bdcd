"""Failover workflows as the API receives them, validated into a list of steps.

    POST /v0.1/dispatch   {"template": "failover", "workflow": [
        {"to": ..., "from": ..., "message": ..., "failover": {"expiry_time": 600, "condition_status": "delivered"}},
        {"to": ..., "from": ..., "message": ...}]}
    POST /v1/messages     {"channel": "messenger", ..., "failover": [{"channel": "sms", ...}]}

A step is a normalised v1 message (what `validate_v1` returns) and its failover rule:
`{"expiry_time": s, "condition_status": "delivered" | "read"}` on every Workflows API step
but the last; None on the last one and on every step of a v1 failover array, which fails
over only on `rejected` or `undeliverable`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from missive.api.errors import InvalidParameter, ProblemError, invalid_params, unsupported_channel
from missive.schemas.beta import validate_beta
from missive.schemas.common import Strict, invalid_parameters
from missive.schemas.v1 import validate_v1
from missive.url_safety import STRICT, UrlPolicy

# Vonage names no upper bound; a bound keeps one request from fanning out without limit.
MAX_STEPS = 10
UNSUPPORTED = unsupported_channel("").type


class FailoverRule(Strict):
    expiry_time: int = Field(ge=15, le=86400)
    condition_status: Literal["delivered", "read"]


_rule_adapter: TypeAdapter[FailoverRule] = TypeAdapter(FailoverRule)


def _prefixed(prefix: str, problem: ProblemError) -> list[InvalidParameter]:
    return [InvalidParameter(f"{prefix}.{p.name}" if p.name != "body" else prefix, p.reason) for p in problem.invalid_parameters]


def _refused(errors: list[InvalidParameter], problems: list[ProblemError]) -> ProblemError:
    """The 422 of a workflow: a step on an unsupported channel makes it that channel's
    answer (the one a single message gets), naming every bad field all the same."""
    unsupported = next((p for p in problems if p.type == UNSUPPORTED), None)
    if unsupported is not None:
        return replace(unsupported, invalid_parameters=errors)
    return invalid_params(errors)


def _rule(value: object, path: str, errors: list[InvalidParameter]) -> dict[str, Any] | None:
    if value is None:
        errors.append(InvalidParameter(path, "is required on every step but the last"))
        return None
    try:
        return _rule_adapter.validate_python(value).model_dump()
    except ValidationError as exc:
        errors.extend(
            InvalidParameter(f"{path}.{p.name}" if p.name != "body" else path, p.reason)
            for p in invalid_parameters(exc)
        )
        return None


def validate_dispatch(data: object, policy: UrlPolicy = STRICT) -> list[dict[str, Any]]:
    """The steps of a Workflows API request, or a 422 naming every bad field
    (`workflow[1].failover.expiry_time`, `workflow[0].message.content.text`...)."""
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    errors: list[InvalidParameter] = []
    if data.get("template") != "failover":
        errors.append(InvalidParameter("template", "must be failover"))
    workflow = data.get("workflow")
    if not isinstance(workflow, list) or not 2 <= len(workflow) <= MAX_STEPS:
        errors.append(InvalidParameter("workflow", f"must be an array of 2 to {MAX_STEPS} messages"))
        raise invalid_params(errors)
    steps: list[dict[str, Any]] = []
    problems: list[ProblemError] = []
    last = len(workflow) - 1
    for index, item in enumerate(workflow):
        path = f"workflow[{index}]"
        if not isinstance(item, dict):
            errors.append(InvalidParameter(path, "must be a message object"))
            continue
        rule = None
        if index < last:
            rule = _rule(item.get("failover"), f"{path}.failover", errors)
        elif item.get("failover") is not None:
            errors.append(InvalidParameter(f"{path}.failover", "must not be set on the last message"))
        try:
            message = validate_beta({k: v for k, v in item.items() if k != "failover"}, policy)
        except ProblemError as problem:
            problems.append(problem)
            errors.extend(_prefixed(path, problem))
            continue
        steps.append({"message": message, "failover": rule})
    if errors:
        raise _refused(errors, problems)
    return steps


def validate_v1_failover(data: dict[str, Any], policy: UrlPolicy = STRICT) -> list[dict[str, Any]]:
    """The steps of a v1 message with a `failover` array: the message, then each fallback."""
    errors: list[InvalidParameter] = []
    problems: list[ProblemError] = []
    fallbacks = data.get("failover")
    first: dict[str, Any] | None = None
    try:
        first = validate_v1({k: v for k, v in data.items() if k != "failover"}, policy)
    except ProblemError as problem:
        problems.append(problem)
        errors.extend(problem.invalid_parameters)
    if not isinstance(fallbacks, list) or not 1 <= len(fallbacks) <= MAX_STEPS - 1:
        errors.append(InvalidParameter("failover", f"must be an array of 1 to {MAX_STEPS - 1} messages"))
        raise _refused(errors, problems)
    steps = [{"message": first, "failover": None}]
    for index, item in enumerate(fallbacks):
        path = f"failover[{index}]"
        if isinstance(item, dict) and "failover" in item:
            errors.append(InvalidParameter(f"{path}.failover", "a failover message cannot have its own failover"))
            continue
        try:
            steps.append({"message": validate_v1(item, policy), "failover": None})
        except ProblemError as problem:
            problems.append(problem)
            errors.extend(_prefixed(path, problem))
    if errors:
        raise _refused(errors, problems)
    return steps
