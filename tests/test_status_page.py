"""The staff status page, its JSON feed and the admin's operator buttons, through Django's test
client against the real admin: who may see it, what it shows for seeded data (histogram, counts,
progress, failures), that its query count does not grow with the overviews, the admin index's
banner, "Sweep now" / "Resume", the per-course "Refresh from catalog" button, the sweep run's
links, and the switches' migration. The task queue is patched only to see what was queued."""

from __future__ import annotations

import html as html_lib
import importlib
import re
from datetime import timedelta
from unittest import mock
from urllib.parse import unquote as url_unquote

import pytest
from django.apps import apps as django_apps
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys.edx.keys import CourseKey
from waffle.models import Switch
from waffle.testutils import override_switch

from catalog.models import CatalogIntegration, SweepChunk, SweepRun, SweepStatus
from catalog.switches import ALL_SWITCHES, DISABLE_CATALOG_CALLS, FETCH_ON_CREATE
from ops import status as ops_status
from ops import views as ops_views
from overviews.models import CatalogStatus, CourseOverview
from tasks.refresh import refresh_course
from tasks.sweep import sweep
from tests.browser.seed import seed_overviews, seed_schedule, seed_sweeps

pytestmark = pytest.mark.django_db


def times(text: str) -> str:
    """``text`` with each "x" between digits written as the multiplication sign (U+00D7)."""
    return re.sub(r"(?<=\d)x(?=\d)", "\u00d7", text)


STATUS = "/admin/status/"
FEED = "/admin/status.json"
SWEEP = "/admin/status/sweep/"


@pytest.fixture(autouse=True)
def _ping(monkeypatch):
    """No worker ping by default (the embedded broker answers "unknown" anyway); tests that
    need an answer set one."""
    ping = mock.Mock(return_value=None)
    monkeypatch.setattr(ops_status, "workers_answering", ping)
    monkeypatch.setattr(ops_views, "workers_answering", ping)
    return ping


@pytest.fixture(autouse=True)
def _broker_presumed_up(monkeypatch):
    import tasks.refresh

    monkeypatch.setattr(tasks.refresh, "_broker_down_until", 0.0)


@pytest.fixture
def seeded():
    expected = seed_overviews(200)
    seed_schedule(24)
    run = seed_sweeps(chunks_total=12, chunks_done=5, courses_seen=150)
    return {**expected, "run": run}


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- who may see it ------------------------------------------------------------------------------


def test_anonymous_and_non_staff_are_sent_to_the_login(client):
    for path in (STATUS, FEED):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    User.objects.create_user("learner", password="pw")
    client.login(username="learner", password="pw")
    assert client.get(STATUS).status_code == 302


def test_staff_see_the_page_and_the_index_links_to_it(admin_client):
    assert admin_client.get(STATUS).status_code == 200
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/status/"' in index


# --- what it shows -------------------------------------------------------------------------------


def test_the_histogram_and_the_status_bars_count_the_seeded_rows(admin_client, seeded):
    html = admin_client.get(STATUS).content.decode()
    drawn = dict(re.findall(r'class="age-bar" data-bucket="([^"]+)" data-count="(\d+)"', html))
    assert {html_lib.unescape(k): int(v) for k, v in drawn.items()} == seeded["buckets"]
    bars = dict(re.findall(r'class="status-bar" data-status="([^"]+)" data-count="(\d+)"', html))
    assert {k: int(v) for k, v in bars.items()} == seeded["statuses"]
    # the tallest bar is the largest bucket, drawn to the chart's full inner height
    heights = dict(
        re.findall(r'data-bucket="([^"]+)" data-count="\d+">\s*<rect [^>]*height="([\d.]+)"', html)
    )
    heights = {html_lib.unescape(k): v for k, v in heights.items()}
    assert float(heights["<1h"]) == ops_views.CHART_H - 2 * ops_views.CHART_PAD
    assert float(heights["older"]) < float(heights["<6h"]) < float(heights["<1h"])


