"""Process faults on real workers, the stand-in catalog over HTTP: a worker SIGKILLed mid-chunk and
mid-refresh, Redis restarted mid-sweep, two beat processes. Each test asserts the final table
(every overview as the catalog has it) and a bound on catalog requests.

Elsewhere, not repeated here: a pool process SIGKILLed mid-refresh, on every stack
(``test_publish_worker.py``); a publish racing a sweep chunk, fresher data wins
(``test_sweep_worker.py::test_a_chunk_does_not_overwrite_a_fresher_per_course_fetch``); the broker
down at publish time (``test_publish_outbox.py``).

What each broker does with the message of a worker that was SIGKILLed (main process and pool, so
nothing is acked, rejected or requeued on the way out):

- RabbitMQ redelivers it as soon as the dead worker's connection closes.
- Redis keeps it in its unacked set and restores it after the visibility timeout
  (``celeryconfig.BROKER_VISIBILITY_TIMEOUT``, an hour): too late for a test, and the sweep does
  not wait for it; the run is resumed instead (below).
- The embedded SQLAlchemy transport deletes a message when it delivers it: the message is lost.
  This is the known limit of the embedded broker. A sweep recovers by resuming: the dead run's
  lease (its heartbeat) expires after ``CATALOG_SWEEP_LEASE_TTL`` and the next trigger (beat, or
  ``sync_catalog``) takes it over and re-dispatches its pending chunks. A per-course fetch is
  recovered from its outbox marker by ``requeue_refreshes`` once its ``running`` hint expires
  (the task's time limit, minutes), which is not exercised here.
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from catalog.mapping import map_course_run
from standin import lms_course_records
from tests.integration.conftest import STACK_SERVICES, ensure_services
from tests.integration.harness import Service, wait_until

pytestmark = pytest.mark.integration

LEASE_TTL = 3  # seconds: a dead sweep's lease expires quickly, so a resume is quick to test
PAGE = 20  # courses per chunk: 200 courses, 10 chunks


# --- helpers --------------------------------------------------------------------------------------
def _runs(service: Service) -> list[dict]:
    rows = service.sql(
        "select id, status, chunks_total, chunks_done, chunks_failed, resumed, started_at, finished_at, "
        "heartbeat_at from catalog_sweeprun order by id"
    )
    names = ("id", "status", "total", "done", "failed", "resumed", "started", "finished", "heartbeat")
    return [dict(zip(names, row, strict=True)) for row in rows]


def _finished(service: Service) -> list[dict] | None:
    runs = _runs(service)
    return runs if runs and all(r["status"] != "running" for r in runs) else None


def _utc(value: datetime | str | None) -> datetime | None:
    """A timestamp column as an aware datetime (PostgreSQL gives one; SQLite gives UTC text)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _heartbeat_age(service: Service) -> float:
    beat = _utc(_runs(service)[-1]["heartbeat"])
    return (datetime.now(UTC) - beat).total_seconds() if beat else 0.0


def _import_all(service: Service, standin) -> list[dict]:
    records = lms_course_records(standin.state.runs(), lms_only=0, ccx_every=0)
    service.import_courses(records)
    return records


def _assert_every_overview_right(service: Service, standin) -> None:
    """Every overview holds exactly what the catalog has now, and says it is synced."""
    dump = service.dump()
    wrong = []
    for run in standin.state.runs():
        row = dump[run["key"]]
        expected = map_course_run(run)
        got = {field: row[field] for field in expected}
        if got != expected or row["catalog_status"] != "ok":
            wrong.append((run["key"], row["catalog_status"], got, expected))
    assert not wrong, f"{len(wrong)} overview(s) wrong, e.g. {wrong[:2]}"


def _busy(log: str) -> bool:
    """The worker holds a task it has not finished (Celery's received/succeeded lines)."""
    ended = sum(log.count(f"] {word}") for word in ("succeeded in", "retry: ", "raised unexpected"))
    return log.count("] received") > ended


def _catalog_fetches(standin, since: float = 0.0) -> int:
    """Catalog API requests (token requests left out) that arrived at or after ``since`` (a Unix
    time). By arrival: a request a killed worker sent is counted when the stand-in answers it."""
    return sum(1 for arrived, route, _ in standin.stats()["answers"] if route != "token" and arrived >= since)


@pytest.fixture
def short_lease_service(tmp_path, standin, stack):
    service = Service(tmp_path, standin, stack=stack, lease_ttl=LEASE_TTL)
    yield service
    service.stop()


