"""``import_courses PATH``: create or update overviews in place from JSON Lines.

The whole input is read and validated before anything is written; then one transaction writes
it in batches. Any bad line -- not UTF-8, not JSON, nested too deeply, not an object, an invalid
key or field, a key that differs only in case from another line's or a stored course's, a line
or file over its size limit -- stops the import with exit status 2, naming the line, and nothing
is written. Unknown fields are ignored (listed in the summary), as are catalog-owned fields and
sync metadata, which an import never writes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone
from opaque_keys.edx.keys import CourseKey

from overviews.keys import EXIT_INVALID_INPUT
from overviews.models import CONTENT_FIELDS, CourseOverview
from overviews.records import InvalidRecord, parse_course_record, unknown_fields
from overviews.signals import course_published

BATCH = 1000  # rows per bulk_create / bulk_update and per existing-rows query
MAX_LINE_BYTES = 64 * 1024  # a course record is a few hundred bytes; 64 KB is generous
DEFAULT_MAX_LINES = 1_000_000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def _refuse(number: int | None, message: str) -> CommandError:
    where = f"line {number}: " if number is not None else ""
    return CommandError(f"{where}{message}; nothing was written", returncode=EXIT_INVALID_INPUT)


class Command(BaseCommand):
    stealth_options = ("stdin",)  # tests pass a stream in place of the process's stdin
    help = (
        "Create or update overviews in place from JSON Lines (PATH, or - for stdin). Catalog-owned "
        "fields are never touched; unknown fields are ignored. The whole file is validated before "
        "anything is written; only rows whose content changed are written."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", metavar="PATH")
        parser.add_argument("--publish", action="store_true", help="also fire the publish signal for each")
        parser.add_argument(
            "--max-lines",
            type=int,
            default=DEFAULT_MAX_LINES,
            help=f"refuse input with more lines than this (default {DEFAULT_MAX_LINES:,})",
        )
        parser.add_argument(
            "--max-bytes",
            type=int,
            default=DEFAULT_MAX_BYTES,
            help=f"refuse input larger than this many bytes (default {DEFAULT_MAX_BYTES:,})",
        )

    def handle(self, *args, **options):
        stdin = options.get("stdin") or sys.stdin
        records, lines, unknown = self._read(
            options["path"], stdin, options["max_lines"], options["max_bytes"]
        )
        with transaction.atomic():
            self._refuse_case_clashes_with_stored(records, lines)
            created, updated, unchanged = self._write(records)
        if options["publish"]:
            for key, content in records.values():
                course_published.send(sender=self.__class__, course_key=key, **content)
        summary = (
            f"imported {len(records)} course(s): created={created} updated={updated} unchanged={unchanged}"
        )
        if unknown:
            names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:10])
            summary += f"; unknown fields ignored: {names}" + (" ..." if len(unknown) > 10 else "")
        self.stdout.write(summary)

    # -- reading and validating ----------------------------------------------------------------

    def _read(
        self, path: str, stdin: IO[Any], max_lines: int, max_bytes: int
    ) -> tuple[dict[str, tuple[CourseKey, dict[str, Any]]], dict[str, int], set[str]]:
        """``(records by key, line of each key, unknown field names)``; a ``CommandError`` (exit 2)
        naming the line on the first bad one."""
        if path == "-":
            stream = getattr(stdin, "buffer", stdin)  # bytes when there are; tests pass text
        else:
            try:
                stream = open(path, "rb")  # noqa: SIM115 -- closed below
            except OSError as exc:
                raise CommandError(
                    f"cannot read {path}: {exc.strerror}", returncode=EXIT_INVALID_INPUT
                ) from exc
        records: dict[str, tuple[CourseKey, dict[str, Any]]] = {}
        lines: dict[str, int] = {}
        by_lower: dict[str, str] = {}
        unknown: set[str] = set()
        try:
            for number, line in self._lines(stream, max_lines, max_bytes):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except RecursionError:
                    raise _refuse(number, "nested too deeply to be a course record") from None
                except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:100]
                    raise _refuse(number, f"not valid JSON ({reason})") from None
                try:
                    key, content = parse_course_record(record)
                except InvalidRecord as exc:
                    raise _refuse(number, str(exc)) from None
                if len(unknown) <= 10:  # enough to name them; a hostile file cannot grow it
                    unknown.update(unknown_fields(record))
                text = str(key)
                other = by_lower.setdefault(text.lower(), text)
                if other != text:
                    raise _refuse(
                        number,
                        f"course key {text!r} differs only in case from {other!r} on line {lines[other]} "
                        "(course keys are case-sensitive; one of them is a typo)",
                    )
                if text in records:  # the same course twice: later fields win
                    records[text] = (key, {**records[text][1], **content})
                else:
                    records[text] = (key, content)
                    lines[text] = number
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}", returncode=EXIT_INVALID_INPUT) from exc
        finally:
            if stream is not stdin and stream is not getattr(stdin, "buffer", None):
                stream.close()
        return records, lines, unknown

    @staticmethod
    def _lines(stream: IO[Any], max_lines: int, max_bytes: int) -> Iterator[tuple[int, str]]:
        """Numbered lines as text, each read with a bound: a line over ``MAX_LINE_BYTES``, more
        than ``max_lines`` lines or ``max_bytes`` bytes in all, or bytes that are not UTF-8 are
        refused when met (reading ``/dev/zero`` stops after 64 KB)."""
        total = 0
        number = 0
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            total += len(line)
            if len(line) > MAX_LINE_BYTES:
                raise _refuse(number, f"longer than {MAX_LINE_BYTES:,} bytes; not a course record")
            if number > max_lines:
                raise _refuse(number, f"more than --max-lines={max_lines:,} lines")
            if total > max_bytes:
                raise _refuse(number, f"input is larger than --max-bytes={max_bytes:,}")
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _refuse(
                        number, f"not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
                    ) from None
            yield number, line

    @staticmethod
    def _refuse_case_clashes_with_stored(
        records: dict[str, tuple[CourseKey, dict[str, Any]]], lines: dict[str, int]
    ) -> None:
        """A key that differs only in case from a stored course is refused: lookups are exact, so
        it would become a second course, and the catalog (which ignores case) would feed both."""
        wanted = {key.lower(): key for key in records}
        stored = CourseOverview.objects.values_list(Cast("id", output_field=CharField()), flat=True)
        for existing in stored.iterator(chunk_size=5000):
            key = wanted.get(existing.lower())
            if key is not None and key != existing and existing not in records:
                raise _refuse(
                    lines[key],
                    f"course key {key!r} differs only in case from the stored course {existing!r}",
                )

    # -- writing ---------------------------------------------------------------------------------

    def _write(self, records: dict[str, tuple[CourseKey, dict[str, Any]]]) -> tuple[int, int, int]:
        """Create new rows and update changed ones, ``BATCH`` rows a statement; unchanged rows
        are not written. Returns ``(created, updated, unchanged)``."""
        created = updated = unchanged = 0
        keys = list(records)
        now = timezone.now()
        raw_id = Cast("id", output_field=CharField())
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            stored = {
                row[0]: dict(zip(CONTENT_FIELDS, row[1:], strict=True))
                for row in CourseOverview.objects.filter(
                    id__in=[records[text][0] for text in batch]
                ).values_list(raw_id, *CONTENT_FIELDS)
            }
            new: list[CourseOverview] = []
            changed: list[tuple[str, dict[str, Any]]] = []
            fields: set[str] = set()
            for text in batch:
                key, content = records[text]
                current = stored.get(text)
                if current is None:
                    new.append(CourseOverview(id=key, **content))
                    continue
                diff = {name for name, value in content.items() if current[name] != value}
                if not diff:
                    unchanged += 1
                    continue
                current.update(content)
                changed.append((text, current))
                fields.update(diff)
            CourseOverview.objects.bulk_create(new, batch_size=BATCH)
            _update_rows(changed, sorted(fields), now)
            created += len(new)
            updated += len(changed)
        return created, updated, unchanged


def _update_rows(rows: list[tuple[str, dict[str, Any]]], names: list[str], now: datetime) -> None:
    """``UPDATE ... SET <names>, modified WHERE id = %s`` for each row, as one ``executemany``.

    Django's ``bulk_update`` builds a CASE WHEN per field and row: 100,000 changed rows took
    35 s in it, against a few seconds this way. Only quoted column names are interpolated.
    """
    if not rows:
        return
    fields = [CourseOverview._meta.get_field(name) for name in names]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = (
        f"UPDATE {quote(CourseOverview._meta.db_table)} SET {assignments}, "  # noqa: S608
        f"{quote('modified')} = %s WHERE {quote('id')} = %s"
    )
    stamp = CourseOverview._meta.get_field("modified").get_db_prep_save(now, connection)
    params = [
        [*(field.get_db_prep_save(values[field.name], connection) for field in fields), stamp, text]
        for text, values in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
