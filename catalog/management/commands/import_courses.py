import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from catalog.keys import EXIT_INVALID_INPUT
from overviews.models import CourseOverview
from overviews.records import InvalidRecord, parse_course_record
from signals import course_published

BATCH = 1000


class Command(BaseCommand):
    stealth_options = ("stdin",)  # tests pass a stream in place of the process's stdin
    help = (
        "Create or update overviews in place from JSON Lines (PATH, or - for stdin). Catalog-owned "
        "fields are never touched. The whole file is validated before anything is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", metavar="PATH")
        parser.add_argument("--publish", action="store_true", help="also fire the publish signal for each")

    def handle(self, *args, **options):
        records = self._read(options["path"], options.get("stdin") or sys.stdin)
        created = updated = 0
        with transaction.atomic():
            for start in range(0, len(records), BATCH):
                batch = records[start : start + BATCH]
                existing = CourseOverview.objects.in_bulk([key for key, _ in batch])
                new, changed, fields = [], [], set()
                for key, content in batch:
                    row = existing.get(key)
                    if row is None:
                        new.append(CourseOverview(id=key, **content))
                    else:
                        for name, value in content.items():
                            setattr(row, name, value)
                        fields.update(content)
                        changed.append(row)
                CourseOverview.objects.bulk_create(new)
                if changed and fields:
                    CourseOverview.objects.bulk_update(changed, sorted(fields))
                created += len(new)
                updated += len(changed)
        if options["publish"]:
            for key, content in records:
                course_published.send(sender=self.__class__, course_key=key, **content)
        self.stdout.write(f"imported {len(records)} course(s): created={created} updated={updated}")

    def _read(self, path, stdin):
        stream = stdin if path == "-" else None
        try:
            stream = stream or open(path, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}", returncode=EXIT_INVALID_INPUT) from exc
        records, seen = [], {}
        with stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    key, content = parse_course_record(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CommandError(
                        f"line {number}: not valid JSON ({exc.msg}); nothing was written",
                        returncode=EXIT_INVALID_INPUT,
                    ) from exc
                except InvalidRecord as exc:
                    raise CommandError(
                        f"line {number}: {exc}; nothing was written", returncode=EXIT_INVALID_INPUT
                    ) from exc
                if key in seen:
                    records[seen[key]] = (key, {**records[seen[key]][1], **content})
                else:
                    seen[key] = len(records)
                    records.append((key, content))
        return records
