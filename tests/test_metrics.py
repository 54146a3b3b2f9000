"""/metrics: the bearer token, the exposition (process counters summed over the multiprocess
directory, database gauges read at scrape time) and each instrumentation point's counter.

Counters live in files shared by every process of the host (``PROMETHEUS_MULTIPROC_DIR``), so
each test compares a sample before and after what it does, never an absolute count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from unittest import mock

import pytest
import requests
import responses
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from catalog.connection import build_client
from catalog.models import SweepRun, SweepStatus
from catalog.throttle import FleetThrottle
from catalog_client.client import CatalogClient
from catalog_client.errors import CatalogConnectionError, CatalogServerError
from observability import MULTIPROC_DIR, metrics, multiproc
from observability import celery as obs_celery
from overviews.models import CatalogStatus
from tasks.refresh import refresh_course
from tests.conftest import API, OAUTH
from tests.factories import CourseOverviewFactory

pytestmark = pytest.mark.django_db

TOKEN = "t" * 32


def overview(key: str, **fields):
    from opaque_keys.edx.keys import CourseKey

    return CourseOverviewFactory(id=CourseKey.from_string(key), **fields)


# Every series the issue asks for (the counters appear once incremented; see test_exposition...).
DATABASE_SERIES = {
    "catalog_sync_sweep_running",
    "catalog_sync_sweep_run_chunks",
    "catalog_sync_sweep_run_courses",
    "catalog_sync_sweep_heartbeat_age_seconds",
    "catalog_sync_sweep_last_complete_timestamp_seconds",
    "catalog_sync_sweep_interval_seconds",
    "catalog_sync_sweep_expected_duration_seconds",
    "catalog_sync_overviews",
    "catalog_sync_catalog_data_oldest_age_seconds",
    "catalog_sync_overviews_never_checked",
    "catalog_sync_outbox_pending",
    "catalog_sync_outbox_oldest_age_seconds",
    "catalog_sync_metrics_database_up",
}
COUNTER_SERIES = {
    "catalog_sync_catalog_requests_total",
    "catalog_sync_catalog_request_seconds_bucket",
    "catalog_sync_tasks_total",
    "catalog_sync_refreshes_total",
    "catalog_sync_throttle_pauses_total",
    "catalog_sync_events_consumed_total",
    "catalog_sync_sweep_chunks_total",
}


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client: Client | None = None, token: str = TOKEN):
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:300]
    return response


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed with prometheus_client's own text parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(name: str, **labels: str) -> float:
    """One sample of this process's view of the multiprocess files (0 when absent)."""
    text = api_metrics.exposition()[0].decode()
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# --- Access --------------------------------------------------------------------------------------


def test_metrics_are_off_without_a_token(settings):
    settings.METRICS_TOKEN = None
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404
    assert b"catalog_sync" not in response.content


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", f"Bearer {TOKEN}x", f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer " + "t" * 31],
)
def test_an_unauthenticated_scrape_is_refused(token, header):
    kwargs = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = Client().get("/metrics", **kwargs)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"catalog_sync" not in response.content


def test_a_staff_session_is_no_token(token, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("ops", password="pw", is_staff=True))
    assert client.get("/metrics").status_code == 401


def test_only_get(token):
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


# --- The exposition ------------------------------------------------------------------------------


