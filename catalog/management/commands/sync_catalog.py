import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.connection import build_client
from catalog.models import CatalogIntegration
from catalog.sync import sweep
from overviews.models import CourseOverview

EXIT_INCOMPLETE = 1


class Command(BaseCommand):
    help = (
        "Full resync of every overview from the catalog, in bulk pages of our own course keys. "
        "Exit 0 when every course was processed, 1 when the sweep could not complete "
        "(what was already written stays)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--page-size", type=int, help="courses per catalog request (default: admin config)"
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar; one summary line")

    def handle(self, *args, **options):
        config = CatalogIntegration.current()
        if not config.enabled:
            raise CommandError(
                "the catalog integration is disabled (admin: Catalog integration configuration)",
                returncode=EXIT_INCOMPLETE,
            )
        page_size = options["page_size"] or config.page_size
        if page_size < 1:
            raise CommandError("--page-size must be at least 1", returncode=2)
        total = CourseOverview.objects.count()
        bar = tqdm(total=total, unit="course", disable=options["no_progress"], file=self.stderr._out)
        started = time.monotonic()
        with build_client(config) as client:
            result = sweep(
                client,
                page_size=page_size,
                dry_run=options["dry_run"],
                attempts=config.page_attempts,
                on_page=lambda page: bar.update(page.counters.seen),
            )
        bar.close()
        if options["dry_run"]:
            for change in result.changes:
                self.stdout.write(
                    f"would change {change.course_key} {change.field}: {change.old!r} -> {change.new!r}"
                )
        status = "complete" if result.completed else "INCOMPLETE"
        self.stdout.write(
            f"sync_catalog {status}{' (dry run)' if options['dry_run'] else ''}: {result.counters.as_line()} "
            f"pages={result.pages} retries={result.retries} page_size={page_size} "
            f"seconds={time.monotonic() - started:.1f}"
        )
        if not result.completed:
            raise CommandError(f"sweep could not complete: {result.error}", returncode=EXIT_INCOMPLETE)
