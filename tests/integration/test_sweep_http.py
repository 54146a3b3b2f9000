"""A synchronous sweep of 3,200 courses against the stand-in catalog over real HTTP."""

from __future__ import annotations

import io
import json
import math

import pytest
from django.core.management import call_command

from catalog.mapping import map_course_run
from overviews.models import CatalogStatus, CourseOverview
from standin import StandinServer, generate_runs, lms_course_records

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

COURSES = 3200


@pytest.fixture
def standin_settings(settings):
    runs = generate_runs(COURSES, seed=7)
    with StandinServer(runs) as server:
        settings.CATALOG_API_URL = server.api_url
        settings.CATALOG_OAUTH_URL = server.oauth_url
        settings.CATALOG_CLIENT_ID = server.client_id
        settings.CATALOG_CLIENT_SECRET = server.client_secret
        yield server, runs


def _import(records):
    lines = "\n".join(json.dumps(r) for r in records) + "\n"
    call_command("import_courses", "-", stdin=io.StringIO(lines), stdout=io.StringIO())


def _sweep(*args):
    out = io.StringIO()
    call_command(
        "sync_catalog", "--no-progress", "--strategy", "keys", *args, stdout=out, stderr=io.StringIO()
    )
    return out.getvalue()


def test_sweep_of_3200_courses_matches_the_catalog_with_minimal_requests(standin_settings):
    server, runs = standin_settings
    records = lms_course_records(runs)
    _import(records)
    # the catalog changes between page requests: early-sorting runs appear before every list request
    server.set_faults(insert_between_pages=5)
    server.reset_stats()

    page_size = 100
    out = _sweep("--page-size", str(page_size))
    overviews = CourseOverview.objects.count()
    assert overviews == len(records)
    stats = server.stats()
    api_requests = stats["requests"]
    assert api_requests <= math.ceil(overviews / page_size) + 3, (api_requests, out)

    by_key = {r["key"]: r for r in runs}
    mismatched = []
    for ov in CourseOverview.objects.all():
        key = str(ov.id)
        master = key.replace("ccx-v1:", "course-v1:").split("+ccx@")[0] if key.startswith("ccx-v1:") else key
        run = by_key.get(master)
        if run is None:
            if ov.catalog_status != CatalogStatus.MISSING:
                mismatched.append((key, "should be missing"))
            continue
        expected = map_course_run(run)
        actual = {name: getattr(ov, name) for name in expected}
        if actual != expected or ov.catalog_status != CatalogStatus.OK:
            mismatched.append((key, expected, actual, ov.catalog_status))
    assert not mismatched, mismatched[:5]
    assert "updated=0" not in out

    second = _sweep("--page-size", str(page_size))
    assert "updated=0" in second and "refused=0" in second
