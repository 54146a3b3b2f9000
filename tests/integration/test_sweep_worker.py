"""The full sweep on real workers: single flight, resume after SIGKILL, the fleet-wide 429 pause,
and the publish-versus-chunk race. Redis broker and cache, stand-in catalog over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from standin import lms_course_records
from tests.integration.harness import Service, wait_until

pytestmark = pytest.mark.integration


def _runs(service):
    return service.sql(
        "select id, status, chunks_total, chunks_done, courses_seen, resumed "
        "from catalog_sweeprun order by id"
    )


def _import_all(service, standin):
    records = lms_course_records(standin.state.runs(), lms_only=0, ccx_every=0)
    service.import_courses(records)
    return records


def _synced_count(service):
    return service.sql("select count(*) from overviews_courseoverview where catalog_status = 'ok'")[0][0]


def _lease_expired(service, ttl: float) -> bool:
    """The running run's last heartbeat is more than ``ttl`` seconds old (the next trigger takes
    it over). Compared in Python: PostgreSQL returns an aware datetime, SQLite UTC text."""
    rows = service.sql("select heartbeat_at from catalog_sweeprun where status = 'running'")
    if not rows or rows[0][0] is None:
        return False
    beat = rows[0][0]
    if isinstance(beat, str):
        beat = datetime.fromisoformat(beat)
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return (datetime.now(UTC) - beat).total_seconds() > ttl + 0.5


def _finished(service):
    runs = _runs(service)
    return runs and all(r[1] != "running" for r in runs) and runs


def test_two_concurrent_triggers_run_one_sweep(service, standin):
    records = _import_all(service, standin)
    # 10 chunks, two at a time, 1.5 s each: the sweep still runs when the in-process one tries
    standin.set_faults(latency_ms=1500)
    # Both triggers are queued before any worker runs: the two pool processes take one each and
    # race for the lease (a trigger queued behind the chunks would start a second sweep later).
    for _ in range(2):
        service.manage("sync_catalog", "--async", "--page-size", "20", "--strategy", "keys")
    service.start_worker(concurrency=2)
    wait_until(lambda: _runs(service), 30, what="a sweep run")
    # while it runs, an in-process sweep refuses to start too
    inline = service.manage("sync_catalog", "--no-progress", "--strategy", "keys", check=False)
    assert _runs(service)[0][1] == "running", "the sweep ended before the in-process one was tried"
    assert inline.returncode == 1 and "already running" in inline.stderr
    runs = wait_until(lambda: _finished(service), 90, what="the sweep to finish")
    assert len(runs) == 1, runs
    assert runs[0][1] == "complete" and runs[0][4] == len(records)
    assert "already-running" in service.worker_log()


def test_a_sweep_interrupted_by_a_killed_worker_resumes_from_its_checkpoint(tmp_path, standin):
    service = Service(tmp_path, standin, lease_ttl=4)
    try:
        records = _import_all(service, standin)
        standin.set_faults(latency_ms=300)
        worker = service.start_worker(concurrency=1)
        service.manage("sync_catalog", "--strategy", "keys", "--async", "--page-size", "10")
        wait_until(lambda: (r := _runs(service)) and r[0][3] >= 3, 60, what="three chunks done")
        service.kill_worker(worker)  # SIGKILL mid-sweep: its chunk in flight is lost
        done_before = _runs(service)[0][3]
        assert done_before < _runs(service)[0][2]

        standin.set_faults(latency_ms=0)
        standin.reset_stats()
        service.start_worker(concurrency=1, name="w2")
        service.settle("w2")  # the queued chunks ran; the lost one stays pending
        wait_until(lambda: _lease_expired(service, ttl=4), 30, what="the dead run's lease to expire")
        service.manage(
            "sync_catalog", "--strategy", "keys", "--async"
        )  # the next trigger resumes the same run
        runs = wait_until(lambda: _finished(service), 60, what="the resumed sweep to finish")
        assert len(runs) == 1 and runs[0][1] == "complete" and runs[0][5] >= 1, runs
        assert _synced_count(service) == len(records)
        # not started over: the courses of chunks finished before the kill were not fetched again
        refetched = sum(standin.stats()["keys_requested"].values())
        assert refetched <= len(records) - done_before * 10 + 10
    finally:
        service.stop()


def test_a_429_pauses_the_whole_fleet_until_retry_after(service, standin):
    _import_all(service, standin)
    service.start_worker(concurrency=2)
    standin.set_faults(latency_ms=50, force_429_count=1, retry_after_s=3)
    standin.reset_stats()
    service.manage("sync_catalog", "--strategy", "keys", "--async", "--page-size", "10")
    runs = wait_until(lambda: _finished(service), 90, what="the sweep to finish")
    assert runs[0][1] == "complete"
    answers = [(t, status) for t, route, status in standin.stats()["answers"] if route != "token"]
    throttled_at = next(t for t, status in answers if status == 429)
    # the pause starts when the 429 reaches the worker (after the 50 ms latency): a request another
    # worker sent before that instant may still arrive; none may arrive after it until Retry-After
    paused_from = throttled_at + 0.05 + 0.1
    during_pause = [
        round(t - throttled_at, 3) for t, status in answers if paused_from < t < throttled_at + 2.8
    ]
    assert not during_pause, f"request(s) reached the catalog during the pause, at +{during_pause} s"
    throttled = service.sql("select throttled from catalog_sweeprun")[0][0]
    assert throttled == 1


def test_a_chunk_does_not_overwrite_a_fresher_per_course_fetch(service, standin):
    _import_all(service, standin)
    service.manage("sync_catalog", "--strategy", "keys", "--no-progress")  # everything synced once
    key = next(r["key"] for r in standin.state.runs() if r["marketing_url"])
    stale_url = standin.state.get(key)["marketing_url"] + "-stale"
    new_url = standin.state.get(key)["marketing_url"] + "-fresher"
    standin.state.update(key, marketing_url=stale_url)  # what the chunk will read
    # one process per chunk (200 courses plan as 2 one-request chunks) and one for the publish
    service.start_worker(concurrency=3)
    # the chunk's answer is slow (per item); a one-course answer is fast
    # ~10 s for a chunk of ~100 (under the 15 s read timeout), 0.1 s for one course
    standin.set_faults(latency_per_item_ms=100)
    standin.reset_stats()
    service.manage("sync_catalog", "--strategy", "keys", "--async", "--page-size", "200")
    # The stand-in counts a `keys=` filter on arrival, before the slow answer (its `list` count
    # comes only after answering): the chunk holding our course has read the stale value.
    wait_until(
        lambda: key in standin.stats()["keys_requested"], 30, what="the chunk holding the course in flight"
    )
    standin.state.update(key, marketing_url=new_url)  # the catalog changes after the chunk's read;
    # a publish fetches the fresher value and writes it before the chunk's slow answer arrives
    service.manage("simulate_publish", key)
    wait_until(lambda: _finished(service), 60, what="the sweep to finish")
    wait_until(lambda: service.dump()[key]["marketing_url"] == new_url, 20, what="the fresher value")
    service.settle()  # every task the worker received has ended: nothing is left to overwrite it
    assert service.dump()[key]["marketing_url"] == new_url
    assert service.sql("select courses_superseded from catalog_sweeprun order by id desc")[0][0] >= 1
