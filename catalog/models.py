"""Runtime configuration with history (django-config-models, the Open edX way)."""

from __future__ import annotations

from config_models.models import ConfigurationModel
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from edx_django_utils.cache import RequestCache

from catalog_client.client import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_URL_LENGTH, DEFAULT_READ_TIMEOUT

DEFAULT_PAGE_SIZE = 100
# The walk's adaptive page size (``catalog.walk``): see docs/page-size.md for the measurements.
DEFAULT_WALK_PAGE_BUDGET = 5.0
DEFAULT_WALK_PAGE_SIZE_CEILING = 1600


class CatalogIntegration(ConfigurationModel):
    """Every save is a new row: the admin shows who changed what and when.

    ``CatalogIntegration.current()`` returns the newest row (or an unsaved one with the defaults
    below). Rows are cached for ``cache_timeout`` seconds per process, so a change reaches every
    worker within that time.
    """

    cache_timeout = 15

    page_size = models.PositiveIntegerField(
        default=DEFAULT_PAGE_SIZE,
        validators=[MinValueValidator(1), MaxValueValidator(2000)],
        help_text="Courses per catalog request in a sweep (overridable per run with --page-size).",
    )
    connect_timeout = models.FloatField(
        default=DEFAULT_CONNECT_TIMEOUT,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds to connect to the catalog.",
    )
    read_timeout = models.FloatField(
        default=DEFAULT_READ_TIMEOUT,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds to wait for a catalog answer.",
    )
    max_url_length = models.PositiveIntegerField(
        default=DEFAULT_MAX_URL_LENGTH,
        validators=[MinValueValidator(512)],
        help_text="Bulk requests by key are split so that no URL is longer than this.",
    )
    page_attempts = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Attempts per page in a synchronous sweep before the sweep stops (exit 1).",
    )

    sweep_strategy = models.CharField(
        max_length=8,
        choices=[
            ("auto", "auto: the cheaper by estimate"),
            ("keys", "keys-batched"),
            ("walk", "walk + repair"),
        ],
        default="auto",
        help_text="How a full sweep reads the catalog (overridable per run with --strategy). keys: pages of "
        "our own keys (keys=); walk: the catalog's whole list in large pages, then keys= for every course "
        "the walk did not see; auto: the one with the smaller request estimate, decided per sweep.",
    )
    walk_page_budget = models.FloatField(
        default=DEFAULT_WALK_PAGE_BUDGET,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds one walk page may take: the walk doubles its page size while pages answer in "
        "under half of this, halves it when a page takes longer, times out or fails with a 5xx.",
    )
    walk_page_size_ceiling = models.PositiveIntegerField(
        default=DEFAULT_WALK_PAGE_SIZE_CEILING,
        validators=[MinValueValidator(1), MaxValueValidator(10000)],
        help_text="The largest page the walk asks for (it starts at the page size above).",
    )
    rate_limit_per_second = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0)],
        help_text="Fleet-wide cap on catalog requests per second, shared by every worker (0: no cap). "
        "The catalog throttles per user: 200/hour is about 0.055/s.",
    )

    class Meta(ConfigurationModel.Meta):
        verbose_name = "catalog integration configuration"

    def __str__(self) -> str:
        return f"CatalogIntegration(enabled={self.enabled}, page_size={self.page_size})"


def current_config() -> CatalogIntegration:
    """The newest configuration, at most ``cache_timeout`` seconds old in every process.

    config_models caches rows in the shared cache (cleared on save) and, per thread, in a request
    cache that only a web middleware clears; workers and long loops have no requests, so that
    per-thread copy is dropped first, or a process would keep its first value until restarted.
    """
    RequestCache.clear_all_namespaces()
    return CatalogIntegration.current()


# The sweep's counters, declared once. A chunk row has a field of each name, a run row the sum
# of its chunks' under ``RUN_COUNTER_FIELDS``; the roll-up, the log line, the command's summary
# and the admin are derived from these. Course counters count a chunk's courses by outcome (a
# failed chunk: all of them ``errored``); cost counters count its attempts' catalog requests
# (token requests and 429s included), retries spent and 429 answers.
COURSE_COUNTERS: tuple[str, ...] = (
    "seen",
    "updated",
    "unchanged",
    "missing",
    "refused",
    "errored",
    "superseded",
)
COST_COUNTERS: tuple[str, ...] = ("catalog_requests", "retries", "throttled")
SWEEP_COUNTERS: tuple[str, ...] = COURSE_COUNTERS + COST_COUNTERS
# SweepRun's field for each counter: course counters are prefixed (a run has chunk counters too).
RUN_COUNTER_FIELDS: dict[str, str] = {
    **{name: f"courses_{name}" for name in COURSE_COUNTERS},
    **{name: name for name in COST_COUNTERS},
}
_RUN_COUNTER_HELP = {"superseded": "fresher per-course data kept", "throttled": "429 answers"}


class SweepStatus(models.TextChoices):
    RUNNING = "running", "running"
    COMPLETE = "complete", "complete"
    PARTIAL = "partial", "complete, some chunks failed"
    FAILED = "failed", "failed"


