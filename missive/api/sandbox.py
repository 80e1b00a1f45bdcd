"""`POST /v1/sandbox/inbound` (ours): make the sandbox produce an inbound message.

    {"channel": "messenger", "from": "USER_ID", "to": "PAGE_ID", "text": "hi"}
    {"channel": "messenger", "from": "USER_ID", "location": {"lat": 51.5, "long": -0.12}}
    {"channel": "whatsapp", "from": "447700900001", "to": "447700900100", "text": "hi"}

It goes to the inbound URL of the calling application (JWT, or `application_id` with
Basic auth), else of the account, exactly as a provider's inbound message would. An SMS
carries the `sms` object an SMSC's would (`num_messages`: the parts its text takes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from missive.api.body import read_json
from missive.api.errors import InvalidParameter, invalid_params
from missive.api.responses import json_response
from missive.api.services import services
from missive.channels.base import InboundEvent
from missive.dispatch.callbacks import record_inbound
from missive.schemas.common import (
    Audio,
    File,
    Image,
    Strict,
    Video,
    invalid_parameters,
    url_context,
)
from missive.sms.deliveries import text_event
from missive.sms.gsm import count_parts
from missive.store import applications as app_store
from missive.url_safety import SHAPE_ONLY

CONTENT_KEYS = ("text", "image", "audio", "video", "file", "location")


class Location(Strict):
    lat: float = Field(ge=-90, le=90)
    long: float = Field(ge=-180, le=180)
    name: str | None = Field(None, max_length=200)
    address: str | None = Field(None, max_length=500)


class SandboxInbound(Strict):
    channel: Literal["sms", "messenger", "viber_service", "whatsapp"]
    from_: str = Field(alias="from", min_length=1, max_length=50)
    to: str = Field("sandbox", min_length=1, max_length=50)
    application_id: str | None = None
    text: str | None = Field(None, min_length=1, max_length=4096)
    image: Image | None = None
    audio: Audio | None = None
    video: Video | None = None
    file: File | None = None
    location: Location | None = None

    @model_validator(mode="after")
    def _one_content(self) -> SandboxInbound:
        given = [key for key in CONTENT_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of {', '.join(CONTENT_KEYS)} is required")
        if self.channel == "sms" and given != ["text"]:
            raise ValueError("SMS carries text only")
        return self

    def event(self) -> InboundEvent:
        if self.channel == "sms" and self.text is not None:
            return text_event(self.to, self.from_, self.text, count_parts(self.text, "auto"))
        key = next(k for k in CONTENT_KEYS if getattr(self, k) is not None)
        value = getattr(self, key)
        payload = {key: value if isinstance(value, str) else value.model_dump(exclude_none=True)}
        return InboundEvent(self.channel, self.to, self.from_, key, payload)


def parse_inbound(data: object) -> SandboxInbound:
    if not isinstance(data, dict):
        raise invalid_params([InvalidParameter("body", "must be a JSON object")])
    try:
        # A simulated user's media URLs: Missive never fetches them, so only their shape counts.
        return SandboxInbound.model_validate(data, context=url_context(SHAPE_ONLY))
    except ValidationError as exc:
        raise invalid_params(invalid_parameters(exc)) from None


async def inbound(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.authenticate(request)
    parsed = parse_inbound(await read_json(request, svc.settings.max_body_bytes))
    application_id = principal.application_id or parsed.application_id
    if application_id and await app_store.get_application(svc.engine, application_id, principal.account_id) is None:
        raise invalid_params([InvalidParameter("application_id", "is not an application of this account")])
    row = await record_inbound(svc.engine, svc.targets, parsed.event(), principal.account_id, application_id)
    svc.webhooks_stored()
    return json_response({"message_uuid": row["uuid"]}, 202)


routes = [Route("/v1/sandbox/inbound", inbound, methods=["POST"])]