# --- SIGKILL of a worker mid-chunk ----------------------------------------------------------------
def test_a_worker_sigkilled_mid_chunk_the_sweep_still_completes(short_lease_service, standin, stack):
    service = short_lease_service
    records = _import_all(service, standin)
    standin.set_faults(latency_ms=500)  # a chunk is mostly its catalog request in flight
    worker = service.start_worker(concurrency=1)
    service.manage("sync_catalog", "--strategy", "keys", "--async", "--page-size", str(PAGE))
    wait_until(
        lambda: (r := _runs(service)) and r[0]["done"] >= 2 and _busy(service.worker_log()),
        60,
        what="two chunks done and the next one running",
    )
    service.kill_worker(worker)
    assert _busy(service.worker_log()), "the kill was to land mid-chunk"
    before = _runs(service)[0]
    assert before["status"] == "running" and before["done"] < before["total"], before

    standin.set_faults(latency_ms=0)
    restarted = time.time()
    service.start_worker(concurrency=2, name="w2")
    if stack == "rabbitmq-pg":
        # the lost chunk's message comes back with the dead worker's connection: no trigger needed
        runs = wait_until(lambda: _finished(service), 60, what="the sweep to finish by redelivery")
        assert runs[0]["resumed"] == 0, runs
    else:
        # Redis (visibility timeout, an hour) and the embedded broker (lost): the next trigger
        # resumes the run once its lease has expired, i.e. LEASE_TTL after its last heartbeat
        # (the queued chunks, run by w2, are heartbeats too).
        wait_until(
            lambda: (
                _count(service, "select count(*) from catalog_sweepchunk where status = 'pending'") <= 1
                and _heartbeat_age(service) > LEASE_TTL + 0.5
            ),
            60,
            what="the queued chunks done and the dead run's lease expired",
        )
        service.manage("sync_catalog", "--strategy", "keys", "--async")
        runs = wait_until(lambda: _finished(service), 60, what="the resumed sweep to finish")
        assert runs[0]["resumed"] >= 1, runs
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "complete" and run["done"] == run["total"] and run["failed"] == 0, run
    _assert_every_overview_right(service, standin)
    assert len(records) == len(standin.state.runs())
    # not started over: after the kill, each chunk not done then is fetched once
    assert _catalog_fetches(standin, since=restarted) == before["total"] - before["done"], standin.stats()


# --- SIGKILL of a worker mid-refresh ---------------------------------------------------------------
@pytest.mark.parametrize("stack", ["rabbitmq-pg"], indirect=True)
def test_a_worker_sigkilled_mid_refresh_the_course_is_synced_by_redelivery(service, standin):
    """The whole worker is killed while its per-course fetch is in flight. On RabbitMQ the message
    comes back at once (see the module docstring for Redis and the embedded broker; a killed pool
    process alone is redelivered on every stack, test_publish_worker.py)."""
    run = next(r for r in standin.state.runs() if r["marketing_url"] and r["key"].startswith("course-v1:"))
    service.import_courses(lms_course_records([run], lms_only=0, ccx_every=0))
    worker = service.start_worker()
    standin.set_faults(latency_ms=3000)
    service.manage("simulate_publish", run["key"])
    # a new worker asks for a token first (not delayed), then sends the fetch, which waits 3 s
    wait_until(lambda: standin.stats()["token"] >= 1 and _busy(service.worker_log()), 20, what="the fetch")
    time.sleep(0.5)  # the fetch follows its token at once: it is inside the stand-in's 3 s now
    service.kill_worker(worker)
    assert service.dump()[run["key"]]["catalog_status"] == "never"

    standin.set_faults(latency_ms=0)
    restarted = time.time()
    service.start_worker(name="w2")
    wait_until(lambda: service.dump()[run["key"]]["catalog_status"] == "ok", 40, what="redelivery")
    row = service.dump()[run["key"]]
    expected = map_course_run(run)
    assert {field: row[field] for field in expected} == expected
    service.settle("w2")
    assert _catalog_fetches(standin, since=restarted) == 1, standin.stats()


