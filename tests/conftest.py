from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import POSTGRES_URL, Server, leave_empty, provisioned_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server shared by the tests of the accept path.

    Its dispatcher is off, so what a test reads back is what the API stored.
    """
    running = provisioned_server(tmp_path_factory.mktemp("missive"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _empty_database(request: pytest.FixtureRequest) -> None:
    """A test marked `empty_database` starts its data directories (under its tmp_path)
    with no database: tests of migrations and first starts. Others start at the newest
    schema (tests/harness.py::database_url)."""
    if request.node.get_closest_marker("empty_database"):
        leave_empty(request.getfixturevalue("tmp_path"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "empty_database: the test's data directories start with no database")


def pytest_report_header() -> str:
    return f"missive database: {'PostgreSQL ' + POSTGRES_URL if POSTGRES_URL else 'SQLite (one file per test data directory)'}"
