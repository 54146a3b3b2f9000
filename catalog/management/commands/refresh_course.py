from django.core.management.base import BaseCommand, CommandError

from catalog.connection import build_client
from catalog.keys import parse_keys_or_exit
from catalog.refresh import refresh_courses

EXIT_FETCH_FAILED = 1


class Command(BaseCommand):
    help = "Refresh the named courses from the catalog now. Exit 1 when a fetch failed, 2 on an invalid key."

    def add_arguments(self, parser):
        parser.add_argument("keys", nargs="+", metavar="KEY")

    def handle(self, *args, **options):
        keys = parse_keys_or_exit(options["keys"])
        with build_client() as client:
            outcome = refresh_courses(keys, client)
        for key in outcome.not_found:
            self.stderr.write(f"no overview for {key}")
        self.stdout.write(f"refresh_course: {outcome.counters.as_line()} not_found={len(outcome.not_found)}")
        if outcome.error:
            raise CommandError(f"catalog fetch failed: {outcome.error}", returncode=EXIT_FETCH_FAILED)
        if outcome.not_found:
            raise CommandError("some courses have no overview", returncode=EXIT_FETCH_FAILED)
