from __future__ import annotations

import pytest

from scripts.services import ServiceUnavailable, ensure
from standin import StandinServer, generate_runs
from tests.integration.harness import STACKS, Service

# The servers each stack needs (scripts/services.py starts a silent one; it never skips).
STACK_SERVICES = {
    "embedded": (),
    "redis-pg": ("redis", "postgres"),
    "rabbitmq-pg": ("rabbitmq", "redis", "postgres"),
}
_ensured: set[str] = set()


def ensure_services(*names: str) -> None:
    """Start the named servers once per session; one that cannot start fails the test in one line."""
    for name in names:
        if name in _ensured:
            continue
        try:
            ensure(name)
        except ServiceUnavailable as exc:
            pytest.fail(f"{name} is needed and could not be started: {exc}", pytrace=False)
        _ensured.add(name)


@pytest.fixture(scope="session", autouse=True)
def _redis():
    ensure_services("redis")  # `make test` started it already; a bare `pytest` starts it too


@pytest.fixture(params=STACKS, ids=[f"stack={s}" for s in STACKS])
def stack(request) -> str:
    """The supported stacks: embedded defaults, Redis + PostgreSQL, RabbitMQ + Redis cache + PostgreSQL."""
    ensure_services(*STACK_SERVICES[request.param])
    return request.param


@pytest.fixture
def standin():
    with StandinServer(generate_runs(200, seed=3)) as server:
        yield server


@pytest.fixture
def service(tmp_path, standin, stack):
    svc = Service(tmp_path, standin, stack=stack)
    yield svc
    svc.stop()
