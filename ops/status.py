"""What the status page shows, read in a fixed number of aggregate queries (no per-row work):
however many overviews there are, the page costs the same handful of queries.

``snapshot()`` returns plain data (numbers, strings, ISO times) that both the HTML page and its
JSON endpoint serve; ``problems()`` turns it into the admin index's banner lines.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from catalog.connection import why_calls_are_off
from catalog.models import ChunkStatus, SweepChunk, SweepRun, SweepStatus, current_config
from catalog.sweep import lease_ttl
from catalog.throttle import FleetThrottle
from catalog.walk import KEYS, WALK
from ops.admin import walk_position, walk_sizes_text, workers_answering
from overviews.models import CatalogStatus, CourseOverview

log = logging.getLogger("ops.status")

# The beat entry of the full sweep (created by catalog's data migration; editable in the admin).
SWEEP_SCHEDULE_NAME = "catalog full sweep"
# "Last checked" buckets, newest first: (label, upper bound of the age). ``never``: never checked.
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("<1h", timedelta(hours=1)),
    ("<6h", timedelta(hours=6)),
    ("<24h", timedelta(hours=24)),
    ("<48h", timedelta(hours=48)),
    ("<7d", timedelta(days=7)),
    ("older", None),
)
NEVER_BUCKET = "never"
# Requests per minute are averaged over this many minutes of finished chunks (a chunk's cost is
# dated by its finish; a shorter window would jump with every chunk).
RATE_MINUTES = 5
RECENT_FAILURES = 15
# A finished sweep is "too old" when older than its interval plus this slack, or plus the last
# sweep's own duration when that was longer (a sweep that takes 3 h cannot finish every 24 h sharp).
SCHEDULE_SLACK = timedelta(hours=1)
# The worker ping waits up to a second; the page polls every few seconds and the admin index
# asks too, so one answer is reused for this long (a hint, not a record: it only colours a badge).
WORKER_CACHE_KEY = "ops:status:worker-alive"
WORKER_CACHE_SECONDS = 15
_PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 1e-6}


@dataclass
class Progress:
    """The running sweep, or None on the page when none runs."""

    id: int
    trigger: str
    started_at: str
    chunks_done: int
    chunks_total: int
    chunks_failed: int
    planning_done: bool
    percent: float  # chunks_done / chunks_total, 0..100
    courses_seen: int
    courses_total: int  # overviews today: what a sweep goes through
    rate: float | None  # courses per second since it started
    heartbeat_age: float | None  # seconds
    stalled: bool  # heartbeat older than the lease TTL: dead, the next trigger resumes it
    expected_end: str | None  # ISO time, from the rate so far
    strategy: str = ""  # keys or walk; "" until the coordinator has chosen
    walk: str | None = None  # a walk's position: "1,600 of 3,200" (None: not walking)


@dataclass
class Status:
    now: str
    calls_off: str | None  # why catalog calls are off (kill switch, integration disabled), or None
    worker_alive: bool | None  # None: cannot be told (embedded broker, ping failed)
    fleet_paused_for: float  # seconds left of a 429 pause shared by every worker
    progress: Progress | None
    last_sweep: dict | None  # the last finished complete/partial run
    last_sweep_age: float | None
    schedule_seconds: float | None  # the beat entry's interval (None: crontab or missing)
    schedule_enabled: bool
    sweep_overdue: bool
    overviews: int
    age_buckets: list[dict]  # [{"label", "count"}] newest first, "never" last
    oldest_checked: str | None
    by_status: list[dict]  # [{"status", "label", "count"}]
    requests_per_minute: float
    rate_limit_per_minute: float  # 0: no cap
    sweep_strategy: str = "auto"  # the configured strategy (CatalogIntegration.sweep_strategy)
    failed_courses: list[dict] = field(default_factory=list)
    failed_chunks: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def schedule_seconds(task: PeriodicTask | None) -> float | None:
    if task is None or task.interval is None:
        return None
    return task.interval.every * _PERIOD_SECONDS.get(task.interval.period, 0) or None


def worker_alive() -> bool | None:
    """A worker answered a ping (cached a few seconds: see WORKER_CACHE_SECONDS)."""
    cached = cache.get(WORKER_CACHE_KEY, "miss")
    if cached != "miss":
        return cached
    alive = workers_answering()
    cache.set(WORKER_CACHE_KEY, alive, WORKER_CACHE_SECONDS)
    return alive


def _overview_aggregate(now: datetime) -> dict:
    """One query: the age histogram, the counts by status, the total and the oldest check."""
    checked = "catalog_checked_at"
    filters: dict[str, Q] = {}
    newer_than: datetime | None = None
    for label, bound in AGE_BUCKETS:
        q = Q(**{f"{checked}__isnull": False})
        if bound is not None:
            q &= Q(**{f"{checked}__gt": now - bound})
        if newer_than is not None:
            q &= Q(**{f"{checked}__lte": newer_than})
        filters[f"age_{label}"] = q
        newer_than = now - bound if bound is not None else None
    filters[f"age_{NEVER_BUCKET}"] = Q(**{f"{checked}__isnull": True})
    for status in CatalogStatus:
        filters[f"status_{status.value}"] = Q(catalog_status=status.value)
    return CourseOverview.objects.aggregate(
        total=Count("pk"),
        oldest=Min(checked),
        **{name: Count("pk", filter=q) for name, q in filters.items()},
    )


def _progress(run: SweepRun, now: datetime, courses_total: int) -> Progress:
    elapsed = (now - run.started_at).total_seconds()
    rate = run.courses_seen / elapsed if elapsed > 0 and run.courses_seen else None
    remaining = max(0, courses_total - run.courses_seen)
    heartbeat_age = (now - run.heartbeat_at).total_seconds() if run.heartbeat_at else None
    stalled = heartbeat_age is None or heartbeat_age > lease_ttl().total_seconds()
    return Progress(
        id=run.pk,
        trigger=run.trigger,
        started_at=run.started_at.isoformat(),
        chunks_done=run.chunks_done,
        chunks_total=run.chunks_total,
        chunks_failed=run.chunks_failed,
        planning_done=run.planning_done,
        percent=round(100.0 * run.chunks_done / run.chunks_total, 1) if run.chunks_total else 0.0,
        courses_seen=run.courses_seen,
        courses_total=courses_total,
        rate=round(rate, 2) if rate else None,
        heartbeat_age=round(heartbeat_age, 1) if heartbeat_age is not None else None,
        stalled=stalled,
        expected_end=_iso(now + timedelta(seconds=remaining / rate)) if rate and not stalled else None,
        strategy=run.strategy,
        walk=walk_position(run) if run.strategy == WALK and not run.walk_done else None,
    )


def _last_sweep(run: SweepRun) -> dict:
    """The last finished run, with its strategy and its requests against the estimates (the
    requests include the count probe, retries and 429 answers; the estimates do not)."""
    chosen = {KEYS: run.estimate_keys, WALK: run.estimate_walk}.get(run.strategy)
    return {
        "id": run.pk,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "courses_seen": run.courses_seen,
        "chunks_failed": run.chunks_failed,
        "strategy": run.strategy,
        "strategy_reason": run.strategy_reason,
        "catalog_count": run.catalog_count,
        "catalog_requests": run.catalog_requests,
        "estimate": chosen,
        "estimate_keys": run.estimate_keys,
        "estimate_walk": run.estimate_walk,
        "walk_pages": run.walk_pages,
        "walk_sizes": walk_sizes_text(run.walk_sizes),
        "walk_error": run.walk_error,
    }


def snapshot(*, ping: bool = True) -> Status:
    """Everything on the page. Queries: the running run, the last finished run, the schedule, the
    overview aggregate, recent failed courses, recent failed chunks, the request rate (plus the
    switch and configuration reads, cached by waffle and config_models)."""
    now = timezone.now()
    config = current_config()
    running = SweepRun.objects.filter(status=SweepStatus.RUNNING).first()
    last = (
        SweepRun.objects.filter(status__in=(SweepStatus.COMPLETE, SweepStatus.PARTIAL))
        .exclude(finished_at=None)
        .order_by("-finished_at")
        .first()
    )
    task = PeriodicTask.objects.select_related("interval").filter(name=SWEEP_SCHEDULE_NAME).first()
    agg = _overview_aggregate(now)
    failed_courses = list(
        CourseOverview.objects.filter(catalog_status=CatalogStatus.ERROR)
        .order_by("-catalog_attempted_at")
        .values("id", "display_name", "catalog_error", "catalog_attempted_at")[:RECENT_FAILURES]
    )
    failed_chunks = list(
        SweepChunk.objects.filter(status=ChunkStatus.FAILED)
        .order_by("-finished_at")
        .values("id", "run_id", "seq", "first_key", "last_key", "size", "error", "finished_at")[
            :RECENT_FAILURES
        ]
    )
    recent = SweepChunk.objects.filter(finished_at__gte=now - timedelta(minutes=RATE_MINUTES)).aggregate(
        requests=Sum("catalog_requests")
    )

    interval = schedule_seconds(task)
    last_age = (now - last.finished_at).total_seconds() if last else None
    overdue = False
    if interval is not None and task is not None and task.enabled:
        duration = (last.finished_at - last.started_at) if last else timedelta(0)
        allowed = timedelta(seconds=interval) + max(SCHEDULE_SLACK, duration)
        overdue = agg["total"] > 0 and (last is None or now - last.finished_at > allowed)
    return Status(
        now=now.isoformat(),
        calls_off=why_calls_are_off(config),
        worker_alive=worker_alive() if ping else None,
        fleet_paused_for=round(FleetThrottle().paused_for(), 1),
        progress=_progress(running, now, agg["total"]) if running else None,
        last_sweep=_last_sweep(last) if last else None,
        last_sweep_age=round(last_age, 1) if last_age is not None else None,
        schedule_seconds=interval,
        schedule_enabled=bool(task and task.enabled),
        sweep_overdue=overdue,
        overviews=agg["total"],
        age_buckets=[
            {"label": label, "count": agg[f"age_{label}"]}
            for label in [b[0] for b in AGE_BUCKETS] + [NEVER_BUCKET]
        ],
        oldest_checked=_iso(agg["oldest"]),
        by_status=[
            {"status": s.value, "label": s.label, "count": agg[f"status_{s.value}"]} for s in CatalogStatus
        ],
        requests_per_minute=round((recent["requests"] or 0) / RATE_MINUTES, 1),
        rate_limit_per_minute=round(config.rate_limit_per_second * 60, 1),
        sweep_strategy=config.sweep_strategy,
        failed_courses=[
            {
                "key": str(row["id"]),
                "name": row["display_name"],
                "error": row["catalog_error"][:300],
                "attempted_at": _iso(row["catalog_attempted_at"]),
            }
            for row in failed_courses
        ],
        failed_chunks=[
            {**row, "error": row["error"][:300], "finished_at": _iso(row["finished_at"])}
            for row in failed_chunks
        ],
    )


def problems(status: Status) -> list[str]:
    """One line per thing an operator should act on (the admin index's banner); empty: all well."""
    lines = []
    if status.calls_off:
        lines.append(f"Catalog calls are off: {status.calls_off}.")
    if status.worker_alive is False:
        lines.append("No Celery worker answered a ping: refreshes and sweeps wait in the queue.")
    if status.progress is not None and status.progress.stalled:
        lines.append(
            f"Sweep #{status.progress.id} has no heartbeat for longer than the lease: it is dead until "
            "the next trigger resumes it."
        )
    if status.sweep_overdue:
        lines.append(
            "No complete sweep within its schedule"
            + (
                f": the last finished {human_duration(status.last_sweep_age)} ago."
                if status.last_sweep
                else "."
            )
        )
    return lines


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
