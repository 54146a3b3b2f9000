"""The management commands (README.md "Management commands"): exit codes, messages, nothing
half-written."""

from __future__ import annotations

import io
import json

import pytest
import responses
from django.core.management import call_command
from django.core.management.base import CommandError
from opaque_keys.edx.keys import CourseKey

from catalog.models import CatalogIntegration
from overviews.models import CatalogStatus, CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield WireCatalog(rsps)


def run(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def _write(tmp_path, lines):
    path = tmp_path / "courses.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_import_creates_and_updates_in_place_without_touching_catalog_fields(tmp_path):
    CourseOverviewFactory(
        id=CourseKey.from_string("course-v1:A+B+C"),
        display_name="old",
        marketing_url="https://keep.example/x",
        catalog_status=CatalogStatus.OK,
    )
    path = _write(
        tmp_path,
        [
            json.dumps(
                {"id": "course-v1:A+B+C", "display_name": "new", "marketing_url": "https://evil.example/"}
            ),
            json.dumps(
                {
                    "id": "Old/Style/Run",
                    "display_name": "old style",
                    "start": "2025-01-01T00:00:00Z",
                    "self_paced": True,
                }
            ),
        ],
    )
    out, _ = run("import_courses", path)
    assert "created=1 updated=1" in out
    row = CourseOverview.objects.get(id="course-v1:A+B+C")
    assert (row.display_name, row.marketing_url, row.catalog_status) == (
        "new",
        "https://keep.example/x",
        "ok",
    )
    old = CourseOverview.objects.get(id="Old/Style/Run")
    assert old.self_paced and old.start.year == 2025


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "not a key"}', "line 2: invalid course key"),
        ("{not json", "line 2: not valid JSON"),
        ('{"id": "course-v1:A+B+D", "start": "yesterday"}', "line 2: start is not an ISO 8601"),
        ('["a list"]', "line 2: a record must be a JSON object"),
    ],
)
def test_import_refuses_a_malformed_line_with_exit_2_and_writes_nothing(tmp_path, line, message):
    path = _write(tmp_path, [json.dumps({"id": "course-v1:A+B+C"}), line])
    with pytest.raises(CommandError, match=message) as info:
        run("import_courses", path)
    assert info.value.returncode == 2
    assert CourseOverview.objects.count() == 0


def test_import_reads_stdin():
    run("import_courses", "-", stdin=io.StringIO('{"id": "course-v1:A+B+C"}\n'))
    assert CourseOverview.objects.filter(id="course-v1:A+B+C").exists()


def test_simulate_publish_updates_in_place_and_rejects_invalid_keys():
    CourseOverviewFactory(id=CourseKey.from_string("course-v1:A+B+C"), marketing_url="https://keep.example/x")
    run("simulate_publish", "course-v1:A+B+C", "course-v1:A+B+New")
    assert CourseOverview.objects.get(id="course-v1:A+B+C").marketing_url == "https://keep.example/x"
    assert CourseOverview.objects.filter(id="course-v1:A+B+New").exists()
    with pytest.raises(CommandError, match="'nope'") as info:
        run("simulate_publish", "course-v1:A+B+C", "nope")
    assert info.value.returncode == 2


def test_sync_catalog_syncs_then_reports_zero_updated(wire):
    rows = CourseOverviewFactory.create_batch(12)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    out, _ = run("sync_catalog", "--no-progress", "--page-size", "5")
    assert "sync_catalog complete" in out and "updated=12" in out and "pages=3" in out
    out, _ = run("sync_catalog", "--no-progress")
    assert "updated=0" in out and "unchanged=12" in out


def test_sync_catalog_page_size_comes_from_the_admin_config(wire):
    CatalogIntegration.objects.create(enabled=True, page_size=4)
    rows = CourseOverviewFactory.create_batch(8)
    wire.add(*(catalog_run(str(ov.id)) for ov in rows))
    out, _ = run("sync_catalog", "--no-progress")
    assert "pages=2" in out and "page_size=4" in out


def test_sync_catalog_dry_run_prints_changes_and_writes_nothing(wire):
    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id), marketing_url="https://new.example/x"))
    out, _ = run("sync_catalog", "--no-progress", "--dry-run")
    assert f"would change {ov.id} marketing_url: None -> 'https://new.example/x'" in out
    ov.refresh_from_db()
    assert ov.marketing_url is None


def test_sync_catalog_exits_1_when_the_catalog_is_down_and_keeps_data(wire):
    CatalogIntegration.objects.create(enabled=True, page_attempts=1)
    ov = CourseOverviewFactory(marketing_url="https://keep.example/x", catalog_status=CatalogStatus.OK)
    wire.before_list = lambda w: (503, {}, "down")
    with pytest.raises(CommandError, match="sweep could not complete") as info:
        run("sync_catalog", "--no-progress")
    assert info.value.returncode == 1
    ov.refresh_from_db()
    assert ov.marketing_url == "https://keep.example/x"


def test_sync_catalog_disabled_in_admin_exits_1(wire):
    CatalogIntegration.objects.create(enabled=False)
    with pytest.raises(CommandError, match="disabled") as info:
        run("sync_catalog", "--no-progress")
    assert info.value.returncode == 1
    assert wire.list_requests == 0