def test_exposition_parses_and_holds_every_series(token):
    now = timezone.now()
    overview("course-v1:M+Never+1")
    overview("course-v1:M+Ok+1", catalog_status=CatalogStatus.OK, catalog_checked_at=now - timedelta(hours=5))
    overview("course-v1:M+Ok+2", catalog_status=CatalogStatus.OK, catalog_checked_at=now - timedelta(hours=1))
    overview(
        "course-v1:M+Err+1",
        catalog_status=CatalogStatus.ERROR,
        catalog_checked_at=now - timedelta(minutes=5),
        catalog_refresh_requested_at=now - timedelta(minutes=10),
    )
    finished = now - timedelta(hours=3)
    SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished)
    SweepRun.objects.filter(status=SweepStatus.COMPLETE).update(started_at=finished - timedelta(hours=2))
    SweepRun.objects.create(
        status=SweepStatus.RUNNING,
        heartbeat_at=now - timedelta(seconds=30),
        chunks_total=10,
        chunks_done=4,
        chunks_failed=1,
        courses_seen=400,
        courses_updated=12,
        courses_errored=100,
    )
    # one of each counter, so that each series exists
    metrics.observe_catalog_request("get", 200, "ok", 0.2)
    metrics.count_task("catalog_sync.refresh_course", "ok")
    metrics.count_refreshes("queued")
    metrics.count_throttle_pause("rate_limit")
    metrics.count_event("applied")
    metrics.count_sweep_chunk("done")

    response = scrape()
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    got = samples(response.content.decode())
    names = {name for name, _ in got}
    assert names >= DATABASE_SERIES | COUNTER_SERIES, sorted((DATABASE_SERIES | COUNTER_SERIES) - names)

    def g(name, **labels):
        return got[(name, tuple(sorted(labels.items())))]

    assert g("catalog_sync_metrics_database_up") == 1
    assert g("catalog_sync_sweep_running") == 1
    assert (
        g("catalog_sync_sweep_run_chunks", state="total"),
        g("catalog_sync_sweep_run_chunks", state="done"),
    ) == (
        10,
        4,
    )
    assert g("catalog_sync_sweep_run_chunks", state="failed") == 1
    assert g("catalog_sync_sweep_run_courses", outcome="seen") == 400
    assert g("catalog_sync_sweep_run_courses", outcome="updated") == 12
    assert g("catalog_sync_sweep_run_courses", outcome="errored") == 100
    assert 29 <= g("catalog_sync_sweep_heartbeat_age_seconds") < 90
    assert g("catalog_sync_sweep_last_complete_timestamp_seconds") == pytest.approx(finished.timestamp())
    assert g("catalog_sync_sweep_interval_seconds") == 86400  # the migration's schedule: every 24 h
    assert g("catalog_sync_sweep_expected_duration_seconds") == 7200  # the last run's 2 h > the 1 h floor
    assert g("catalog_sync_overviews", catalog_status="never") == 1
    assert g("catalog_sync_overviews", catalog_status="ok") == 2
    assert g("catalog_sync_overviews", catalog_status="error") == 1
    assert g("catalog_sync_overviews", catalog_status="missing") == 0
    assert 5 * 3600 <= g("catalog_sync_catalog_data_oldest_age_seconds") < 5 * 3600 + 60
    assert g("catalog_sync_overviews_never_checked") == 1
    assert g("catalog_sync_outbox_pending") == 1
    assert 600 <= g("catalog_sync_outbox_oldest_age_seconds") < 660


def test_gauges_when_nothing_ran(token):
    got = samples(scrape().content.decode())
    assert got[("catalog_sync_sweep_running", ())] == 0
    assert got[("catalog_sync_sweep_run_chunks", (("state", "total"),))] == 0
    assert got[("catalog_sync_sweep_last_complete_timestamp_seconds", ())] == 0
    assert got[("catalog_sync_catalog_data_oldest_age_seconds", ())] == 0
    assert got[("catalog_sync_outbox_pending", ())] == 0


def test_a_database_failure_still_serves_the_counters(token):
    metrics.count_task("catalog_sync.sweep", "ok")
    with mock.patch.object(api_metrics.SweepRun.objects, "filter", side_effect=RuntimeError("db gone")):
        got = samples(scrape().content.decode())
    assert got[("catalog_sync_metrics_database_up", ())] == 0
    assert ("catalog_sync_sweep_running", ()) not in got
    assert got[("catalog_sync_tasks_total", (("outcome", "ok"), ("task", "catalog_sync.sweep")))] >= 1


