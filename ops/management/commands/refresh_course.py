from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from catalog.coalesce import clear_requested
from catalog.connection import CatalogCallsDisabled, build_client, why_calls_are_off
from catalog.refresh import refresh_courses
from overviews.keys import parse_keys_or_exit
from tasks.refresh import request_refresh

EXIT_FETCH_FAILED = 1


class Command(BaseCommand):
    help = (
        "Refresh the named courses from the catalog now (a CCX course from its master). "
        "Exit 1 when a fetch failed or a course has no overview, 2 on an invalid key."
    )

    def add_arguments(self, parser):
        parser.add_argument("keys", nargs="+", metavar="KEY")
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="enqueue one per-course task per course instead (workers fetch)",
        )

    def handle(self, *args, **options):
        keys = parse_keys_or_exit(options["keys"])
        if options["run_async"]:
            self._enqueue(keys)
            return
        started = timezone.now()
        try:
            with build_client() as client:
                # No retry follows here: a retryable failure is recorded on the rows too.
                outcome = refresh_courses(keys, client, record_retryable_errors=True)
        except (CatalogCallsDisabled, ImproperlyConfigured) as exc:
            raise CommandError(str(exc), returncode=EXIT_FETCH_FAILED) from exc
        for key in outcome.not_found:
            self.stderr.write(f"no overview for {key}")
        self.stdout.write(f"refresh_course: {outcome.counters.as_line()} not_found={len(outcome.not_found)}")
        if outcome.error:
            raise CommandError(f"catalog fetch failed: {outcome.error}", returncode=EXIT_FETCH_FAILED)
        clear_requested(keys, not_after=started)  # requests made before this fetch are answered
        if outcome.not_found:
            raise CommandError("some courses have no overview", returncode=EXIT_FETCH_FAILED)

    def _enqueue(self, keys):
        """``--async``: one refresh request (coalesced, like a publish's), one line per key."""
        reason = why_calls_are_off()
        if reason:
            raise CommandError(f"{reason}; nothing queued", returncode=EXIT_FETCH_FAILED)
        request = request_refresh(keys)
        for key in request.queued:
            self.stdout.write(f"queued {key} (task {request.task_ids[key]})")
        for key in request.coalesced:
            self.stdout.write(f"already pending {key}")
        for key in request.deferred:
            self.stderr.write(f"not queued {key}: recorded, queued again once the broker is back")
        for key in request.unknown:
            self.stderr.write(f"no overview for {key}")
        if request.deferred:
            raise CommandError(
                f"broker unavailable ({request.broker_error}): {len(request.deferred)} course(s) not queued",
                returncode=EXIT_FETCH_FAILED,
            )
        if request.unknown:
            raise CommandError("some courses have no overview", returncode=EXIT_FETCH_FAILED)
