"""The admin: overview rows read-only and malformed keys a 404, the "Refresh from catalog" action
through request_refresh (coalesced, counted, a warning when no worker answers), and API tokens
never listed in clear. Django's test client against the real admin; the task queue is patched
only to see what was queued (no eager mode)."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.management import call_command
from kombu.exceptions import OperationalError as BrokerError
from opaque_keys.edx.keys import CourseKey
from rest_framework.authtoken.models import Token
from waffle.testutils import override_switch

from catalog import coalesce
from catalog.switches import DISABLE_CATALOG_CALLS
from ops import admin as ops_admin
from ops.admin import MAX_ADMIN_REFRESH, workers_answering
from overviews.models import CatalogStatus, CourseOverview
from tasks.app import app
from tests.factories import CourseOverviewFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_presumed_up")]


def times(text: str) -> str:
    """``text`` with each "x" between digits written as the multiplication sign (U+00D7)."""
    return re.sub(r"(?<=\d)x(?=\d)", "\u00d7", text)


KEY = "course-v1:Adm+A101+2025"
CHANGELIST = "/admin/overviews/courseoverview/"


def change_url(key: str) -> str:
    return f"{CHANGELIST}{quote(key)}/change/"


def overview(key: str = KEY, **fields) -> CourseOverview:
    return CourseOverviewFactory(id=CourseKey.from_string(key), **fields)


@pytest.fixture
def no_ping():
    """The worker ping is not under test here (the embedded broker cannot be pinged anyway)."""
    with mock.patch.object(ops_admin, "workers_answering", return_value=None) as ping:
        yield ping


# --- overview rows: read-only, malformed keys are a 404 ------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["not-a-key", "course-v1:OnlyOrg", "x" * 10_000, "course-v1:Org+Num+Run+extra+bits"],
)
@pytest.mark.parametrize("view", ["change", "history", "delete"])
def test_a_malformed_key_in_an_admin_url_is_a_404(raw, view, admin_client):
    response = admin_client.get(f"{CHANGELIST}{quote(raw)}/{view}/")
    assert response.status_code == 404


def test_an_unknown_well_formed_key_redirects_with_a_message(admin_client):
    response = admin_client.get(change_url("course-v1:Adm+Nope+1"), follow=True)
    assert response.redirect_chain and response.status_code == 200
    assert any("Perhaps it was deleted" in str(m) for m in get_messages(response.wsgi_request))


@pytest.mark.parametrize("key", ["course-v1:Adm+A101+2025", "Adm/B/1", "ccx-v1:Adm+C+1+ccx@2"])
def test_the_change_page_shows_every_field_read_only(key, admin_client):
    overview(key, display_name="Shown", marketing_url="https://www.example.com/m")
    response = admin_client.get(change_url(key))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Shown" in page and "https://www.example.com/m" in page
    form = response.context["adminform"].form
    assert list(form.fields) == []  # nothing editable: key, content, catalog fields, sync metadata
    assert 'name="_save"' not in page


def test_posting_a_changed_key_creates_no_row_and_changes_nothing(admin_client):
    row = overview(display_name="Original", marketing_url="https://www.example.com/m")
    before = CourseOverview.objects.values().get(id=row.id)
    response = admin_client.post(
        change_url(KEY),
        {"id": "course-v1:Adm+Copy+2025", "display_name": "Edited", "marketing_url": "https://evil.example/"},
    )
    assert response.status_code == 403
    assert list(CourseOverview.objects.values_list("id", flat=True)) == [row.id]
    assert CourseOverview.objects.values().get(id=row.id) == before


def test_no_overview_is_added_in_the_admin(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}add/", {"id": KEY}).status_code == 403
    assert not CourseOverview.objects.exists()


def test_the_changelist_searches_and_filters_without_errors(admin_client):
    overview(catalog_status=CatalogStatus.ERROR)
    assert admin_client.get(CHANGELIST, {"q": "A101"}).status_code == 200
    assert admin_client.get(CHANGELIST, {"q": "x" * 10_000}).status_code == 200
    assert admin_client.get(CHANGELIST, {"catalog_status__exact": "error"}).status_code == 200
    # a malformed key as a lookup is refused the admin's way (redirect with ?e=1), not a 500
    assert admin_client.get(CHANGELIST, {"id__exact": "not-a-key"}).status_code == 302


def test_the_changelist_reads_no_distinct_values_and_filters_language_by_presence(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    overview(language="fr")
    overview("course-v1:Adm+A102+2025", language=None)
    overview("course-v1:Adm+A103+2025", language="")
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(CHANGELIST).status_code == 200
    assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
    empty = admin_client.get(CHANGELIST, {"language__isempty": "1"})
    assert sorted(str(row.pk) for row in empty.context["cl"].result_list) == [
        "course-v1:Adm+A102+2025",
        "course-v1:Adm+A103+2025",
    ]
    present = admin_client.get(CHANGELIST, {"language__isempty": "0"})
    assert [str(row.pk) for row in present.context["cl"].result_list] == [KEY]


# --- "Refresh from catalog" ---------------------------------------------------------------------


def run_action(admin_client, selected, **extra):
    data = {"action": "refresh_from_catalog", "_selected_action": selected, **extra}
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


def test_the_action_asks_for_one_refresh_per_selected_course(admin_client, queued, no_ping):
    keys = ["course-v1:Adm+A+1", "Adm/B/1", "ccx-v1:Adm+C+1+ccx@2"]
    for key in [*keys, "course-v1:Adm+NotSelected+1"]:
        overview(key)
    messages = run_action(admin_client, keys)
    assert messages == [("success", "3 course refresh(es) queued, 0 already pending (coalesced).")]
    assert sorted(call.args[0][0] for call in queued.call_args_list) == sorted(keys)
    assert all(call.kwargs == {"countdown": None} for call in queued.call_args_list)  # now
    requested = CourseOverview.objects.filter(catalog_refresh_requested_at__isnull=False)
    assert sorted(str(k) for k in requested.values_list("id", flat=True)) == sorted(keys)


def test_the_action_coalesces_with_pending_fetches(admin_client, queued, no_ping):
    keys = ["course-v1:Adm+A+1", "course-v1:Adm+B+1", "course-v1:Adm+C+1"]
    for key in keys:
        overview(key)
    coalesce.claim_pending(keys[0], ttl=60)  # a publish's fetch is already scheduled
    assert run_action(admin_client, keys) == [
        ("success", "2 course refresh(es) queued, 1 already pending (coalesced).")
    ]
    # the same selection again, right away: everything is pending, nothing more is queued
    assert run_action(admin_client, keys) == [
        ("success", "0 course refresh(es) queued, 3 already pending (coalesced).")
    ]
    assert sorted(call.args[0][0] for call in queued.call_args_list) == keys[1:]


@override_switch(DISABLE_CATALOG_CALLS, active=True)
def test_the_action_with_the_kill_switch_on_queues_nothing(admin_client, queued, no_ping):
    overview()
    [(level, message)] = run_action(admin_client, [KEY])
    assert level == "warning" and "disabled" in message and "nothing was queued" in message
    assert not queued.called
    assert CourseOverview.objects.get(id=KEY).catalog_refresh_requested_at is None


def test_the_action_with_the_integration_disabled_queues_nothing(admin_client, queued, no_ping):
    from catalog.models import CatalogIntegration

    CatalogIntegration.objects.create(enabled=False)
    overview()
    [(level, message)] = run_action(admin_client, [KEY])
    assert level == "warning" and "disabled in the admin" in message
    assert not queued.called


def test_the_action_refuses_more_than_the_limit(admin_client, queued, no_ping):
    CourseOverview.objects.bulk_create(
        CourseOverview(id=CourseKey.from_string(f"course-v1:Bulk+C{n}+1"))
        for n in range(MAX_ADMIN_REFRESH + 1)
    )
    [(level, message)] = run_action(admin_client, ["course-v1:Bulk+C0+1"], select_across="1")
    assert level == "error" and f"More than {MAX_ADMIN_REFRESH}" in message
    assert not queued.called


def test_the_action_when_the_broker_fails_says_what_was_recorded(admin_client, queued, no_ping):
    keys = ["course-v1:Adm+A+1", "course-v1:Adm+B+1"]
    for key in keys:
        overview(key)
    queued.side_effect = [mock.Mock(id="t1"), BrokerError("Connection refused")]
    [(level, message)] = run_action(admin_client, keys)
    assert level == "error"
    assert message.startswith("1 course refresh(es) queued, 0 already pending (coalesced). 1 recorded")
    assert "broker is unavailable" in message and "Connection refused" in message
    # both are recorded on their rows: the one not queued is queued once the broker is back
    assert CourseOverview.objects.filter(catalog_refresh_requested_at__isnull=False).count() == 2


def test_the_action_warns_when_no_worker_answers(admin_client, queued):
    overview()
    with mock.patch.object(ops_admin, "workers_answering", return_value=False) as ping:
        messages = run_action(admin_client, [KEY])
    assert messages[0] == ("success", "1 course refresh(es) queued, 0 already pending (coalesced).")
    assert messages[1][0] == "warning" and "No Celery worker answered a ping within 1 s" in messages[1][1]
    ping.assert_called_once_with()


@pytest.mark.parametrize("answer", [True, None])
def test_the_action_does_not_warn_when_a_worker_answers_or_it_cannot_tell(answer, admin_client, queued):
    overview()
    with mock.patch.object(ops_admin, "workers_answering", return_value=answer):
        assert [level for level, _ in run_action(admin_client, [KEY])] == ["success"]


def test_the_action_is_not_offered_to_staff_without_change_permission(client, django_user_model, queued):
    overview()
    staff = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(staff)  # staff, but no model permissions at all
    response = client.post(CHANGELIST, {"action": "refresh_from_catalog", "_selected_action": [KEY]})
    assert response.status_code == 403
    assert not queued.called


def test_staff_with_the_view_permission_only_see_rows_but_cannot_refresh(client, django_user_model, queued):
    overview()
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_courseoverview"))
    client.force_login(staff)
    assert client.get(change_url(KEY)).status_code == 200
    response = client.post(CHANGELIST, {"action": "refresh_from_catalog", "_selected_action": [KEY]})
    assert response.status_code == 200 and not queued.called  # "no action selected"


# --- workers_answering --------------------------------------------------------------------------


def test_worker_ping_cannot_tell_on_the_embedded_broker(monkeypatch):
    monkeypatch.setitem(app.conf, "broker_url", "sqla+sqlite:////tmp/nowhere.sqlite3")
    with mock.patch.object(app.control, "ping") as ping:
        assert workers_answering() is None
    assert not ping.called


@pytest.mark.parametrize(("replies", "expected"), [([], False), ([{"celery@w1": {"ok": "pong"}}], True)])
def test_worker_ping_on_a_real_broker(replies, expected, monkeypatch):
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:6379/15")
    with mock.patch.object(app.control, "ping", return_value=replies) as ping:
        assert workers_answering() is expected
    ping.assert_called_once_with(timeout=1.0, limit=1)  # returns at the first reply


def test_worker_ping_failing_cannot_tell(monkeypatch):
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:6379/15")
    with mock.patch.object(app.control, "ping", side_effect=BrokerError("refused")):
        assert workers_answering() is None


# --- API tokens ---------------------------------------------------------------------------------

TOKENS = "/admin/authtoken/tokenproxy/"


@pytest.fixture
def token(django_user_model):
    user = django_user_model.objects.create_user("scripted", password="pw")
    call_command("drf_create_token", user.username, stdout=mock.Mock())
    return Token.objects.get(user=user)


def test_the_token_list_shows_a_prefix_never_the_key(admin_client, token):
    response = admin_client.get(TOKENS)
    assert response.status_code == 200
    page = response.content.decode()
    assert token.key not in page
    assert f"{token.key[:6]}…" in page and "scripted" in page


def test_the_token_page_and_its_deletion_never_show_the_key(admin_client, token):
    url = f"{TOKENS}{token.user_id}/"
    view = admin_client.get(f"{url}change/")
    assert view.status_code == 200 and token.key not in view.content.decode()
    confirm = admin_client.get(f"{url}delete/")
    assert confirm.status_code == 200 and token.key not in confirm.content.decode()
    deleted = admin_client.post(f"{url}delete/", {"post": "yes"}, follow=True)
    assert deleted.status_code == 200 and token.key not in deleted.content.decode()
    assert not Token.objects.filter(key=token.key).exists()  # revoked
    entry = LogEntry.objects.get()
    assert token.key not in entry.object_repr and entry.object_repr == f"{token.key[:6]}…"


def test_tokens_are_neither_created_nor_edited_in_the_admin(admin_client, token, django_user_model):
    other = django_user_model.objects.create_user("other", password="pw")
    assert admin_client.get(f"{TOKENS}add/").status_code == 403
    assert admin_client.post(f"{TOKENS}add/", {"user": other.pk}).status_code == 403
    response = admin_client.post(f"{TOKENS}{token.user_id}/change/", {"user": other.pk})
    assert response.status_code == 403
    assert Token.objects.get(key=token.key).user_id == token.user_id
    assert not Token.objects.filter(user=other).exists()


# --- sweep records ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sweeprun", "sweepchunk"])
def test_sweep_records_are_read_only_and_kept(model, admin_client):
    from catalog.models import SweepChunk, SweepRun, SweepStatus

    run = SweepRun.objects.create(status=SweepStatus.RUNNING)
    chunk = SweepChunk.objects.create(run=run, seq=0, first_key="a", last_key="b", size=1)
    obj = run if model == "sweeprun" else chunk
    base = f"/admin/catalog/{model}/"
    assert admin_client.get(base).status_code == 200
    assert admin_client.get(f"{base}{obj.pk}/change/").status_code == 200  # a view page
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    response = admin_client.post(
        base, {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
    )
    assert response.status_code == 200  # no such action: the list again
    assert SweepRun.objects.filter(pk=run.pk, status=SweepStatus.RUNNING).exists()
    assert SweepChunk.objects.filter(pk=chunk.pk).exists()


# --- sweep records: the strategy, its estimates and the walk ------------------------------------

RUNS = "/admin/catalog/sweeprun/"


def sweep_run(**fields):
    from catalog.models import SweepRun, SweepStatus

    defaults = {"status": SweepStatus.COMPLETE, "planning_done": True}
    return SweepRun.objects.create(**{**defaults, **fields})


def shown(admin_client, url: str) -> str:
    """The page's text, tags and entities gone (a value inside a <div class="readonly">)."""
    import html

    response = admin_client.get(url)
    assert response.status_code == 200
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_a_walk_run_shows_its_strategy_estimates_pages_sizes_progress_and_error(admin_client):
    run = sweep_run(
        strategy="walk",
        strategy_reason="walk 70 < keys 1450 requests",
        catalog_count=3200,
        estimate_keys=1450,
        estimate_walk=70,
        catalog_requests=72,
        walk_offset=1600,
        walk_pages=8,
        walk_sizes=[[20, 2], [40, 1], [80, 5]],
        walk_error="walk stopped at position 1600: CatalogServerError: 503",
    )
    page = shown(admin_client, f"{RUNS}{run.pk}/change/")
    assert "Strategy" in page and "Walk (walk + repair only)" in page  # the two sections
    assert "walk 70 < keys 1450 requests" in page
    assert "Catalog count: 3200" in page
    assert "72 requests; estimate walk 70 (keys 1,450)" in page
    assert "Estimate keys: 1450" in page and "Estimate walk: 70" in page
    assert times("20x2, 40x1, 80x5") in page
    assert "1,600 of 3,200: stopped early (see walk error)" in page
    assert "walk stopped at position 1600: CatalogServerError: 503" in page
    assert "Walk pages: 8" in page
    # read-only like the rest of the run: no form field, no save button
    response = admin_client.get(f"{RUNS}{run.pk}/change/")
    assert list(response.context["adminform"].form.fields) == []
    assert 'name="_save"' not in response.content.decode()


