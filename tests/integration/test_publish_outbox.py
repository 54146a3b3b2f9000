"""The broker down at publish time, with real processes: the content update lands in place and the
row keeps an outbox marker (``catalog_refresh_requested_at``); once the broker is back, beat's
``catalog_sync.requeue_refreshes`` queues the fetch, a worker runs it and clears the marker.

The broker is a Redis this test starts on its own port (6391) only after the publish, so at
publish time nothing answers there. The database and the cache are the stack's own: SQLite and
Django's database cache (embedded), or PostgreSQL and Redis (redis-pg).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import redis

from standin import lms_course_records
from tests.integration.harness import wait_until

pytestmark = pytest.mark.integration

BROKER_PORT = 6391
BROKER_URL = f"redis://127.0.0.1:{BROKER_PORT}/0"
REQUEUE_INTERVAL = 2  # seconds (60 by default): the test waits a few ticks, not minutes


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class DownBroker:
    """A Redis broker on BROKER_PORT that is down until ``start()``; stopped at the end."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(BROKER_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self._ping(), 15, what=f"redis-server on {BROKER_PORT}")

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis.from_url(BROKER_URL, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def broker(service, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if _answers(BROKER_PORT):
        pytest.fail(f"something already answers on 127.0.0.1:{BROKER_PORT}; this test needs it free")
    down = DownBroker(tmp_path)
    # Every process of this deployment uses the broker that is down, and a short requeue interval
    # (a settings module over the stack's settings.dev, on the processes' import path).
    (tmp_path / "outbox_settings.py").write_text(
        f"from settings.dev import *  # noqa: F403\nCATALOG_REFRESH_REQUEUE_INTERVAL = {REQUEUE_INTERVAL}\n"
    )
    service.env.update(
        CELERY_BROKER_URL=BROKER_URL,
        DJANGO_SETTINGS_MODULE="outbox_settings",
        PYTHONPATH=f"{tmp_path}:{service.env.get('PYTHONPATH', '')}".rstrip(":"),
    )
    yield down
    service.stop()  # workers and beat before their broker goes away
    down.stop()


@pytest.fixture
def course(service, standin):
    """An imported, never-synced course the catalog knows, with a marketing URL."""
    run = next(r for r in standin.state.runs() if r["marketing_url"] and r["key"].startswith("course-v1:"))
    service.import_courses(lms_course_records([run], lms_only=0, ccx_every=0))
    return run


@pytest.mark.parametrize("stack", ["embedded", "redis-pg"], indirect=True)
def test_a_publish_while_the_broker_is_down_is_fetched_once_it_is_back(service, standin, broker, course):
    key = course["key"]
    started = time.monotonic()
    published = service.manage("simulate_publish", key, "--display-name", "Published in the outage")
    publish_seconds = time.monotonic() - started

    # The publisher was not failed: the content landed in place, the row records the owed fetch.
    assert published.returncode == 0 and "published 1 course(s)" in published.stdout
    assert "Traceback" not in published.stderr
    warnings = [line for line in published.stderr.splitlines() if "broker unavailable" in line]
    assert len(warnings) == 1 and key in warnings[0]
    row = service.dump()[key]
    assert row["display_name"] == "Published in the outage"
    assert row["catalog_status"] == "never" and row["catalog_refresh_requested_at"]
    assert standin.stats()["requests"] == 0

    # The broker comes back; beat's requeue queues the fetch, the worker runs it.
    broker.start()
    service.start_worker()
    service.start_process(
        [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"],
        name="beat",
    )

    def synced():
        row = service.dump()[key]
        return (
            row["catalog_status"] == "ok"
            and row["marketing_url"] == course["marketing_url"]
            and row["catalog_refresh_requested_at"] is None
            and row
        )

    row = wait_until(synced, 90, interval=0.5, what="the fetch after the broker came back")
    assert row["display_name"] == "Published in the outage"
    assert "overdue refresh(es) queued again" in service.worker_log()

    # Two more requeue ticks: the cleared marker is not queued again; the course cost one fetch.
    ticks = _requeue_ticks(service)
    wait_until(lambda: _requeue_ticks(service) >= ticks + 2, 30, what="two more requeue ticks")
    service.settle()
    stats = standin.stats()
    assert stats["keys_requested"].get(key, 0) + stats["detail_by_key"].get(key, 0) == 1
    print(f"publish with the broker down: manage.py simulate_publish took {publish_seconds:.2f}s")


def _requeue_ticks(service) -> int:
    return len(re.findall(r"catalog_sync\.requeue_refreshes\[[^\]]+\] succeeded", service.worker_log()))