def test_samples_of_another_process_are_summed():
    """Multiprocess mode: a counter incremented in a child process shows in this one's scrape."""
    key = ("catalog_sync_tasks_total", (("outcome", "from_child"), ("task", "test.child")))
    before = samples(api_metrics.exposition()[0].decode()).get(key, 0.0)
    code = "from observability import metrics; metrics.count_task('test.child', 'from-child')"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(MULTIPROC_DIR)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert samples(api_metrics.exposition()[0].decode()).get(key, 0.0) == before + 1


# --- Instrumentation points ----------------------------------------------------------------------


def test_every_catalog_request_is_counted_and_timed_by_outcome_and_status(catalog_settings):
    ok = {"name": "catalog_sync_catalog_requests_total", "method": "GET", "outcome": "ok", "status": "200"}
    failed = {**ok, "outcome": "server_error", "status": "503"}
    token_ok = {**ok, "method": "POST"}
    down = {**ok, "outcome": "connection_error", "status": "0"}
    before = {k: value(**v) for k, v in {"ok": ok, "failed": failed, "token": token_ok, "down": down}.items()}
    hist_before = value("catalog_sync_catalog_request_seconds_count", method="GET")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, OAUTH, json={"access_token": "tok", "expires_in": 3600})
        rsps.add(
            responses.GET,
            f"{API}course_runs/course-v1%3AA%2BB%2BC/?exclude_utm=1",
            json={"key": "course-v1:A+B+C"},
        )
        rsps.add(
            responses.GET,
            f"{API}course_runs/course-v1%3AA%2BB%2BD/?exclude_utm=1",
            status=503,
            json={"detail": "down"},
        )
        rsps.add(
            responses.GET,
            f"{API}course_runs/course-v1%3AA%2BB%2BE/?exclude_utm=1",
            body=requests.ConnectionError("refused"),
        )
        client = build_client()  # catalog.connection wires the observer
        client.get_course_run("course-v1:A+B+C")
        with pytest.raises(CatalogServerError):
            client.get_course_run("course-v1:A+B+D")
        with pytest.raises(CatalogConnectionError):
            client.get_course_run("course-v1:A+B+E")
    assert value(**ok) == before["ok"] + 1
    assert value(**failed) == before["failed"] + 1
    assert value(**token_ok) == before["token"] + 1
    assert value(**down) == before["down"] + 1
    assert value("catalog_sync_catalog_request_seconds_count", method="GET") == hist_before + 3


def test_a_failing_observer_never_fails_a_catalog_call(client_config):
    calls = []

    def observer(*args):
        calls.append(args)
        raise RuntimeError("metrics broken")

    with responses.RequestsMock() as rsps, CatalogClient(client_config, observer=observer) as client:
        rsps.add(responses.POST, OAUTH, json={"access_token": "tok", "expires_in": 3600})
        rsps.add(
            responses.GET,
            f"{API}course_runs/course-v1%3AA%2BB%2BC/?exclude_utm=1",
            json={"key": "course-v1:A+B+C"},
        )
        assert client.get_course_run("course-v1:A+B+C")["key"] == "course-v1:A+B+C"
    assert [(m, s, o) for m, s, o, _ in calls] == [("POST", 200, "ok"), ("GET", 200, "ok")]


def test_task_outcomes_come_from_celery_signals():
    """The hooks observability.celery connects, sent the way the worker's tracer sends them."""
    from celery.signals import task_failure, task_retry, task_success

    task = refresh_course.name

    def n(outcome):
        return value("catalog_sync_tasks_total", task=task, outcome=outcome)

    before = {o: n(o) for o in ("ok", "gave_up", "deferred", "disabled", "retried", "failed")}
    for result in ("ok", "gave-up", "deferred", "disabled", "ok"):
        task_success.send(sender=refresh_course, result=result)
    task_retry.send(sender=refresh_course, request=mock.Mock(task=task), reason="503")
    task_failure.send(sender=refresh_course, task_id="x", exception=RuntimeError("boom"))
    assert n("ok") == before["ok"] + 2
    assert n("gave_up") == before["gave_up"] + 1
    assert n("deferred") == before["deferred"] + 1
    assert n("disabled") == before["disabled"] + 1
    assert n("retried") == before["retried"] + 1
    assert n("failed") == before["failed"] + 1