def test_a_walk_in_progress_and_a_finished_one_show_their_position(admin_client):
    from catalog.models import SweepStatus

    walking = sweep_run(
        status=SweepStatus.RUNNING,
        planning_done=False,
        strategy="walk",
        catalog_count=102525,
        walk_offset=25600,
    )
    assert "25,600 of 102,525: walking" in shown(admin_client, f"{RUNS}{walking.pk}/change/")
    done = sweep_run(strategy="walk", catalog_count=3200, walk_offset=3200, walk_done=True)
    assert "3,200 of 3,200: done" in shown(admin_client, f"{RUNS}{done.pk}/change/")


def test_a_keys_run_shows_its_estimates_and_no_walk(admin_client):
    run = sweep_run(
        strategy="keys",
        strategy_reason="keys 2 <= walk 3 requests",
        catalog_count=150,
        estimate_keys=2,
        estimate_walk=3,
        catalog_requests=3,
    )
    page = shown(admin_client, f"{RUNS}{run.pk}/change/")
    assert "keys 2 <= walk 3 requests" in page
    assert "3 requests; estimate keys 2 (walk 3)" in page
    assert "not a walk" in page


def test_a_run_before_its_choice_and_one_whose_probe_failed_render(admin_client):
    fresh = sweep_run(status="running", planning_done=False)
    assert "not a walk" in shown(admin_client, f"{RUNS}{fresh.pk}/change/")
    forced = sweep_run(strategy="walk", strategy_reason="requested (count probe failed: 503)", walk_offset=0)
    page = shown(admin_client, f"{RUNS}{forced.pk}/change/")
    assert "0 requests; estimate walk none" in page and "0 of ?" in page