def test_the_progress_bar_is_chunks_done_over_chunks_total(admin_client, seeded):
    html = admin_client.get(STATUS).content.decode()
    percent = round(100 * 5 / 12, 1)
    assert f'aria-valuenow="{percent}"' in html
    assert f'id="sweep-progress-fill" style="width: {percent}%"' in html
    feed = admin_client.get(FEED).json()
    progress = feed["progress"]
    assert progress["percent"] == percent and progress["chunks_done"] == 5 and progress["chunks_total"] == 12
    assert progress["courses_total"] == 200 and progress["stalled"] is False
    assert 0.5 < progress["rate"] < 1.0  # 150 courses in about 200 s
    assert progress["heartbeat_age"] < 60 and progress["expected_end"] > feed["now"]


def test_failures_link_to_their_course_and_their_run(admin_client, seeded):
    html = admin_client.get(STATUS).content.decode()
    errored = CourseOverview.objects.filter(catalog_status=CatalogStatus.ERROR).values_list("id", flat=True)
    assert errored
    for key in list(errored)[:3]:
        assert f'href="/admin/overviews/courseoverview/{quote(str(key))}/change/"' in html
    assert f'href="/admin/catalog/sweeprun/{seeded["run"].pk}/change/"' in html
    assert "CatalogServerError: 503 after 12 attempts" in html


def test_the_feed_reports_the_schedule_the_last_sweep_and_the_request_rate(admin_client, seeded):
    feed = admin_client.get(FEED).json()
    assert feed["schedule_seconds"] == 24 * 3600 and feed["sweep_overdue"] is False
    assert 7100 < feed["last_sweep_age"] < 7300  # finished two hours ago
    # 5 chunks finished in the last minute, 4 requests each, averaged over 5 minutes
    assert feed["requests_per_minute"] == 5 * 4 / ops_status.RATE_MINUTES
    assert feed["calls_off"] is None and feed["worker_alive"] is None and feed["problems"] == []


def test_the_rate_limit_is_shown_per_minute(admin_client, seeded):
    CatalogIntegration.objects.create(enabled=True, rate_limit_per_second=0.5)
    feed = admin_client.get(FEED).json()
    assert feed["rate_limit_per_minute"] == 30.0
    html = admin_client.get(STATUS).content.decode()
    assert 'id="rate-fill" style="width: 13.3%"' in html  # 4/min of 30/min


def test_no_rate_gauge_without_a_limit(admin_client, seeded):
    html = admin_client.get(STATUS).content.decode()
    assert 'class="ops-gauge ops-hidden" id="rate-gauge"' in html and "no cap" in html


@pytest.mark.parametrize("total", [10, 1000])
def test_the_query_count_does_not_grow_with_the_overviews(admin_client, total):
    seed_overviews(total)
    seed_schedule(24)
    seed_sweeps()
    admin_client.get(STATUS)  # warm the session, waffle and configuration caches
    with CaptureQueriesContext(connection) as page:
        assert admin_client.get(STATUS).status_code == 200
    with CaptureQueriesContext(connection) as feed:
        assert admin_client.get(FEED).status_code == 200
    # session + user, then the snapshot: running run, last run, schedule, one overview aggregate,
    # failed courses, failed chunks, request rate (the same at 10 and at 1,000 rows)
    assert len(page) == len(feed) == EXPECTED_QUERIES, [q["sql"][:120] for q in page.captured_queries]


EXPECTED_QUERIES = 9


def finished_run(**fields) -> SweepRun:
    run = SweepRun.objects.create(status=SweepStatus.COMPLETE, planning_done=True, **fields)
    now = timezone.now()
    SweepRun.objects.filter(pk=run.pk).update(
        started_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=1)
    )
    return run


