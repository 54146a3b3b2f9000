import time

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

import celeryconfig
from catalog.connection import CatalogCallsDisabled, build_client
from catalog.models import CatalogIntegration, SweepStatus, current_config
from catalog.retry import in_process_policy
from catalog.sweep import (
    counters_line,
    decide_strategy,
    dry_run,
    run_counters,
    run_in_process,
    start_sweep,
    stop_run,
)
from overviews.models import CourseOverview
from tasks.sweep import sweep

EXIT_INCOMPLETE = 1
EXIT_USAGE = 2


class Command(BaseCommand):
    help = (
        "Full resync of every overview from the catalog: keys-batched (pages of our own keys) or "
        "walk + repair (the catalog's list in large pages, then by key what the walk did not see), "
        "the cheaper chosen per sweep. "
        "Exit 0 when every course was processed, 1 when the sweep could not complete "
        "(what was already written stays)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--page-size", type=int, help="courses per catalog request (default: admin config)"
        )
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="enqueue the sweep on the queue and return (workers run it)",
        )
        parser.add_argument(
            "--strategy",
            choices=("auto", "keys", "walk"),
            help="keys: pages of our own keys; walk: the catalog's list in large pages, then the "
            "courses it did not see by key; auto: the cheaper by estimate (default: admin config)",
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar; one summary line")

    def handle(self, *args, **options):
        config = current_config()
        if not config.enabled:
            raise CommandError(
                "the catalog integration is disabled (admin: Catalog integration configuration)",
                returncode=EXIT_INCOMPLETE,
            )
        page_size = options["page_size"]
        if page_size is not None:
            check_page_size(page_size)
        if options["run_async"]:
            if options["dry_run"]:
                raise CommandError("--dry-run runs in this process; drop --async", returncode=EXIT_USAGE)
            result = sweep.apply_async(
                kwargs={"trigger": "command", "page_size": page_size, "strategy": options["strategy"]},
                expires=celeryconfig.SWEEP_EXPIRES,
            )
            self.stdout.write(f"sync_catalog: sweep enqueued (task {result.id}); progress in the admin")
            return
        try:
            with build_client(config) as client:
                if options["dry_run"]:
                    self._dry_run(client, page_size or config.page_size, config, options)
                else:
                    self._sweep(client, page_size, config, options)
        except (CatalogCallsDisabled, ImproperlyConfigured) as exc:
            raise CommandError(str(exc), returncode=EXIT_INCOMPLETE) from exc

    def _progress(self, options):
        total = CourseOverview.objects.count()
        return tqdm(total=total, unit="course", disable=options["no_progress"], file=self.stderr._out)

    def _sweep(self, client, page_size, config, options):
        started = time.monotonic()
        bar = self._progress(options)
        run = start_sweep("command", page_size=page_size, in_process=True)
        if run is None:
            bar.close()
            raise CommandError("a sweep is already running; not starting another", returncode=EXIT_INCOMPLETE)
        forced = options["strategy"]  # auto compares the estimates, whatever the admin says
        try:
            run = decide_strategy(run, client, forced=forced)
            run = run_in_process(
                run,
                client,
                policy=in_process_policy(config.page_attempts),
                sleep=time.sleep,
                on_chunk=lambda chunk, counters: bar.update(counters.seen),
            )
        except BaseException as exc:
            # run_in_process stops its run on every error path; this covers anything around it
            stop_run(run, f"sync_catalog interrupted: {type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
        self.stdout.write(
            f"sync_catalog {run.status}: sweep=#{run.pk} {counters_line(run_counters(run))} "
            f"pages={run.chunks_done + run.walk_pages} resumed={run.resumed} "
            f"page_size={page_size or config.page_size} strategy={run.strategy} "
            f"estimate_keys={run.estimate_keys} estimate_walk={run.estimate_walk} "
            f"walk_pages={run.walk_pages} repair_chunks={run.chunks_done if run.strategy == 'walk' else 0} "
            f"seconds={time.monotonic() - started:.1f}"
        )
        if run.status == SweepStatus.RUNNING:  # another trigger took it over: it goes on there
            raise CommandError(
                f"sweep #{run.pk} was taken over by another trigger (this process had gone quiet for "
                "longer than CATALOG_SWEEP_LEASE_TTL); it goes on there",
                returncode=EXIT_INCOMPLETE,
            )
        if run.status != SweepStatus.COMPLETE:
            raise CommandError(
                f"sweep could not complete: {run.error or run.status}", returncode=EXIT_INCOMPLETE
            )

    def _dry_run(self, client, page_size, config, options):
        """The in-process sweep as a preview: no overview written, and no sweep record (so no
        lease: a preview neither waits for nor blocks a real sweep)."""
        started = time.monotonic()
        bar = self._progress(options)
        try:
            result = dry_run(
                client,
                page_size=page_size,
                policy=in_process_policy(config.page_attempts),
                on_chunk=lambda chunk, counters: bar.update(counters.seen),
            )
        finally:
            bar.close()
        for change in result.changes:
            self.stdout.write(
                f"would change {change.course_key} {change.field}: {change.old!r} -> {change.new!r}"
            )
        status = "complete" if result.completed else "INCOMPLETE"
        self.stdout.write(
            f"sync_catalog {status} (dry run): {counters_line(result.counters)} "
            f"pages={result.chunks_done} page_size={page_size} seconds={time.monotonic() - started:.1f}"
        )
        if not result.completed:
            raise CommandError(f"sweep could not complete: {result.error}", returncode=EXIT_INCOMPLETE)


def check_page_size(page_size: int) -> None:
    """--page-size within the admin's range (``CatalogIntegration.page_size``'s validators):
    exit 2 with one line, before anything is started."""
    field = CatalogIntegration._meta.get_field("page_size")
    try:
        for validate in field.validators:
            validate(page_size)
    except ValidationError as exc:
        bounds = {type(v).__name__: v.limit_value for v in field.validators if hasattr(v, "limit_value")}
        raise CommandError(
            f"--page-size must be between {bounds.get('MinValueValidator', 1)} and "
            f"{bounds.get('MaxValueValidator', '?')} (got {page_size})",
            returncode=EXIT_USAGE,
        ) from exc
