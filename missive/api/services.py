"""What the request handlers share: settings, engine, authenticator and the group writer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from missive.auth import Authenticator
from missive.config import Settings
from missive.store.writer import GroupWriter


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    auth: Authenticator
    writer: GroupWriter


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
