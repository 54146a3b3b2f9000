"""import_courses on bad and large input: exit 2 naming the line, nothing half-written, and a
re-import writes only what changed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from opaque_keys.edx.keys import CourseKey

from overviews.management.commands import import_courses
from overviews.models import CatalogStatus, CourseOverview
from tests.factories import CourseOverviewFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
GOOD = json.dumps({"id": "course-v1:A+B+C", "display_name": "good"})


def run(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_courses", *args, stdout=out, stderr=err, **options)
    return out.getvalue()


def _write(tmp_path, lines: list[str | bytes]) -> str:
    path = tmp_path / "courses.jsonl"
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return str(path)


def _refused(path, match, **options) -> CommandError:
    with pytest.raises(CommandError, match=match) as info:
        run(path, **options)
    assert info.value.returncode == 2
    assert "nothing was written" in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"id": "course-v1:A+B+D", "start": "2024-02-30T00:00:00Z"}',
            r"line 2: start is not a valid date-time",
        ),
        ('{"id": "course-v1:A+B+D", "end": "2024-13-01T00:00:00"}', r"line 2: end is not a valid date-time"),
        ('{"id": "course-v1:A+B+D", "end": "9999-12-31T23:30:00-05:00"}', r"line 2: end is not a valid"),
        ('{"id": "course-v1:A+B+D", "start": 20240101}', r"line 2: start is not an ISO 8601"),
        ("[" * 20000 + "]" * 20000, r"line 2: nested too deeply"),
        ('{"id": "course-v1:A+B+D", "display_name": ' + "[" * 5000 + "]" * 5000 + "}", r"line 2: nested too"),
        (
            '{"id": "course-v1:A+B+D", "org": "' + "o" * 300 + '"}',
            r"line 2: org is 300 characters \(its column holds 255\)",
        ),
        ('{"id": "course-v1:A+B+D", "run": "' + "r" * 256 + '"}', r"line 2: run is 256 characters"),
        (
            '{"id": "course-v1:A+B+D", "display_name": "' + "d" * 10_001 + '"}',
            r"line 2: display_name is 10001",
        ),
        ('{"id": "course-v1:A+B+D", "display_name": "a\\u0000b"}', r"line 2: display_name contains a NUL"),
        ('{"id": "course-v1:A+B+D", "display_name": 7}', r"line 2: display_name must be a string"),
        ('{"id": "course-v1:A+B+D", "self_paced": "yes"}', r"line 2: self_paced must be true or false"),
        ('"just a string"', r"line 2: a record must be a JSON object"),
        ("42", r"line 2: a record must be a JSON object"),
        ("null", r"line 2: a record must be a JSON object"),
        ('[{"id": "course-v1:A+B+D"}]', r"line 2: a record must be a JSON object"),
        ('{"display_name": "no id"}', r"line 2: invalid course key None"),
        ('{"id": "course-v1:A+B+' + "x" * 300 + '"}', r"line 2: invalid course key"),
        ('{"id": 12}', r"line 2: invalid course key 12"),
        ('{"id": "course-v1:A+B+D", "x": ' + "9" * 5000 + "}", r"line 2: not valid JSON"),
        ("{not json", r"line 2: not valid JSON"),
    ],
)
def test_a_bad_line_is_refused_with_exit_2_naming_it_and_nothing_is_written(tmp_path, line, message):
    kept = CourseOverviewFactory(id=CourseKey.from_string("course-v1:Keep+K+1"), display_name="kept")
    path = _write(tmp_path, [GOOD, line, json.dumps({"id": "course-v1:Keep+K+1", "display_name": "new"})])
    _refused(path, message)
    assert list(CourseOverview.objects.values_list("id", "display_name")) == [(kept.id, "kept")]


def test_undecodable_bytes_are_refused_naming_the_line_and_column(tmp_path):
    path = _write(tmp_path, [GOOD, b'{"id": "course-v1:A+B+D", "display_name": "caf\xe9"}'])
    _refused(path, r"line 2: not UTF-8 \(byte 0xe9 at column 47\)")
    assert not CourseOverview.objects.exists()


def test_two_ids_differing_only_in_case_in_the_file_are_refused(tmp_path):
    path = _write(
        tmp_path, [GOOD, json.dumps({"id": "course-v1:X+Y+Z"}), json.dumps({"id": "course-v1:a+b+c"})]
    )
    error = _refused(path, r"line 3: course key 'course-v1:a\+b\+c' differs only in case")
    assert "on line 1" in str(error)
    assert not CourseOverview.objects.exists()


def test_an_id_differing_only_in_case_from_a_stored_course_is_refused(tmp_path):
    CourseOverviewFactory(id=CourseKey.from_string("course-v1:MITx+6.00x+2024"), display_name="stored")
    path = _write(tmp_path, [GOOD, json.dumps({"id": "course-v1:mitx+6.00x+2024", "display_name": "typo"})])
    _refused(path, r"line 2: .* differs only in case from the stored course 'course-v1:MITx\+6.00x\+2024'")
    assert list(CourseOverview.objects.values_list("display_name", flat=True)) == ["stored"]


def test_the_same_id_twice_is_one_course_with_the_later_fields(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"id": "course-v1:A+B+C", "display_name": "one", "org": "A"}),
            '{"id": "course-v1:A+B+C", "display_name": "two"}',
        ],
    )
    assert "created=1 updated=0" in run(path)
    row = CourseOverview.objects.get()
    assert (row.display_name, row.org) == ("two", "A")


def test_dev_zero_is_refused_after_one_line_cap_not_read_to_exhaustion():
    error = _refused("/dev/zero", r"line 1: longer than 65,536 bytes")
    assert len(str(error)) < 200


def test_a_line_over_64_kb_is_refused(tmp_path):
    long_line = json.dumps({"id": "course-v1:A+B+D", "display_name": "x" * 70_000})
    _refused(_write(tmp_path, [GOOD, long_line]), r"line 2: longer than 65,536 bytes")


def test_total_lines_and_bytes_are_capped(tmp_path):
    lines = [json.dumps({"id": f"course-v1:A+B+R{i}"}) for i in range(5)]
    path = _write(tmp_path, lines)
    _refused(path, r"line 4: more than --max-lines=3 lines", max_lines=3)
    _refused(path, r"line 3: input is larger than --max-bytes=80", max_bytes=80)
    assert "created=5" in run(path, max_lines=5)


def test_unknown_fields_are_ignored_and_named_catalog_and_sync_fields_ignored_silently(tmp_path):
    CourseOverviewFactory(
        id=CourseKey.from_string("course-v1:A+B+C"),
        marketing_url="https://keep.example/",
        catalog_status="ok",
    )
    record = {
        "id": "course-v1:A+B+C",
        "display_name": "new",
        "colour": "blue",
        "marketing_url": "https://evil.example/",
        "catalog_status": "error",
        "catalog_checked_at": None,
    }
    out = run(_write(tmp_path, [json.dumps(record)]))
    assert "updated=1" in out and "unknown fields ignored: 'colour'" in out
    assert "marketing_url" not in out.split("ignored:")[1]
    row = CourseOverview.objects.get()
    assert (row.display_name, row.marketing_url, row.catalog_status) == ("new", "https://keep.example/", "ok")


def test_reimporting_an_unchanged_file_writes_nothing_and_says_so(tmp_path):
    lines = [
        json.dumps(
            {
                "id": f"course-v1:A+B+R{i}",
                "display_name": f"Course {i}",
                "start": "2025-01-01T10:00:00.123456+02:00",
                "end": None,
                "self_paced": bool(i % 2),
                "short_description": None,
            }
        )
        for i in range(25)
    ]
    path = _write(tmp_path, lines)
    assert "created=25 updated=0 unchanged=0" in run(path)
    modified = dict(CourseOverview.objects.values_list("id", "modified"))
    with CaptureQueriesContext(connection) as queries:
        out = run(path)
    assert "created=0 updated=0 unchanged=25" in out
    assert not [q for q in queries.captured_queries if "UPDATE" in q["sql"] or "INSERT" in q["sql"]]
    assert dict(CourseOverview.objects.values_list("id", "modified")) == modified


def test_only_changed_rows_and_fields_are_written(tmp_path):
    for i in range(3):
        CourseOverviewFactory(id=CourseKey.from_string(f"course-v1:A+B+R{i}"), display_name=f"d{i}", org="A")
    CourseOverview.objects.filter(id="course-v1:A+B+R1").update(
        language="fr", catalog_status=CatalogStatus.OK
    )
    path = _write(
        tmp_path,
        [
            json.dumps({"id": "course-v1:A+B+R0", "display_name": "d0"}),
            json.dumps({"id": "course-v1:A+B+R1", "display_name": "changed"}),
            json.dumps({"id": "course-v1:A+B+R2", "org": "A"}),
            json.dumps({"id": "course-v1:A+B+R3", "display_name": "new"}),
        ],
    )
    assert "created=1 updated=1 unchanged=2" in run(path)
    row = CourseOverview.objects.get(id="course-v1:A+B+R1")
    assert (row.display_name, row.org, row.language, row.catalog_status) == ("changed", "A", "fr", "ok")


def test_large_imports_are_written_in_batches(tmp_path):
    path = _write(
        tmp_path, [json.dumps({"id": f"course-v1:A+B+R{i:03d}", "display_name": "x"}) for i in range(25)]
    )
    with mock.patch.object(import_courses, "BATCH", 10):
        with CaptureQueriesContext(connection) as queries:
            run(path)
        inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
        assert len(inserts) == 3 and CourseOverview.objects.count() == 25
        path = _write(
            tmp_path, [json.dumps({"id": f"course-v1:A+B+R{i:03d}", "display_name": "y"}) for i in range(25)]
        )
        with CaptureQueriesContext(connection) as queries:
            assert "updated=25" in run(path)
        # one executemany a batch (Django logs it as "10 times: UPDATE ...")
        updates = [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"]]
        assert [sql.split(" times:")[0] for sql in updates] == ["10", "10", "5"]
    assert set(CourseOverview.objects.values_list("display_name", flat=True)) == {"y"}


def test_a_dump_imports_back_unchanged():
    CourseOverviewFactory.create_batch(3, marketing_url="https://d.example/x", start="2025-02-03T04:05:06Z")
    out = io.StringIO()
    call_command("dump_overviews", stdout=out)
    assert "created=0 updated=0 unchanged=3" in run("-", stdin=io.StringIO(out.getvalue()))


def test_bad_input_exits_2_without_a_traceback_in_a_real_process(tmp_path):
    path = _write(tmp_path, [GOOD, b'{"id": "course-v1:A+B+D", "display_name": "\xff"}'])
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test"}
    for target in (path, "/dev/zero"):
        done = subprocess.run(
            [sys.executable, "manage.py", "import_courses", target],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "line " in done.stderr