def test_the_run_list_shows_the_strategy_and_requests_against_the_estimate(admin_client):
    sweep_run(strategy="walk", estimate_keys=1450, estimate_walk=70, catalog_requests=72)
    sweep_run(strategy="keys", estimate_keys=48, estimate_walk=None, catalog_requests=48)
    page = shown(admin_client, RUNS)
    assert "72 requests; estimate walk 70 (keys 1,450)" in page
    assert "48 requests; estimate keys 48" in page
    assert admin_client.get(RUNS, {"strategy": "walk"}).context["cl"].result_count == 1


@pytest.mark.parametrize(
    ("sizes", "text"),
    [
        ([], ""),
        ([[100, 1]], times("100x1")),
        ([[20, 2], [40, 1], [80, 5]], times("20x2, 40x1, 80x5")),
        ([[1600, 1200]], times("1,600x1,200")),
        ([["x"], 3], "['x'], 3"),  # not the recorded shape: shown as stored
    ],
)
def test_walk_sizes_read_as_size_times_pages(sizes, text):
    assert ops_admin.walk_sizes_text(sizes) == text


# --- the catalog integration's configuration: the sweep's tunables, with history ------------------

CONFIG = "/admin/catalog/catalogintegration/"


def config_form(**changes) -> dict:
    from catalog.models import CatalogIntegration

    current = CatalogIntegration.current()
    data = {
        "enabled": "on",
        "page_size": current.page_size,
        "connect_timeout": current.connect_timeout,
        "read_timeout": current.read_timeout,
        "max_url_length": current.max_url_length,
        "page_attempts": current.page_attempts,
        "sweep_strategy": current.sweep_strategy,
        "walk_page_budget": current.walk_page_budget,
        "walk_page_size_ceiling": current.walk_page_size_ceiling,
        "rate_limit_per_second": current.rate_limit_per_second,
    }
    return {**data, **changes}