def test_the_last_sweep_shows_its_strategy_and_requests_against_the_estimate(admin_client):
    run = finished_run(
        strategy="walk",
        strategy_reason="walk 70 < keys 1450 requests",
        catalog_count=3200,
        estimate_keys=1450,
        estimate_walk=70,
        catalog_requests=72,
        walk_pages=8,
        walk_sizes=[[100, 1], [200, 1], [400, 6]],
        walk_done=True,
        walk_offset=3200,
    )
    html = admin_client.get(STATUS).content.decode()
    card = re.search(r'<dl class="ops-facts" id="last-sweep-strategy">(.*?)</dl>', html, re.S).group(1)
    text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", card)).split())
    assert "Strategy walk + repair (walk 70 < keys 1450 requests)" in text
    assert "Requests 72 , estimate 70 (keys-batched: 1450)" in text
    assert times("8 page(s) of 3200 runs; sizes 100x1, 200x1, 400x6") in text and "stopped early" not in text
    last = admin_client.get(FEED).json()["last_sweep"]
    assert last["id"] == run.pk and last["strategy"] == "walk" and last["catalog_count"] == 3200
    assert (last["catalog_requests"], last["estimate"], last["estimate_keys"], last["estimate_walk"]) == (
        72,
        70,
        1450,
        70,
    )
    assert last["walk_sizes"] == times("100x1, 200x1, 400x6") and last["walk_error"] == ""


def test_the_last_sweep_says_when_its_walk_stopped_early(admin_client):
    finished_run(
        strategy="walk",
        strategy_reason="requested",
        catalog_count=3200,
        estimate_walk=9,
        catalog_requests=40,
        walk_error="walk stopped at position 800: CatalogServerError: 503",
    )
    html = admin_client.get(STATUS).content.decode()
    assert "stopped early</strong>: walk stopped at position 800: CatalogServerError: 503" in html


def test_a_keys_batched_last_sweep_shows_its_estimates_and_no_walk(admin_client):
    finished_run(
        strategy="keys", strategy_reason="keys 2 <= walk 3 requests", estimate_keys=2, estimate_walk=3
    )
    html = admin_client.get(STATUS).content.decode()
    card = re.search(r'<dl class="ops-facts" id="last-sweep-strategy">(.*?)</dl>', html, re.S).group(1)
    assert "keys-batched" in card and "(walk + repair: 3)" in card and "<dt>Walk</dt>" not in card
    assert admin_client.get(FEED).json()["last_sweep"]["estimate"] == 2


def test_a_last_sweep_from_before_the_strategies_shows_no_strategy(admin_client):
    finished_run()
    html = admin_client.get(STATUS).content.decode()
    assert 'id="last-sweep-strategy"' not in html
    assert admin_client.get(FEED).json()["last_sweep"]["strategy"] == ""


def test_a_running_walk_shows_its_strategy_and_position(admin_client, seeded):
    SweepRun.objects.filter(pk=seeded["run"].pk).update(
        strategy="walk", catalog_count=102525, walk_offset=25600
    )
    html = admin_client.get(STATUS).content.decode()
    assert (
        '<span id="sweep-strategy">walk</span><span id="sweep-walk">, walking: 25,600 of 102,525</span>'
        in html
    )
    progress = admin_client.get(FEED).json()["progress"]
    assert progress["strategy"] == "walk" and progress["walk"] == "25,600 of 102,525"
    SweepRun.objects.filter(pk=seeded["run"].pk).update(walk_done=True)  # now its repair runs
    assert admin_client.get(FEED).json()["progress"]["walk"] is None


# --- the admin index's banner --------------------------------------------------------------------


def test_the_banner_says_when_catalog_calls_are_off(admin_client):
    with override_switch(DISABLE_CATALOG_CALLS, active=True):
        index = admin_client.get("/admin/").content.decode()
    assert 'id="ops-banner"' in index and "Catalog calls are off" in index
    CatalogIntegration.objects.create(enabled=False)
    index = admin_client.get("/admin/").content.decode()
    assert "disabled in the admin" in index


def test_no_banner_when_all_is_well(admin_client, seeded):
    index = admin_client.get("/admin/").content.decode()
    assert 'id="ops-banner"' not in index and 'id="ops-status-link"' in index


def test_the_banner_says_when_no_worker_answers(admin_client, _ping):
    _ping.return_value = False
    index = admin_client.get("/admin/").content.decode()
    assert "No Celery worker answered a ping" in index


def test_the_worker_answer_is_reused_for_a_few_seconds(admin_client, _ping):
    _ping.return_value = True
    admin_client.get(FEED)
    admin_client.get(FEED)
    assert _ping.call_count == 1


