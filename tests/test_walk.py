"""Walk + repair, the strategy choice and the adaptive page size (``catalog.walk``), at the wire."""

from __future__ import annotations

import io

import pytest
import responses
from django.core.management import call_command

from catalog import sweep as sweeps
from catalog.models import SweepRun, SweepStatus
from catalog.retry import in_process_policy
from catalog.walk import PageSizer, aligned_size, walk_pages_needed
from overviews.models import CourseOverview
from tests.factories import CourseOverviewFactory, catalog_run
from tests.wire import WireCatalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def wire(catalog_settings):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        catalog = WireCatalog(rsps)
        catalog.calls = rsps.calls
        yield catalog


def _right(wire) -> list[str]:
    """The overviews whose catalog fields differ from the catalog's run now (or that the catalog
    lacks but that are not marked missing)."""
    wrong = []
    for ov in CourseOverview.objects.all():
        run = wire.runs.get(str(ov.id))
        if run is None:
            if ov.catalog_status != "missing":
                wrong.append(str(ov.id))
        elif (ov.marketing_url, ov.eligible_for_financial_aid, ov.language) != (
            run["marketing_url"],
            run["eligible_for_financial_aid"],
            run["content_language"],
        ):
            wrong.append(str(ov.id))
    return wrong


def test_aligned_sizes_divide_the_position_they_start_at():
    assert aligned_size(0, 400) == 400
    assert aligned_size(100, 200) == 100
    assert aligned_size(3100, 1600) == 1550
    for offset in (1, 7, 99, 3100, 4650, 12345):
        for want in (1, 3, 100, 1600):
            size = aligned_size(offset, want)
            assert 1 <= size <= want and offset % size == 0


def test_the_sizer_grows_within_budget_shrinks_on_slow_or_failed_pages_and_keeps_the_ceiling():
    sizer = PageSizer(100, 800, budget=2.0)
    offset, sizes = 0, []
    for seconds in (0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 3.0, 0.1):
        _, size = sizer.plan(offset)
        sizes.append(size)
        offset += size
        sizer.answered(seconds, full=True)
    assert sizes == [100, 100, 200, 400, 800, 800, 800, 400]
    _, size = sizer.plan(offset)
    sizer.failed()
    assert sizer.plan(offset)[1] == size // 2
    assert sizer.sizes == [[100, 2], [200, 1], [400, 1], [800, 3], [400, 1]]


def test_the_walk_of_a_catalog_the_size_of_the_lms_costs_a_few_pages():
    assert walk_pages_needed(3200, 100, 1600) == 6  # 100, 100, 200, 400, 800, 1600
    assert walk_pages_needed(100_000, 100, 1600) == 6 + (100_000 - 3200 + 1599) // 1600


def test_walk_and_repair_are_right_under_drift_and_cheap(wire):
    """Runs deleted before the walk's position between pages make it skip runs; runs inserted
    there make it repeat some. Every overview ends right; the skipped ones are fetched by key."""
    rows = CourseOverviewFactory.create_batch(300)
    for ov in rows:
        wire.add(catalog_run(str(ov.id)))
    lms_only = CourseOverviewFactory.create()  # the catalog does not have it
    early = [f"course-v1:AAA+Old{i:02d}+R" for i in range(30)]  # not in the LMS, listed first
    wire.add(*(catalog_run(key) for key in early))
    doomed = iter(early)
    walked = []

    def drift(w):
        if w.calls and "keys=" not in w.calls[-1].request.url:
            walked.append(1)
            if len(walked) > 2:  # after the probe and the first page, the list shifts each time
                for _ in range(3):
                    w.runs.pop(next(doomed), None)
                w.add(catalog_run(f"course-v1:AAA+New{len(walked):02d}+R"))
        return None

    wire.before_list = drift
    out = io.StringIO()
    call_command("sync_catalog", "--no-progress", "--page-size", "20", stdout=out)
    run = SweepRun.objects.get()
    assert run.status == SweepStatus.COMPLETE, run.error
    assert run.strategy == "walk" and run.catalog_count == 330
    assert _right(wire) == []
    assert run.courses_seen == 301 and CourseOverview.objects.get(pk=lms_only.pk).catalog_status == "missing"
    assert run.walk_pages >= 3 and run.chunks_total >= 1  # the repair ran
    assert run.catalog_requests == len(wire.calls)
    assert "strategy=walk" in out.getvalue()
    # the walk skipped some courses (runs deleted before its position): the repair fetched them
    repaired = sum(chunk.seen for chunk in run.chunks.all())
    assert repaired > 1 and run.courses_seen == 301
    assert run.walk_sizes[0] == [20, 2] and max(size for size, _ in run.walk_sizes) > 20


def test_auto_chooses_keys_when_the_catalog_is_much_larger_than_the_lms(wire):
    rows = CourseOverviewFactory.create_batch(30)
    for ov in rows:
        wire.add(catalog_run(str(ov.id)))
    wire.add(*(catalog_run(f"course-v1:Other+C{i}+R") for i in range(900)))
    call_command("sync_catalog", "--no-progress", "--page-size", "10", stdout=io.StringIO())
    run = SweepRun.objects.get()
    assert run.strategy == "keys" and run.catalog_count == 930
    assert run.estimate_keys < run.estimate_walk
    assert _right(wire) == [] and run.status == SweepStatus.COMPLETE


def test_a_walk_interrupted_mid_way_resumes_from_its_checkpoint(wire, catalog_client):
    rows = CourseOverviewFactory.create_batch(200)
    for ov in rows:
        wire.add(catalog_run(str(ov.id)))
    run = sweeps.start_sweep("command", page_size=10, in_process=True)
    run = sweeps.decide_strategy(run, catalog_client, forced="walk")

    def stop_after_third_page(w):
        if w.list_requests == 5:  # probe, pages 1-3, then this one
            raise KeyboardInterrupt
        return None

    wire.before_list = stop_after_third_page
    with pytest.raises(KeyboardInterrupt):
        sweeps.run_in_process(run, catalog_client, policy=in_process_policy(3))
    run.refresh_from_db()
    assert run.walk_pages == 3 and run.walk_offset == 10 + 10 + 20
    # the interrupted run was stopped; a new sweep starts over (the stamps keep what was checked)
    wire.before_list = None
    call_command(
        "sync_catalog", "--no-progress", "--page-size", "10", "--strategy", "walk", stdout=io.StringIO()
    )
    assert _right(wire) == []


def test_a_catalog_that_caps_its_pages_is_walked_at_its_cap(wire):
    """A deployment with a maximum page size serves fewer runs than asked, with a next page: the
    walk takes that as the ceiling from then on and still checks every course."""
    rows = CourseOverviewFactory.create_batch(120)
    for ov in rows:
        wire.add(catalog_run(str(ov.id)))
    wire.max_page_size = 15
    call_command(
        "sync_catalog", "--no-progress", "--page-size", "10", "--strategy", "walk", stdout=io.StringIO()
    )
    run = SweepRun.objects.get()
    assert run.status == SweepStatus.COMPLETE and _right(wire) == []
    assert max(size for size, _ in run.walk_sizes) <= 20 and run.courses_seen == 120
