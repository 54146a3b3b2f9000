import json
from datetime import datetime

from django.core.management.base import BaseCommand

from overviews.models import CATALOG_FIELDS, CHECK_FIELDS, CONTENT_FIELDS, SYNC_FIELDS, CourseOverview


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else str(value)


class Command(BaseCommand):
    help = "Print every overview as JSON Lines: id, content fields, catalog-owned fields, sync metadata."

    def handle(self, *args, **options):
        fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS, *SYNC_FIELDS, *CHECK_FIELDS)
        for row in CourseOverview.objects.order_by("id").values_list(*fields).iterator(chunk_size=2000):
            record = dict(zip(fields, row, strict=True))
            self.stdout.write(json.dumps(record, default=_jsonable))
