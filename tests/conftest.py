from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import POSTGRES_URL, Server, provisioned_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server shared by the tests of the accept path.

    Its dispatcher is off, so what a test reads back is what the API stored.
    """
    running = provisioned_server(tmp_path_factory.mktemp("missive"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield running
    running.stop()


def pytest_report_header() -> str:
    return f"missive database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite (one file per test data directory)'}"