def test_the_banner_says_when_the_last_complete_sweep_is_too_old(admin_client):
    seed_overviews(10)
    seed_schedule(24)
    old = SweepRun.objects.create(status=SweepStatus.COMPLETE, planning_done=True)
    now = timezone.now()
    SweepRun.objects.filter(pk=old.pk).update(
        started_at=now - timedelta(hours=31), finished_at=now - timedelta(hours=30)
    )
    index = admin_client.get("/admin/").content.decode()
    assert "No complete sweep within its schedule" in index and "30.0 h ago" in index
    # within the interval plus the slack: no banner
    SweepRun.objects.filter(pk=old.pk).update(finished_at=now - timedelta(hours=24, minutes=30))
    assert "No complete sweep" not in admin_client.get("/admin/").content.decode()


def test_a_stalled_sweep_is_named_and_can_be_resumed(admin_client, seeded, settings):
    settings.CATALOG_SWEEP_LEASE_TTL = 60
    SweepRun.objects.filter(pk=seeded["run"].pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    html = admin_client.get(STATUS).content.decode()
    assert "has no heartbeat for longer than the lease" in html
    assert re.search(r'id="sweep-resume"\s*>', html)  # enabled
    assert re.search(r'id="sweep-now" disabled', html) is None


# --- Sweep now / Resume --------------------------------------------------------------------------


@pytest.fixture
def sweep_queued():
    with mock.patch.object(sweep, "apply_async") as apply_async:
        apply_async.return_value.id = "sweep-task-1"
        yield apply_async


def test_sweep_now_queues_the_sweep_task(admin_client, sweep_queued):
    response = admin_client.post(SWEEP, {"action": "sweep"})
    assert response.status_code == 302 and response["Location"] == STATUS
    sweep_queued.assert_called_once()
    assert sweep_queued.call_args.kwargs["kwargs"] == {"trigger": "admin", "strategy": None}
    assert sweep_queued.call_args.kwargs["expires"] > 0
    assert any("Sweep queued" in m and "sweep-task-1" in m for m in messages_of(response))


@pytest.mark.parametrize("strategy", ["auto", "keys", "walk"])
def test_sweep_now_passes_the_chosen_strategy_to_the_task(strategy, admin_client, sweep_queued):
    response = admin_client.post(SWEEP, {"action": "sweep", "strategy": strategy})
    assert response.status_code == 302 and response["Location"] == STATUS
    sweep_queued.assert_called_once()
    assert sweep_queued.call_args.kwargs["kwargs"] == {"trigger": "admin", "strategy": strategy}
    assert any(f"Sweep queued, strategy {strategy}" in m for m in messages_of(response))


def test_sweep_now_with_the_select_left_as_configured_passes_no_strategy(admin_client, sweep_queued):
    admin_client.post(SWEEP, {"action": "sweep", "strategy": ""})
    assert sweep_queued.call_args.kwargs["kwargs"] == {"trigger": "admin", "strategy": None}


@pytest.mark.parametrize("strategy", ["fastest", "KEYS", "walk ", "x" * 5000])
def test_sweep_now_refuses_an_unknown_strategy_with_a_json_400(strategy, admin_client, sweep_queued):
    response = admin_client.post(SWEEP, {"action": "sweep", "strategy": strategy})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error.startswith("strategy must be one of auto, keys, walk (or left out), not ")
    assert len(error) < 120  # a long value is not echoed back
    sweep_queued.assert_not_called()


def test_the_page_offers_the_strategies_and_names_the_configured_one(admin_client):
    CatalogIntegration.objects.create(enabled=True, sweep_strategy="walk")
    html = admin_client.get(STATUS).content.decode()
    select = re.search(
        r'<select name="strategy" id="sweep-strategy-choice">(.*?)</select>', html, re.S
    ).group(1)
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "keys", "walk"]
    assert "as configured (walk)" in select


