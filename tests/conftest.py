from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Server, provisioned_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server shared by the tests that only send and read."""
    running = provisioned_server(tmp_path_factory.mktemp("missive"))
    yield running
    running.stop()