class SweepRun(models.Model):
    """One full resync: progress, counters and checkpoint. Chunks are ``SweepChunk`` rows.

    The row is the record and the lease: at most one run is ``running`` (a partial unique
    constraint), ``heartbeat_at`` says it is alive, ``owner`` names the process coordinating it.
    Counters are added with ``F()`` as each chunk attempt is recorded, so they always equal the
    sum of the chunk rows.
    """

    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # A random token of the process that started or took over the run; a coordinator whose token
    # is gone (taken over after its heartbeat went stale) stops.
    owner = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(
        max_length=8, choices=SweepStatus.choices, default=SweepStatus.RUNNING, db_index=True
    )
    trigger = models.CharField(max_length=16, default="beat", help_text="beat, command, async, api")
    in_process = models.BooleanField(default=False, help_text="run by `sync_catalog` without --async")
    page_size_override = models.PositiveIntegerField(null=True, blank=True)
    # Checkpoint: every overview up to this key has a chunk; planning resumes after it.
    cursor = models.CharField(max_length=255, blank=True, default="")
    planning_done = models.BooleanField(default=False)
    resumed = models.PositiveIntegerField(default=0, help_text="times resumed after its heartbeat went stale")
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    chunks_failed = models.PositiveIntegerField(default=0)
    # Counters (``SWEEP_COUNTERS``, as ``RUN_COUNTER_FIELDS`` names them): the sum of the chunk
    # rows, added in the same transaction as each chunk's record.
    for _counter in SWEEP_COUNTERS:
        locals()[RUN_COUNTER_FIELDS[_counter]] = models.PositiveIntegerField(
            default=0, help_text=_RUN_COUNTER_HELP.get(_counter, "")
        )
    del _counter
    error = models.TextField(blank=True, default="")
    # The strategy (``catalog.walk``): chosen once per run, from a one-item count probe, the LMS's
    # course count and its keys' encoded lengths; the estimates are requests after the probe.
    strategy = models.CharField(max_length=8, blank=True, default="", help_text="keys or walk")
    strategy_reason = models.CharField(max_length=200, blank=True, default="")
    catalog_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="the catalog's count at the probe"
    )
    estimate_keys = models.PositiveIntegerField(null=True, blank=True, help_text="requests, keys-batched")
    estimate_walk = models.PositiveIntegerField(null=True, blank=True, help_text="requests, walk + repair")
    # The walk's checkpoint: the list position the next page starts at, the page size it asks for.
    walk_started_at = models.DateTimeField(null=True, blank=True)
    walk_finished_at = models.DateTimeField(null=True, blank=True)
    walk_offset = models.PositiveIntegerField(default=0)
    walk_page_size = models.PositiveIntegerField(default=0)
    walk_page_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="the catalog serves at most this many runs a page (learnt)"
    )
    walk_done = models.BooleanField(default=False)
    walk_pages = models.PositiveIntegerField(default=0)
    walk_sizes = models.JSONField(default=list, blank=True, help_text="[page size, pages] in order")
    walk_error = models.TextField(blank=True, default="", help_text="why the walk stopped early, if it did")

    class Meta:
        ordering = ("-started_at",)
        get_latest_by = "started_at"
        constraints = [
            # The single-flight lease: a second trigger's INSERT of a running run fails.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="one_running_sweep"
            )
        ]

    def __str__(self) -> str:
        return f"sweep #{self.pk} ({self.status})"


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DONE = "done", "done"
    FAILED = "failed", "failed"
    # Never attempted to the end: its run stopped (a failed chunk in-process, an interrupt).
    CANCELLED = "cancelled", "cancelled"


class SweepChunk(models.Model):
    """A range of our own course keys (keyset order), synced by one task."""

    run = models.ForeignKey(SweepRun, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    first_key = models.CharField(max_length=255)
    last_key = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=ChunkStatus.choices, default=ChunkStatus.PENDING)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Counters (``SWEEP_COUNTERS``, under their own names). The cost counters add up every
    # attempt, failed ones included (token requests, 429s, errors).
    for _counter in SWEEP_COUNTERS:
        locals()[_counter] = models.PositiveIntegerField(default=0)
    del _counter
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_chunk_seq")]
        indexes = [models.Index(fields=["run", "status"])]

    def __str__(self) -> str:
        return f"chunk {self.seq} of sweep #{self.run_id}"


class RateWindow(models.Model):
    """The fleet rate limit's counter for one time window (``catalog.throttle``): a request is
    admitted by one atomic ``UPDATE ... SET used = used + 1 WHERE used < allowed``, which the
    database cache's read-then-write ``incr`` is not. Old windows are deleted as new ones start."""

    seconds = models.PositiveIntegerField()  # the window's length
    number = models.BigIntegerField()  # which window: int(unix time // seconds)
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["seconds", "number"], name="unique_rate_window")]

    def __str__(self) -> str:
        return f"rate window {self.seconds}s #{self.number}: {self.used}"