def test_resume_is_the_same_trigger_and_says_so(admin_client, sweep_queued):
    response = admin_client.post(SWEEP, {"action": "resume"})
    sweep_queued.assert_called_once()
    assert any("Resume queued" in m for m in messages_of(response))


def test_sweep_now_is_a_post(admin_client, sweep_queued):
    assert admin_client.get(SWEEP).status_code == 405
    sweep_queued.assert_not_called()


def test_sweep_now_needs_the_permission(client, sweep_queued):
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    client.login(username="viewer", password="pw")
    assert client.post(SWEEP, {"action": "sweep"}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="change_catalogintegration"))
    assert client.post(SWEEP, {"action": "sweep"}).status_code == 302
    sweep_queued.assert_called_once()


def test_sweep_now_queues_nothing_while_calls_are_off(admin_client, sweep_queued):
    with override_switch(DISABLE_CATALOG_CALLS, active=True):
        response = admin_client.post(SWEEP, {"action": "sweep"})
    sweep_queued.assert_not_called()
    assert any("no sweep was queued" in m for m in messages_of(response))


def test_sweep_now_warns_when_no_worker_answers(admin_client, sweep_queued, _ping):
    _ping.return_value = False
    response = admin_client.post(SWEEP, {"action": "sweep"})
    assert any("No Celery worker answered" in m for m in messages_of(response))


def test_sweep_now_reports_a_broker_failure(admin_client, sweep_queued):
    sweep_queued.side_effect = BrokerError("connection refused")
    response = admin_client.post(SWEEP, {"action": "sweep"})
    assert any("broker is unavailable" in m for m in messages_of(response))


# --- the overview page's "Refresh from catalog" button -------------------------------------------

KEY = "course-v1:Btn+B101+2025"


def change_url(key: str) -> str:
    return f"/admin/overviews/courseoverview/{quote(key)}/change/"


@pytest.fixture
def refresh_queued():
    with mock.patch.object(refresh_course, "apply_async") as apply_async:
        apply_async.return_value.id = "task-9"
        yield apply_async


def test_the_change_page_has_the_button_and_it_queues_one_refresh(admin_client, refresh_queued, _ping):
    from ops import admin as ops_admin

    CourseOverview.objects.create(id=CourseKey.from_string(KEY), display_name="Button course")
    page = admin_client.get(change_url(KEY)).content.decode()
    action = re.search(r'<form method="post" action="([^"]+)" id="refresh-form"', page).group(1)
    assert url_unquote(action).endswith("/refresh/") and "csrfmiddlewaretoken" in page
    with mock.patch.object(ops_admin, "workers_answering", return_value=False):
        response = admin_client.post(action)
    assert response.status_code == 302 and response["Location"] == change_url(KEY)
    refresh_queued.assert_called_once()
    assert refresh_queued.call_args.args[0] == (KEY,)
    texts = messages_of(response)
    assert any("1 course refresh(es) queued" in m for m in texts)
    assert any("No Celery worker answered" in m for m in texts)
    with mock.patch.object(ops_admin, "workers_answering", return_value=None):
        again = admin_client.post(action)
    assert any("1 already pending (coalesced)" in m for m in messages_of(again))
    assert refresh_queued.call_count == 1


def test_the_refresh_button_is_a_post_and_a_404_for_an_unknown_course(admin_client, refresh_queued):
    CourseOverview.objects.create(id=CourseKey.from_string(KEY))
    assert admin_client.get(f"/admin/overviews/courseoverview/{quote(KEY)}/refresh/").status_code == 405
    missing = f"/admin/overviews/courseoverview/{quote('course-v1:Btn+None+1')}/refresh/"
    assert admin_client.post(missing).status_code == 404
    refresh_queued.assert_not_called()


def test_lms_owned_fields_are_not_editable_on_the_change_page(admin_client):
    CourseOverview.objects.create(id=CourseKey.from_string(KEY), display_name="Read only")
    page = admin_client.get(change_url(KEY)).content.decode()
    assert 'name="display_name"' not in page and 'name="start_0"' not in page
    assert "Read only" in page
    assert admin_client.post(change_url(KEY), {"display_name": "hand edit"}).status_code == 403
    assert CourseOverview.objects.get().display_name == "Read only"


