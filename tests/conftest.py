from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Server, provisioned_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server shared by the tests of the accept path.

    Its dispatcher is off, so what a test reads back is what the API stored.
    """
    running = provisioned_server(tmp_path_factory.mktemp("missive"), env={"MISSIVE_DISPATCH_IN_SERVE": "false"})
    yield running
    running.stop()
