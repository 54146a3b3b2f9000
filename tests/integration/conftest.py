from __future__ import annotations

import pytest

from scripts.services import ensure_redis
from standin import StandinServer, generate_runs
from tests.integration.harness import Service


@pytest.fixture(scope="session", autouse=True)
def _redis():
    ensure_redis()  # `make test` started it already; a bare `pytest` starts it too


@pytest.fixture
def standin():
    with StandinServer(generate_runs(200, seed=3)) as server:
        yield server


@pytest.fixture
def service(tmp_path, standin):
    svc = Service(tmp_path, standin)
    yield svc
    svc.stop()
