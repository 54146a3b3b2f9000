"""``GET /metrics``: the Prometheus exposition for scrapers.

Counters and histograms come from every process that writes to ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn workers, Celery pool processes: ``observability.metrics``), summed by prometheus_client's
``MultiProcessCollector``; the gauges below are read from the database at scrape time
(``DatabaseCollector``: a handful of cheap, indexed queries), so they are right whichever process
changed the rows.

Not open to the world: the scraper sends ``Authorization: Bearer <METRICS_TOKEN>``; a wrong or
missing token gets 401. Without ``METRICS_TOKEN`` the route answers 404 to everyone.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from api.health import expected_sweep_duration, sweep_interval
from catalog.models import COURSE_COUNTERS, RUN_COUNTER_FIELDS, SweepRun, SweepStatus
from observability.metrics import MULTIPROC_DIR, PREFIX
from overviews.models import CatalogStatus, CourseOverview

log = logging.getLogger("api.metrics")


def _ts(value) -> float:
    return value.timestamp() if value is not None else 0.0


class DatabaseCollector(Collector):
    """Gauges computed from the database at scrape time. If the database does not answer, only
    ``catalog_sync_metrics_database_up 0`` is reported (the process counters still are)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        try:
            families = list(self._families())
        except Exception as exc:  # a scrape must still answer: the counters are worth having
            log.warning("metrics: database gauges unavailable: %s: %s", type(exc).__name__, exc)
            families = []
        up = GaugeMetricFamily(
            f"{PREFIX}_metrics_database_up", "1 when the database gauges of this scrape were read."
        )
        up.add_metric([], 1.0 if families else 0.0)
        took = GaugeMetricFamily(
            f"{PREFIX}_metrics_database_seconds", "Time this scrape spent reading the database gauges."
        )
        took.add_metric([], time.monotonic() - started)
        yield from families
        yield up
        yield took

    def _families(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        yield from self._sweep(now)
        yield from self._overviews(now)

    def _sweep(self, now) -> Iterator[GaugeMetricFamily]:
        run = SweepRun.objects.filter(status=SweepStatus.RUNNING).first()
        running = GaugeMetricFamily(f"{PREFIX}_sweep_running", "1 while a sweep runs, else 0.")
        running.add_metric([], 1.0 if run else 0.0)
        yield running

        chunks = GaugeMetricFamily(
            f"{PREFIX}_sweep_run_chunks",
            "Chunks of the running sweep: planned so far (total), finished (done, failed included), "
            "failed. 0 when no sweep runs.",
            labels=["state"],
        )
        chunks.add_metric(["total"], float(run.chunks_total if run else 0))
        chunks.add_metric(["done"], float(run.chunks_done if run else 0))
        chunks.add_metric(["failed"], float(run.chunks_failed if run else 0))
        yield chunks

        courses = GaugeMetricFamily(
            f"{PREFIX}_sweep_run_courses",
            "Courses of the running sweep by outcome so far (its SweepRun counters). 0 when no sweep runs.",
            labels=["outcome"],
        )
        for name in COURSE_COUNTERS:
            courses.add_metric([name], float(getattr(run, RUN_COUNTER_FIELDS[name]) if run else 0))
        yield courses

        heartbeat = GaugeMetricFamily(
            f"{PREFIX}_sweep_heartbeat_age_seconds",
            "Seconds since the running sweep last reported (its lease); 0 when no sweep runs.",
        )
        beat = run and (run.heartbeat_at or run.started_at)
        heartbeat.add_metric([], (now - beat).total_seconds() if beat else 0.0)
        yield heartbeat

        finished = SweepRun.objects.filter(status=SweepStatus.COMPLETE).aggregate(last=Max("finished_at"))
        last = GaugeMetricFamily(
            f"{PREFIX}_sweep_last_complete_timestamp_seconds",
            "Unix time the last complete sweep finished; 0 when none has.",
        )
        last.add_metric([], _ts(finished["last"]))
        yield last

        interval = GaugeMetricFamily(
            f"{PREFIX}_sweep_interval_seconds",
            'Interval of the beat schedule "catalog full sweep".',
        )
        interval.add_metric([], sweep_interval().total_seconds())
        yield interval
        expected = GaugeMetricFamily(
            f"{PREFIX}_sweep_expected_duration_seconds",
            "How long a sweep is expected to take: the last complete run's duration, at least "
            "HEALTH_SWEEP_EXPECTED_DURATION.",
        )
        expected.add_metric([], expected_sweep_duration().total_seconds())
        yield expected

    def _overviews(self, now) -> Iterator[GaugeMetricFamily]:
        by_status = dict(
            CourseOverview.objects.order_by()
            .values_list("catalog_status")
            .annotate(n=Count("pk"))
            .values_list("catalog_status", "n")
        )
        overviews = GaugeMetricFamily(
            f"{PREFIX}_overviews", "Course overviews by catalog_status.", labels=["catalog_status"]
        )
        for value in CatalogStatus.values:
            overviews.add_metric([value], float(by_status.pop(value, 0)))
        for value, n in sorted(by_status.items()):  # a status this code does not know (yet)
            overviews.add_metric([str(value)], float(n))
        yield overviews

        # one pass over the table for both: the oldest check and the overviews never checked
        ages = CourseOverview.objects.aggregate(
            oldest=Min("catalog_checked_at"), never=Count("pk", filter=Q(catalog_checked_at__isnull=True))
        )
        checked = ages["oldest"]
        oldest = GaugeMetricFamily(
            f"{PREFIX}_catalog_data_oldest_age_seconds",
            "Age of the oldest catalog data: seconds since the least recently checked overview's "
            "catalog_checked_at (never-checked overviews are counted in _overviews_never_checked). "
            "0 when none was ever checked.",
        )
        oldest.add_metric([], (now - checked).total_seconds() if checked else 0.0)
        yield oldest
        never = GaugeMetricFamily(
            f"{PREFIX}_overviews_never_checked", "Overviews the catalog has never answered for."
        )
        never.add_metric([], float(ages["never"]))
        yield never

        outbox = CourseOverview.objects.filter(catalog_refresh_requested_at__isnull=False).aggregate(
            n=Count("pk"), oldest=Min("catalog_refresh_requested_at")
        )
        pending = GaugeMetricFamily(
            f"{PREFIX}_outbox_pending",
            "Overviews with a refresh requested and not yet fetched (outbox markers).",
        )
        pending.add_metric([], float(outbox["n"]))
        yield pending
        age = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_age_seconds",
            "Age of the oldest pending refresh request; 0 when none is pending.",
        )
        age.add_metric([], (now - outbox["oldest"]).total_seconds() if outbox["oldest"] else 0.0)
        yield age


def registry() -> CollectorRegistry:
    """Every process's samples plus the database gauges (a new registry per scrape: the
    multiprocess collector reads the directory afresh)."""
    scrape = CollectorRegistry()
    multiprocess.MultiProcessCollector(scrape, path=str(MULTIPROC_DIR))
    scrape.register(DatabaseCollector())
    return scrape


def exposition(accept: str = "") -> tuple[bytes, str]:
    """The body and its content type: Prometheus' text format, or OpenMetrics when the scraper's
    ``Accept`` asks for it."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry()), content_type


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse(
            "metrics are off: METRICS_TOKEN is not set\n", status=404, content_type="text/plain"
        )
    if not _authorized(request, token):
        response = HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
