from django.core.management.base import BaseCommand

from catalog.keys import parse_keys_or_exit
from signals import course_published


class Command(BaseCommand):
    help = "Fire the course-published signal for KEY(s), exactly as the authoring side does."

    def add_arguments(self, parser):
        parser.add_argument("keys", nargs="+", metavar="KEY")

    def handle(self, *args, **options):
        keys = parse_keys_or_exit(options["keys"])
        for key in keys:
            course_published.send(sender=self.__class__, course_key=key)
        self.stdout.write(f"published {len(keys)} course(s)")