NOT_CONFIGURED = (
    "the catalog connection is not configured: set CATALOG_API_URL, CATALOG_OAUTH_URL, "
    "CATALOG_CLIENT_ID, CATALOG_CLIENT_SECRET in the environment"
)


@pytest.mark.parametrize(
    "command", [("sync_catalog", "--no-progress"), ("refresh_course", "course-v1:A+B+C")]
)
def test_a_command_without_connection_settings_says_what_to_set(settings, command):
    """A CommandError (one line, exit 1), not ImproperlyConfigured escaping as a traceback."""
    settings.CATALOG_API_URL = None
    CourseOverviewFactory(id=CourseKey.from_string("course-v1:A+B+C"))
    with pytest.raises(CommandError) as info:
        run(*command)
    assert info.value.returncode == 1
    message = str(info.value)
    assert message.startswith("the catalog connection is not configured: set CATALOG_API_URL")
    assert message.endswith(" in the environment") and "\n" not in message


def test_commands_without_connection_settings_print_one_line_and_no_traceback(tmp_path):
    """What an operator sees from manage.py (README "Management commands"): exit status 1 and one
    line naming every missing variable, on stderr, without a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {name: value for name, value in os.environ.items() if not name.startswith("CATALOG_")}
    env |= {"DJANGO_SETTINGS_MODULE": "settings.test", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert manage("migrate", "-v0").returncode == 0
    for command in (("sync_catalog", "--no-progress"), ("refresh_course", "course-v1:A+B+C")):
        done = manage(*command)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines() == [f"CommandError: {NOT_CONFIGURED}"]


def test_refresh_course_exit_codes(wire):
    ov = CourseOverviewFactory()
    wire.add(catalog_run(str(ov.id), marketing_url="https://r.example/x"))
    out, _ = run("refresh_course", str(ov.id))
    assert "updated=1" in out
    ov.refresh_from_db()
    assert ov.marketing_url == "https://r.example/x"

    with pytest.raises(CommandError) as info:
        run("refresh_course", "bad key")
    assert info.value.returncode == 2

    with pytest.raises(CommandError) as info:
        run("refresh_course", "course-v1:No+Such+Course")
    assert info.value.returncode == 1

    wire.before_list = lambda w: (400, {}, '{"detail": "bad"}')
    with pytest.raises(CommandError, match="catalog fetch failed") as info:
        run("refresh_course", str(ov.id))
    assert info.value.returncode == 1
    ov.refresh_from_db()
    assert ov.catalog_status == CatalogStatus.ERROR and ov.marketing_url == "https://r.example/x"


def test_dump_overviews_prints_json_lines_with_every_documented_field():
    CourseOverviewFactory(marketing_url="https://d.example/x")
    out, _ = run("dump_overviews")
    record = json.loads(out.splitlines()[0])
    for name in (
        "id",
        "display_name",
        "start",
        "marketing_url",
        "eligible_for_financial_aid",
        "language",
        "catalog_synced_at",
        "catalog_status",
        "catalog_error",
    ):
        assert name in record
    assert record["marketing_url"] == "https://d.example/x"


def test_refresh_course_async_enqueues_one_task_per_known_course():
    from unittest import mock

    from tasks.refresh import refresh_course

    ov = CourseOverviewFactory()
    with mock.patch.object(refresh_course, "apply_async") as apply_async:
        out, _ = run("refresh_course", "--async", str(ov.id))
        assert apply_async.call_args.args[0] == (str(ov.id),)
        assert f"queued {ov.id}" in out
        with pytest.raises(CommandError) as info:
            run("refresh_course", "--async", str(ov.id), "course-v1:No+Such+Course")
        # the first one is still pending: coalesced, not queued twice
        assert info.value.returncode == 1 and apply_async.call_count == 1
        out, _ = run("refresh_course", "--async", str(ov.id))
        assert f"already pending {ov.id}" in out and apply_async.call_count == 1


def test_dump_overviews_into_a_closed_pipe_exits_quietly(tmp_path):
    """`dump_overviews | head -1`: the reader goes away; no BrokenPipeError traceback, status 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dump.sqlite3'}",
    }

    def manage(*args, **kwargs):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=root, env=env, check=True, timeout=120, **kwargs
        )

    manage("migrate", "-v0")
    # enough rows to overflow the pipe's buffer (64 KB) many times over
    lines = "".join(
        json.dumps({"id": f"course-v1:P+C{i}+R", "display_name": "x" * 200}) + "\n" for i in range(3000)
    )
    manage("import_courses", "-", input=lines, text=True, capture_output=True)
    dump = subprocess.Popen(
        [sys.executable, "manage.py", "dump_overviews"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = dump.stdout.readline()
    dump.stdout.close()  # what `head -1` does after its line
    _, err = dump.communicate(timeout=60)
    assert json.loads(first)["id"].startswith("course-v1:P+C")
    assert dump.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_dump_overviews_prints_the_sync_times_apart():
    from django.utils import timezone

    checked = timezone.now()
    CourseOverviewFactory(catalog_checked_at=checked, catalog_attempted_at=checked)
    record = json.loads(run("dump_overviews")[0].splitlines()[0])
    assert record["catalog_checked_at"] == checked.isoformat()
    assert record["catalog_attempted_at"] == checked.isoformat()
    assert record["catalog_synced_at"] is None and record["catalog_refresh_requested_at"] is None
