"""Overviews in every state the status page draws, and sweep records around them: a running run
with chunks (some done, one failed), an earlier complete run, the beat schedule. Bulk inserts,
so a thousand rows cost a few queries. Returns what the page should show."""

from __future__ import annotations

import json
from datetime import timedelta

from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from opaque_keys.edx.keys import CourseKey

from catalog.models import ChunkStatus, SweepChunk, SweepRun, SweepStatus
from ops.status import SWEEP_SCHEDULE_NAME
from overviews.models import CatalogStatus, CourseOverview

# Age of "last checked" per bucket (a time well inside it), and None for "never".
BUCKET_AGES = {
    "<1h": timedelta(minutes=20),
    "<6h": timedelta(hours=3),
    "<24h": timedelta(hours=12),
    "<48h": timedelta(hours=30),
    "<7d": timedelta(days=3),
    "older": timedelta(days=20),
    "never": None,
}
# Share of the overviews in each bucket (sums to 1).
BUCKET_SHARE = {
    "<1h": 0.30,
    "<6h": 0.20,
    "<24h": 0.15,
    "<48h": 0.10,
    "<7d": 0.10,
    "older": 0.05,
    "never": 0.10,
}


def seed_overviews(total: int) -> dict[str, dict[str, int]]:
    """``total`` overviews spread over the age buckets; checked ones are ok, missing or error
    (one in ten missing, one in twenty error), never-checked ones ``never``."""
    now = timezone.now()
    labels = list(BUCKET_AGES)
    counts = {label: int(total * BUCKET_SHARE[label]) for label in labels}
    counts["<1h"] += total - sum(counts.values())
    rows, statuses = [], dict.fromkeys([s.value for s in CatalogStatus], 0)
    n = 0
    for label in labels:
        age = BUCKET_AGES[label]
        for _ in range(counts[label]):
            n += 1
            if age is None:
                status = CatalogStatus.NEVER
            elif n % 20 == 0:
                status = CatalogStatus.ERROR
            elif n % 10 == 0:
                status = CatalogStatus.MISSING
            else:
                status = CatalogStatus.OK
            statuses[status.value] += 1
            rows.append(
                CourseOverview(
                    id=CourseKey.from_string(f"course-v1:SeedX+S{n:05d}+2025"),
                    display_name=f"Seeded course {n}",
                    org="SeedX",
                    number=f"S{n:05d}",
                    run="2025",
                    catalog_status=status,
                    catalog_checked_at=now - age if age is not None else None,
                    catalog_attempted_at=now - (age or timedelta(minutes=5)),
                    catalog_error="catalog answered 503 three times" if status == CatalogStatus.ERROR else "",
                )
            )
    CourseOverview.objects.bulk_create(rows, batch_size=500)
    return {"buckets": counts, "statuses": statuses}


def seed_schedule(hours: int = 24) -> PeriodicTask:
    every, _ = IntervalSchedule.objects.get_or_create(every=hours, period=IntervalSchedule.HOURS)
    task, _ = PeriodicTask.objects.update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"task": "catalog_sync.sweep", "interval": every, "kwargs": json.dumps({"trigger": "beat"})},
    )
    return task


def seed_sweeps(*, chunks_total: int = 12, chunks_done: int = 5, courses_seen: int = 400) -> SweepRun:
    """An earlier complete run (finished 2 h ago) and a running one, alive, with its chunks: the
    first ``chunks_done`` finished (one of them failed), the rest pending."""
    now = timezone.now()
    done = SweepRun.objects.create(status=SweepStatus.COMPLETE, trigger="beat", planning_done=True)
    SweepRun.objects.filter(pk=done.pk).update(
        started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=2), courses_seen=900
    )
    run = SweepRun.objects.create(
        trigger="beat",
        planning_done=True,
        chunks_total=chunks_total,
        chunks_done=chunks_done,
        chunks_failed=1,
        courses_seen=courses_seen,
        heartbeat_at=now - timedelta(seconds=3),
    )
    SweepRun.objects.filter(pk=run.pk).update(started_at=now - timedelta(seconds=200))
    SweepChunk.objects.bulk_create(
        SweepChunk(
            run=run,
            seq=seq,
            first_key=f"course-v1:SeedX+S{seq * 100 + 1:05d}+2025",
            last_key=f"course-v1:SeedX+S{seq * 100 + 100:05d}+2025",
            size=100,
            status=(
                ChunkStatus.FAILED
                if seq == 2
                else ChunkStatus.DONE
                if seq < chunks_done
                else ChunkStatus.PENDING
            ),
            finished_at=now - timedelta(seconds=30) if seq < chunks_done else None,
            catalog_requests=4 if seq < chunks_done else 0,
            error="CatalogServerError: 503 after 12 attempts" if seq == 2 else "",
        )
        for seq in range(chunks_total)
    )
    run.refresh_from_db()
    return run