@pytest.mark.parametrize(
    ("result", "outcome"),
    [("ok", "ok"), ("gave-up", "gave_up"), ("queued 3, already pending 0", "ok"), (None, "ok"), (7, "ok")],
)
def test_a_free_text_or_missing_result_counts_ok(result, outcome):
    assert obs_celery.outcome_of(result) == outcome


def test_refresh_requests_count_queued_and_coalesced(monkeypatch):
    from tasks import refresh as tasks_refresh

    sent = []
    monkeypatch.setattr(
        tasks_refresh.refresh_course, "apply_async", lambda *a, **k: sent.append(a) or mock.Mock(id="t1")
    )
    overview("course-v1:R+Q+1")
    before = {o: value("catalog_sync_refreshes_total", outcome=o) for o in ("queued", "coalesced")}
    key = overview("course-v1:R+Q+2").id
    tasks_refresh.request_refresh([key])
    tasks_refresh.request_refresh([key])  # pending: coalesced
    tasks_refresh.request_refresh([key])
    assert len(sent) == 1
    assert value("catalog_sync_refreshes_total", outcome="queued") == before["queued"] + 1
    assert value("catalog_sync_refreshes_total", outcome="coalesced") == before["coalesced"] + 2


def test_throttle_pauses_are_counted():
    before_429 = value("catalog_sync_throttle_pauses_total", reason="catalog_429")
    before_rate = value("catalog_sync_throttle_pauses_total", reason="rate_limit")
    clock = [1000.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    gate = FleetThrottle(rate_per_second=1.0, clock=lambda: clock[0], sleep=sleep)
    gate.before_request()
    gate.before_request()  # the second in one 1-second window waits for the next
    gate.on_throttled(5.0)
    assert slept
    assert value("catalog_sync_throttle_pauses_total", reason="rate_limit") == before_rate + 1
    assert value("catalog_sync_throttle_pauses_total", reason="catalog_429") == before_429 + 1


# --- Housekeeping of the multiprocess directory ----------------------------------------------------


def test_clean_dead_keeps_live_processes_files(tmp_path):
    live = tmp_path / f"counter_{os.getpid()}.db"
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dead = tmp_path / f"counter_{dead_pid}.db"
    gauge = tmp_path / f"gauge_livesum_{dead_pid}.db"
    for f in (live, dead, gauge):
        f.write_bytes(b"")
    assert multiproc.clean_dead(tmp_path) == 2
    assert live.exists() and not dead.exists() and not gauge.exists()
    assert multiproc.clean(tmp_path) == 1 and not live.exists()


def test_openmetrics_when_the_scraper_asks_for_it(token):
    """Prometheus asks for OpenMetrics first: every family name must be unique there (a gauge
    named like a counter's family would make the whole scrape invalid)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    metrics.count_sweep_chunk("done")
    metrics.observe_catalog_request("GET", 200, "ok", 0.1)
    response = Client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = [f.name for f in parse_openmetrics(response.content.decode())]
    assert len(families) == len(set(families))
    assert {"catalog_sync_sweep_chunks", "catalog_sync_sweep_run_chunks"} <= set(families)


def test_a_worker_host_serves_its_own_samples_with_the_token():
    """CELERY_METRICS_ADDRESS: a worker's main process serves the directory's sums over HTTP."""
    from observability import exporter

    server = exporter.serve("127.0.0.1:0", TOKEN)
    try:
        url = "http://{}:{}/metrics".format(*server.server_address[:2])
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        code = "from observability import metrics; metrics.count_task('test.exporter', 'ok')"
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(MULTIPROC_DIR)}
        key = ("catalog_sync_tasks_total", (("outcome", "ok"), ("task", "test.exporter")))
        before = samples(requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text)
        subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
        response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code == 200
        assert samples(response.text)[key] == before.get(key, 0.0) + 1
    finally:
        server.shutdown()
        server.server_close()