# --- sweep records: links, never deleted ---------------------------------------------------------


def test_a_sweep_run_page_links_to_its_chunks_and_its_failed_courses(admin_client, seeded):
    run = seeded["run"]
    in_run = CourseOverview.objects.filter(catalog_status=CatalogStatus.ERROR).first()
    CourseOverview.objects.filter(pk=in_run.pk).update(
        catalog_attempted_at=timezone.now() - timedelta(seconds=60)
    )
    other = SweepRun.objects.exclude(pk=run.pk).get()
    SweepChunk.objects.create(run=other, seq=0, first_key="a", last_key="b", size=1)
    page = admin_client.get(f"/admin/catalog/sweeprun/{run.pk}/change/").content.decode()
    chunks = re.search(r'<a href="([^"]+)">all 12 chunk\(s\)</a>', page).group(1).replace("&amp;", "&")
    failed = re.search(r'<a href="([^"]+)">1 failed</a>', page).group(1).replace("&amp;", "&")
    courses = re.search(r'<a href="([^"]+)">courses in error from this run</a>', page).group(1)
    listing = admin_client.get(chunks)
    assert listing.status_code == 200  # the lookup is allowed (no "?e=1" redirect)
    assert {c.pk for c in listing.context["cl"].result_list} == set(
        SweepChunk.objects.filter(run=run).values_list("pk", flat=True)
    )
    failed_listing = admin_client.get(failed)
    assert [c.seq for c in failed_listing.context["cl"].result_list] == [2]
    course_listing = admin_client.get(courses.replace("&amp;", "&"))
    assert course_listing.status_code == 200
    shown = {str(o.pk) for o in course_listing.context["cl"].result_list}
    # errors attempted since the run started: the one above (the seeded ones are older)
    expected = {
        str(k)
        for k in CourseOverview.objects.filter(
            catalog_status=CatalogStatus.ERROR, catalog_attempted_at__gte=run.started_at
        ).values_list("id", flat=True)
    }
    assert shown == expected == {str(in_run.pk)}


def test_sweep_records_cannot_be_deleted(admin_client, seeded):
    run = seeded["run"]
    assert admin_client.get(f"/admin/catalog/sweeprun/{run.pk}/delete/").status_code == 403
    assert admin_client.post(f"/admin/catalog/sweeprun/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(
        "/admin/catalog/sweeprun/", {"action": "delete_selected", "_selected_action": [run.pk]}
    )
    assert response.status_code in (200, 302)
    assert SweepRun.objects.filter(pk=run.pk).exists()
    chunk = SweepChunk.objects.filter(run=run).first()
    assert (
        admin_client.post(f"/admin/catalog/sweepchunk/{chunk.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert SweepChunk.objects.filter(pk=chunk.pk).exists()


# --- the switches' migration ---------------------------------------------------------------------


def test_migrate_creates_the_switches_off_with_their_notes():
    switches = {s.name: s for s in Switch.objects.filter(name__in=ALL_SWITCHES)}
    assert set(switches) == {DISABLE_CATALOG_CALLS, FETCH_ON_CREATE}
    assert not any(s.active for s in switches.values())
    assert "Kill switch" in switches[DISABLE_CATALOG_CALLS].note
    assert "Default: off" in switches[FETCH_ON_CREATE].note


def test_the_switch_migration_is_reversible_and_keeps_a_switch_already_on():
    migration = importlib.import_module("catalog.migrations.0003_waffle_switches")
    assert set(migration.SWITCHES) == set(ALL_SWITCHES)  # same names as catalog.switches
    migration.delete_switches(django_apps, None)
    assert not Switch.objects.filter(name__in=ALL_SWITCHES).exists()
    Switch.objects.create(name=DISABLE_CATALOG_CALLS, active=True, note="")
    migration.create_switches(django_apps, None)
    kill = Switch.objects.get(name=DISABLE_CATALOG_CALLS)
    assert kill.active and "Kill switch" in kill.note  # state kept, note filled
    assert Switch.objects.get(name=FETCH_ON_CREATE).active is False
