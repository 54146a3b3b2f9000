"""/metrics on the production web server while a sweep runs on two Celery workers (prefork).

Every process writes its samples to one PROMETHEUS_MULTIPROC_DIR; gunicorn's /metrics sums them.
The web process runs no task, so task counters in its scrape can only come from the workers' pool
processes: that is multiprocess mode working. The database gauges move with the sweep. The
workers log JSON lines (LOG_FORMAT=json) that carry each task's id, course key and sweep id.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from standin import lms_course_records
from tests.integration.conftest import ensure_services
from tests.integration.harness import Service, wait_until

pytestmark = pytest.mark.integration

TOKEN = "scrape-" + "x" * 32
SERIES = {
    "catalog_sync_catalog_requests_total",
    "catalog_sync_catalog_request_seconds_bucket",
    "catalog_sync_tasks_total",
    "catalog_sync_sweep_chunks_total",
    "catalog_sync_sweep_running",
    "catalog_sync_sweep_run_chunks",
    "catalog_sync_sweep_run_courses",
    "catalog_sync_sweep_last_complete_timestamp_seconds",
    "catalog_sync_overviews",
    "catalog_sync_catalog_data_oldest_age_seconds",
    "catalog_sync_outbox_pending",
    "catalog_sync_metrics_database_up",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def deployment(tmp_path, standin):
    ensure_services("redis", "postgres")
    service = Service(tmp_path, standin, stack="redis-pg")
    port = free_port()
    service.env.update(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        METRICS_TOKEN=TOKEN,
        LOG_FORMAT="json",
        WEB_ADDRESS=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
    )
    (tmp_path / "prometheus").mkdir()
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        service.stop()


def scrape(service, token: str = TOKEN) -> requests.Response:
    return requests.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_metrics_scrape_cleanly_while_a_sweep_runs_on_two_workers(deployment, standin, tmp_path):
    service = deployment
    records = lms_course_records(standin.state.runs(), lms_only=0, ccx_every=0)
    service.import_courses(records)
    web = service.start_process(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"], name="web"
    )
    wait_until(
        lambda: web.poll() is not None or _answers(service), 60, interval=0.3, what="gunicorn to answer"
    )
    assert web.poll() is None, service.log("web")[-3000:]

    # not open to the world
    assert requests.get(f"{service.url}/metrics", timeout=10).status_code == 401
    assert scrape(service, token="wrong").status_code == 401

    before = parse(scrape(service).text)
    assert get(before, "catalog_sync_overviews", catalog_status="never") == len(records)
    assert get(before, "catalog_sync_sweep_running") == 0

    # a slow catalog: 20 chunks of 10, ~1 s each, on 2 workers x 2 pool processes
    standin.set_faults(latency_ms=1000)
    service.start_worker(concurrency=2, name="w1")
    service.start_worker(concurrency=2, name="w2")
    service.manage("sync_catalog", "--async", "--page-size", "10", "--strategy", "keys")

    during: list[dict] = []

    def mid_sweep() -> bool:
        response = scrape(service)
        assert response.status_code == 200, response.text[:500]
        samples = parse(response.text)  # parses cleanly on every scrape
        during.append(samples)
        done = get(samples, "catalog_sync_sweep_run_chunks", state="done")
        total = get(samples, "catalog_sync_sweep_run_chunks", state="total")
        return get(samples, "catalog_sync_sweep_running") == 1 and 0 < done < total

    mid = wait_until(lambda: mid_sweep() and during[-1], 90, interval=0.3, what="a scrape mid-sweep")
    assert get(mid, "catalog_sync_sweep_run_courses", outcome="seen") > 0
    # counters of the worker processes are in the web's scrape before the sweep is over
    assert get(mid, "catalog_sync_tasks_total", task="catalog_sync.sweep_chunk", outcome="done") >= 1

    def finished():
        samples = parse(scrape(service).text)
        complete = get(samples, "catalog_sync_sweep_last_complete_timestamp_seconds") > 0
        return complete and get(samples, "catalog_sync_sweep_running") == 0 and samples

    wait_until(finished, 120, interval=0.5, what="the sweep to complete")

    # The run completes inside the last chunk's body; Celery's task_success handler counts the
    # task a moment later, in that pool process: scrape until every chunk task is counted.
    def all_chunks_counted():
        samples = parse(scrape(service).text)
        done = get(samples, "catalog_sync_tasks_total", task="catalog_sync.sweep_chunk", outcome="done")
        return done >= 20 and samples

    after = wait_until(all_chunks_counted, 15, interval=0.3, what="every chunk task counted")
    assert {name for name, _ in after} >= SERIES, sorted(SERIES - {name for name, _ in after})

    (run_id, chunks_total, chunks_done) = service.sql(
        "select id, chunks_total, chunks_done from catalog_sweeprun where status = 'complete'"
    )[0]
    assert chunks_total == chunks_done == 20
    # every chunk was counted once, by whichever pool process ran it, summed across processes
    assert get(after, "catalog_sync_tasks_total", task="catalog_sync.sweep_chunk", outcome="done") == 20
    assert get(after, "catalog_sync_sweep_chunks_total", outcome="done") == 20
    assert get(after, "catalog_sync_tasks_total", task="catalog_sync.sweep", outcome="ok") == 1
    assert get(after, "catalog_sync_catalog_requests_total", method="GET", outcome="ok", status="200") >= 20
    assert get(after, "catalog_sync_catalog_request_seconds_count", method="GET") >= 20
    assert get(after, "catalog_sync_overviews", catalog_status="ok") == len(records)
    assert get(after, "catalog_sync_overviews", catalog_status="never") == 0
    assert get(after, "catalog_sync_catalog_data_oldest_age_seconds") < 300
    assert get(mid, "catalog_sync_sweep_run_chunks", state="done") < 20

    # the samples came from several worker processes (files are per pid), none from a task in web
    pids = {
        re.search(r"_(\d+)\.db$", p.name).group(1) for p in (tmp_path / "prometheus").glob("counter_*.db")
    }
    worker_pids = {str(c.pid) for w in service.workers[1:] for c in service.pool_children(w)}
    assert len(pids & worker_pids) >= 2, (pids, worker_pids)

    # JSON logs: a chunk's lines name their task and sweep
    chunk_lines = [
        line
        for name in ("w1", "w2")
        for line in map(_json, service.worker_log(name).splitlines())
        if line and line.get("sweep_id") == str(run_id) and line.get("task_id")
    ]
    assert chunk_lines, service.worker_log("w1")[-2000:]

    # one course through a refresh: its task's lines carry its key and task id
    key = records[0]["id"]
    service.manage("refresh_course", "--async", key)
    course_lines = wait_until(
        lambda: [
            line
            for name in ("w1", "w2")
            for line in map(_json, service.worker_log(name).splitlines())
            if line and line.get("course_key") == key and line.get("task_id")
        ],
        30,
        what="a JSON log line of the refresh task",
    )
    assert course_lines
    refreshed = wait_until(
        lambda: (
            get(
                s := parse(scrape(service).text),
                "catalog_sync_tasks_total",
                task="catalog_sync.refresh_course",
                outcome="ok",
            )
            >= 1
            and s
        ),
        30,
        what="the refresh task counted",
    )
    assert get(refreshed, "catalog_sync_refreshes_total", outcome="queued") >= 1


def _answers(service) -> bool:
    try:
        return requests.get(f"{service.url}/health/", timeout=10).status_code in (200, 503)
    except requests.RequestException:
        time.sleep(0.1)
        return False


def _json(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None
