from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from catalog.connection import CatalogCallsDisabled, build_client
from catalog.keys import parse_keys_or_exit
from catalog.refresh import refresh_courses
from overviews.models import CourseOverview

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
        try:
            with build_client() as client:
                outcome = refresh_courses(keys, client)
        except (CatalogCallsDisabled, ImproperlyConfigured) as exc:
            raise CommandError(str(exc), returncode=EXIT_FETCH_FAILED) from exc
        for key in outcome.not_found:
            self.stderr.write(f"no overview for {key}")
        self.stdout.write(f"refresh_course: {outcome.counters.as_line()} not_found={len(outcome.not_found)}")
        if outcome.error:
            raise CommandError(f"catalog fetch failed: {outcome.error}", returncode=EXIT_FETCH_FAILED)
        if outcome.not_found:
            raise CommandError("some courses have no overview", returncode=EXIT_FETCH_FAILED)

    def _enqueue(self, keys):
        from catalog.connection import why_calls_are_off
        from tasks.refresh import refresh_course

        reason = why_calls_are_off()
        if reason:
            raise CommandError(f"{reason}; nothing queued", returncode=EXIT_FETCH_FAILED)
        known = set(CourseOverview.objects.filter(id__in=keys).values_list("id", flat=True))
        for key in keys:
            if key not in known:
                self.stderr.write(f"no overview for {key}")
                continue
            result = refresh_course.apply_async((str(key),))
            self.stdout.write(f"queued {key} (task {result.id})")
        if len(known) < len(set(keys)):
            raise CommandError("some courses have no overview", returncode=EXIT_FETCH_FAILED)
