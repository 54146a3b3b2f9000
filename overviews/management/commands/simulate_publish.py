from django.core.management.base import BaseCommand

from overviews.keys import parse_keys_or_exit
from overviews.signals import course_published


class Command(BaseCommand):
    help = "Fire the course-published signal for KEY(s), exactly as the authoring side does."

    def add_arguments(self, parser):
        parser.add_argument("keys", nargs="+", metavar="KEY")
        parser.add_argument("--display-name", help="content field sent with the publish")

    def handle(self, *args, **options):
        keys = parse_keys_or_exit(options["keys"])
        content = {"display_name": options["display_name"]} if options["display_name"] is not None else {}
        for key in keys:
            course_published.send(sender=self.__class__, course_key=key, **content)
        self.stdout.write(f"published {len(keys)} course(s)")