def test_the_configuration_form_has_the_sweep_tunables_with_their_defaults(admin_client):
    response = admin_client.get(f"{CONFIG}add/")
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert {"sweep_strategy", "walk_page_budget", "walk_page_size_ceiling"} <= set(form.fields)
    assert form.initial["sweep_strategy"] == "auto"
    assert float(form.initial["walk_page_budget"]) == 5.0
    assert int(form.initial["walk_page_size_ceiling"]) == 1600
    assert [value for value, _ in form.fields["sweep_strategy"].choices] == ["auto", "keys", "walk"]


def test_every_save_of_the_tunables_is_a_new_row_and_the_newest_is_current(admin_client):
    from catalog.models import CatalogIntegration, current_config

    before = CatalogIntegration.objects.count()  # the migration's initial row, if any
    first = admin_client.post(
        f"{CONFIG}add/",
        config_form(sweep_strategy="walk", walk_page_budget="2.5", walk_page_size_ceiling="800"),
    )
    assert first.status_code == 302
    second = admin_client.post(f"{CONFIG}add/", config_form(sweep_strategy="keys"))
    assert second.status_code == 302
    rows = list(CatalogIntegration.objects.order_by("change_date", "id"))[before:]
    assert CatalogIntegration.objects.count() == before + 2
    assert [(r.sweep_strategy, r.walk_page_budget, r.walk_page_size_ceiling) for r in rows] == [
        ("walk", 2.5, 800),
        ("keys", 2.5, 800),  # the add form starts from the current values
    ]
    assert all(r.changed_by is not None for r in rows)  # who changed it
    current = current_config()
    assert (current.sweep_strategy, current.walk_page_budget, current.walk_page_size_ceiling) == (
        "keys",
        2.5,
        800,
    )
    # the list is the history: both rows, each tunable a column
    page = shown(admin_client, CONFIG)
    assert "walk + repair" in page and "keys-batched" in page
    listing = admin_client.get(CONFIG)
    assert {"sweep_strategy", "walk_page_budget", "walk_page_size_ceiling"} <= set(
        listing.context["cl"].list_display
    )
    # an old row is shown read-only, never edited in place
    old = admin_client.get(f"{CONFIG}{rows[0].pk}/change/")
    assert old.status_code == 200 and "walk_page_budget" not in old.context["adminform"].form.fields


@pytest.mark.parametrize(
    "bad",
    [
        {"sweep_strategy": "fastest"},
        {"walk_page_budget": "0.01"},
        {"walk_page_size_ceiling": "0"},
        {"walk_page_size_ceiling": "10001"},
    ],
)
def test_a_tunable_out_of_range_is_refused_and_saves_nothing(bad, admin_client):
    from catalog.models import CatalogIntegration

    before = CatalogIntegration.objects.count()
    response = admin_client.post(f"{CONFIG}add/", config_form(**bad))
    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors.keys() == bad.keys()
    assert CatalogIntegration.objects.count() == before
