import io
import json
import os
import sys
from datetime import datetime

from django.core.management.base import BaseCommand

from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else str(value)


class Command(BaseCommand):
    help = "Print every overview as JSON Lines: id, content fields, catalog-owned fields, sync metadata."

    def handle(self, *args, **options):
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS)
        rows = CourseOverview.objects.order_by("id").values_list(*fields)
        try:
            # Streamed: one chunk of rows in memory at a time, however large the table.
            for row in rows.iterator(chunk_size=2000):
                self.stdout.write(json.dumps(dict(zip(fields, row, strict=True)), default=_jsonable))
            self.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`dump_overviews | head`): stop quietly, as Unix tools do.
            # Point stdout at /dev/null so the interpreter's final flush raises nothing either.
            _silence_stdout()


def _silence_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
