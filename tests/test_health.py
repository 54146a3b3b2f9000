"""Health with django-health-check: the staff detail at /health/detail/ (database, cache, broker,
the sweep's freshness), and /health/'s up/down for load balancers (tests/test_api.py holds the
rest of its contract: throttle, 503s, staff report)."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from api import health
from catalog.models import SweepRun, SweepStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("ops", password="pw", is_staff=True))
    return client


def complete_sweep(finished_ago: timedelta, took: timedelta = timedelta(minutes=30)) -> SweepRun:
    finished = timezone.now() - finished_ago
    run = SweepRun.objects.create(status=SweepStatus.COMPLETE, finished_at=finished)
    SweepRun.objects.filter(pk=run.pk).update(started_at=finished - took)
    return run


def set_interval(**every) -> None:
    ((period, n),) = every.items()
    schedule, _ = IntervalSchedule.objects.get_or_create(every=n, period=period)
    PeriodicTask.objects.filter(name=health.SWEEP_SCHEDULE_NAME).update(interval=schedule)


def detail(client: Client):
    response = client.get("/health/detail/?format=json")
    return response.status_code, response.json()


# --- Who sees the detail ---------------------------------------------------------------------------


def test_detail_is_for_staff_only(embedded_broker, django_user_model):
    complete_sweep(timedelta(hours=1))
    anonymous = Client().get("/health/detail/?format=json")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    learner = Client()
    learner.force_login(django_user_model.objects.create_user("learner", password="pw"))
    assert learner.get("/health/detail/?format=json").status_code == 302


def test_detail_all_green(embedded_broker, staff_client):
    complete_sweep(timedelta(hours=1))
    code, body = detail(staff_client)
    assert code == 200
    assert body == {"Database": "OK", "Cache": "OK", "Broker": "OK", "SweepFreshness": "OK"}
    page = staff_client.get("/health/detail/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and b"SweepFreshness" in page.content


# --- Each check, both states ---------------------------------------------------------------------


def test_database_check_fails_when_the_database_does_not_answer(embedded_broker, staff_client):
    complete_sweep(timedelta(hours=1))
    with mock.patch.object(health, "check_database", return_value={"ok": False, "error": "unreachable (X)"}):
        code, body = detail(staff_client)
    assert code == 500 and "unreachable" in body["Database"] and body["Cache"] == "OK"


def test_cache_check_fails_when_the_cache_does_not_answer(embedded_broker, staff_client):
    complete_sweep(timedelta(hours=1))
    with mock.patch.object(health.cache, "set", side_effect=ConnectionError("redis gone")):
        code, body = detail(staff_client)
    assert code == 500 and body["Cache"] == "Unavailable: unreachable (ConnectionError)"
    assert body["Database"] == body["Broker"] == "OK"


def test_broker_check_fails_when_nothing_listens(broker, staff_client):
    complete_sweep(timedelta(hours=1))
    broker("redis://127.0.0.1:1/0")  # nothing listens on port 1
    code, body = detail(staff_client)
    assert code == 500 and body["Broker"].startswith("Unavailable: unreachable")
    assert "127.0.0.1" not in body["Broker"]
    # the load balancer's answer says down too
    assert Client().get("/health/").status_code == 503


def test_sweep_freshness_without_any_complete_sweep(embedded_broker, staff_client):
    SweepRun.objects.create(status=SweepStatus.FAILED, finished_at=timezone.now())
    code, body = detail(staff_client)
    assert code == 500 and body["SweepFreshness"] == "Unavailable: no complete sweep yet"


def test_sweep_freshness_is_interval_plus_the_last_runs_duration(embedded_broker, staff_client, settings):
    settings.HEALTH_SWEEP_EXPECTED_DURATION = 3600
    # the migration's schedule: every 24 h; the last run took 6 h: allowed 30 h
    complete_sweep(timedelta(hours=29), took=timedelta(hours=6))
    assert detail(staff_client) == (
        200,
        {"Database": "OK", "Cache": "OK", "Broker": "OK", "SweepFreshness": "OK"},
    )
    SweepRun.objects.all().delete()
    complete_sweep(timedelta(hours=31), took=timedelta(hours=6))
    code, body = detail(staff_client)
    assert code == 500
    assert (
        body["SweepFreshness"].startswith("Unavailable: last complete sweep 1116")
        and "allowed 108000s" in body["SweepFreshness"]
    )


def test_sweep_freshness_floor_is_the_setting(embedded_broker, staff_client, settings):
    """A short last run does not shrink the allowance below HEALTH_SWEEP_EXPECTED_DURATION."""
    settings.HEALTH_SWEEP_EXPECTED_DURATION = 2 * 3600
    complete_sweep(timedelta(hours=25, minutes=30), took=timedelta(minutes=5))
    assert detail(staff_client)[0] == 200  # 25.5 h < 24 h + 2 h
    settings.HEALTH_SWEEP_EXPECTED_DURATION = 3600
    assert detail(staff_client)[0] == 500  # 25.5 h > 24 h + 1 h


def test_sweep_freshness_follows_the_schedule_in_the_admin(embedded_broker, staff_client, settings):
    settings.HEALTH_SWEEP_EXPECTED_DURATION = 600
    complete_sweep(timedelta(hours=3), took=timedelta(minutes=5))
    set_interval(hours=6)
    assert detail(staff_client)[0] == 200
    set_interval(hours=2)  # an operator tightened the schedule: 3 h is now late
    code, body = detail(staff_client)
    assert code == 500 and "allowed 7800s" in body["SweepFreshness"]
    assert health.sweep_interval() == timedelta(hours=2)


def test_sweep_interval_without_the_schedule_row_is_the_default(embedded_broker):
    PeriodicTask.objects.filter(name=health.SWEEP_SCHEDULE_NAME).delete()
    assert health.sweep_interval() == health.DEFAULT_SWEEP_INTERVAL


# --- /health/ for load balancers -------------------------------------------------------------------


def test_a_stale_sweep_does_not_take_the_web_process_out_of_its_load_balancer(embedded_broker, staff_client):
    complete_sweep(timedelta(days=10))
    response = Client().get("/health/")
    assert (response.status_code, response.json()) == (200, {"status": "up"})
    body = staff_client.get("/health/").json()
    assert body["status"] == "up" and body["sweep_freshness"]["ok"] is False
    assert body["sweep_freshness"]["allowed_seconds"] == 86400 + 3600
    assert detail(staff_client)[0] == 500  # the detail (and /metrics' alert rules) say it