# --- Redis restarted mid-sweep ---------------------------------------------------------------------
class PrivateRedis:
    """A redis-server of this test's own on a free port, so that the machine's Redis is never
    restarted. Persistent (append-only file, fsync always) like a production Redis: a restart
    keeps the queued messages and the cache."""

    def __init__(self, folder) -> None:
        self.folder = folder
        folder.mkdir()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (scripts/services.py ensure redis installs it)"
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)),
                *("--logfile", "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_until(lambda: _pings(redis.Redis.from_url(self.url)), 10, what="the private redis-server")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown: the append-only file is complete
            self.proc.wait(timeout=15)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path):
    ensure_services("redis")  # installs redis-server when it is missing
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_restarted_mid_sweep_the_sweep_completes_after_it_is_back(tmp_path, standin, private_redis):
    ensure_services(*STACK_SERVICES["redis-pg"])
    service = Service(tmp_path, standin, stack="redis-pg", redis_url=private_redis.url, lease_ttl=LEASE_TTL)
    try:
        records = _import_all(service, standin)
        standin.set_faults(latency_ms=600)
        service.start_worker(concurrency=2)
        service.manage("sync_catalog", "--strategy", "keys", "--async", "--page-size", str(PAGE))
        wait_until(lambda: (r := _runs(service)) and r[0]["done"] >= 3, 60, what="three chunks done")
        private_redis.stop()
        assert _runs(service)[0]["done"] < _runs(service)[0]["total"], "Redis was to stop mid-sweep"
        down_at = time.monotonic()
        # Redis is down for two seconds, while chunks are in flight
        wait_until(lambda: time.monotonic() - down_at > 2, 5, what="the outage")
        private_redis.start()
        standin.set_faults(latency_ms=0)
        runs = wait_until(lambda: _finished(service), 90, what="the sweep to finish after Redis is back")
        assert "Connection to broker lost" in service.worker_log(), "the worker was to see the outage"
        assert len(runs) == 1 and runs[0]["status"] == "complete", runs
        assert runs[0]["done"] == runs[0]["total"] and runs[0]["failed"] == 0, runs
        _assert_every_overview_right(service, standin)
        # nothing started over: each chunk fetched once, and a chunk in flight at most once more
        assert _catalog_fetches(standin) <= runs[0]["total"] + 4, standin.stats()
        assert len(records) == len(standin.state.runs())
    finally:
        service.stop()


# --- two beat processes ----------------------------------------------------------------------------
BEAT_EVERY = 2  # seconds between sweep ticks


def _beat(service: Service, name: str) -> subprocess.Popen:
    return service.start_process(
        [
            *(sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"),
            f"--pidfile={service.tmp / (name + '.pid')}",
            f"--schedule={service.tmp / (name + '.db')}",
        ],
        name=name,
    )


def test_two_beat_processes_never_run_two_sweeps_at_once(service, standin):
    _import_all(service, standin)
    # the sweep's periodic task due every BEAT_EVERY seconds (in the admin, an operator's edit)
    service.manage(
        "shell",
        "-c",
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        f"every, _ = IntervalSchedule.objects.get_or_create(every={BEAT_EVERY}, period='seconds')\n"
        "task = PeriodicTask.objects.get(name='catalog full sweep')\n"
        "task.interval = every\n"
        "task.save()\n",
    )
    # a sweep (2 chunks of 100, on 2 processes) outlasts the moments between the two beats' sends
    standin.set_faults(latency_ms=1000)
    service.start_worker(concurrency=2)
    standin.reset_stats()
    beats = [_beat(service, "beat1"), _beat(service, "beat2")]

    def sends() -> int:
        return sum(service.log(n).count("Sending due task catalog full sweep") for n in ("beat1", "beat2"))

    running_seen = []

    def enough_ticks() -> bool:
        running_seen.append(_count(service, "select count(*) from catalog_sweeprun where status = 'running'"))
        return sends() >= 6

    wait_until(enough_ticks, 60, interval=0.2, what="six sweep ticks from the two beats")
    for proc in beats:
        service.kill_worker(proc)
    for name in ("beat1", "beat2"):  # both beats ticked: two schedulers really ran side by side
        assert "Sending due task catalog full sweep" in service.log(name), service.log(name)[-2000:]
    ticks = sends()
    service.settle(timeout=60)  # the worker has handled every tick that reached the broker
    runs = wait_until(lambda: _finished(service), 60, what="every started sweep to finish")
    assert max(running_seen) <= 1, running_seen
    assert all(r["status"] == "complete" and r["done"] == r["total"] for r in runs), runs
    # one at a time: each run finished before the next one started
    spans = sorted((_utc(r["started"]), _utc(r["finished"])) for r in runs)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), spans
    # every tick the worker got either started a sweep or found one running and did nothing (a
    # beat killed just after logging "Sending due task" may not have sent that last one)
    log = service.worker_log()
    received = len(re.findall(r"catalog_sync\.sweep\[[^]]+\] received", log))
    refused = log.count("'already-running'")
    assert ticks - 2 <= received <= ticks, (received, ticks)
    assert refused >= 1 and len(runs) + refused == received, (len(runs), refused, received)
    _assert_every_overview_right(service, standin)
    # requests: one per chunk of each run, nothing else
    assert _catalog_fetches(standin) == sum(r["total"] for r in runs), (standin.stats(), runs)


def _count(service: Service, query: str) -> int:
    return service.sql(query)[0][0]
