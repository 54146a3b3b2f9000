from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from enrollments.enroll import UnknownCourses, enroll
from overviews.keys import EXIT_INVALID_INPUT, parse_keys_or_exit


class Command(BaseCommand):
    help = (
        "Create the user USERNAME if needed (with an unusable password) and enroll it in each course. "
        "Idempotent: an existing active enrollment is left alone, an inactive one is reactivated. "
        "Exit 0; 2 on an invalid username or course key, or on a key that names no course overview "
        "(nothing is written then)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", metavar="USERNAME")
        parser.add_argument("keys", nargs="+", metavar="KEY")
        parser.add_argument("--mode", default="audit", help="enrollment mode of new enrollments (audit)")

    def handle(self, *args, **options):
        username = options["username"]
        try:
            get_user_model()._meta.get_field("username").run_validators(username)
        except ValidationError as exc:
            raise CommandError(
                f"invalid username {username!r}: {' '.join(exc.messages)}", returncode=EXIT_INVALID_INPUT
            ) from exc
        keys = parse_keys_or_exit(options["keys"])
        try:
            result = enroll(username, keys, mode=options["mode"])
        except UnknownCourses as exc:
            raise CommandError(f"{exc}; nothing written", returncode=EXIT_INVALID_INPUT) from exc
        self.stdout.write(f"enroll: user={username} {result.as_line()}")
