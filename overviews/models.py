"""The course overview row: content fields (written by publishes and imports), catalog-owned
fields (written only by the catalog sync) and sync metadata."""

from __future__ import annotations

from django.db import models
from django.db.models.lookups import In
from opaque_keys.edx.django.models import CourseKeyField

# Fields a publish or an import may write. Nothing else is taken from a publish.
CONTENT_FIELDS: tuple[str, ...] = (
    "display_name",
    "org",
    "number",
    "run",
    "start",
    "end",
    "self_paced",
    "short_description",
    "course_image_url",
    "enrollment_start",
    "enrollment_end",
    "invitation_only",
    "hidden",
)

# Fields only the catalog sync writes (see catalog.mapping.FIELD_TABLE).
CATALOG_FIELDS: tuple[str, ...] = ("marketing_url", "eligible_for_financial_aid", "language")

SYNC_FIELDS: tuple[str, ...] = ("catalog_synced_at", "catalog_status", "catalog_error")

# When the catalog was last asked and last answered for a course, and a pending refresh request.
# Written by the sync alongside SYNC_FIELDS; listed apart so the sync's guarded bulk write of
# SYNC_FIELDS keeps its shape.
CHECK_FIELDS: tuple[str, ...] = (
    "catalog_checked_at",
    "catalog_attempted_at",
    "catalog_refresh_requested_at",
)


@CourseKeyField.register_lookup
class StoredIn(In):
    """``id__stored_in=[...]``: match keys as the strings stored, sent as they are.

    ``id__in`` parses every value into a key and prints it again (``CourseKeyField``'s
    ``get_prep_value``): 100,000 parses cost seconds in a sweep, and a value that is not a key at
    all (a hostile catalog record) raises instead of matching nothing. Stored keys are already
    canonical, so the strings are compared as they are (the primary key index still serves)."""

    lookup_name = "stored_in"
    prepare_rhs = False


class CatalogStatus(models.TextChoices):
    NEVER = "never", "never synced"
    OK = "ok", "ok"
    MISSING = "missing", "not in the catalog"
    ERROR = "error", "error"


class CourseOverview(models.Model):
    # One rule for key case on every database: exact and case-sensitive. CourseKeyField's default
    # gives SQLite a NOCASE collation (so `=` ignored case there) while PostgreSQL compares exactly;
    # case_sensitive=True makes SQLite's column BINARY, as PostgreSQL's already is.
    id = CourseKeyField(max_length=255, primary_key=True, case_sensitive=True)

    # Content fields (publish / import).
    display_name = models.TextField(blank=True, default="")
    org = models.CharField(max_length=255, blank=True, default="")
    number = models.CharField(max_length=255, blank=True, default="")
    run = models.CharField(max_length=255, blank=True, default="")
    start = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True)
    self_paced = models.BooleanField(default=False)
    short_description = models.TextField(blank=True, default="")
    course_image_url = models.TextField(blank=True, default="")
    enrollment_start = models.DateTimeField(null=True, blank=True)
    enrollment_end = models.DateTimeField(null=True, blank=True)
    invitation_only = models.BooleanField(default=False)
    # Studio's "hide from the catalog" (COURSE_CATALOG_INFO_CHANGED's `hidden`): content, like the rest.
    hidden = models.BooleanField(default=False)
    # The event-bus metadata time of the event whose content was last written here: an event older
    # than this is stale (the bus delivers at least once, late and replayed) and is ignored.
    # NULL: no bus event wrote this row yet (an import or the in-process publish did).
    content_event_time = models.DateTimeField(null=True, blank=True)

    # Catalog-owned fields: written only by the catalog sync, never by a publish.
    # NULL is the catalog's own value ("not marketable"), kept distinct from "never synced".
    marketing_url = models.URLField(max_length=500, null=True, blank=True)  # noqa: DJ001
    eligible_for_financial_aid = models.BooleanField(default=True)
    language = models.CharField(max_length=16, null=True, blank=True)  # noqa: DJ001

    # Sync metadata.
    # "Last changed": the last time catalog-owned values (or the status) were written.
    catalog_synced_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # "Last checked": the last time the catalog answered for this course, changed or not
    # (including "not in the catalog"). Staleness is measured from here.
    catalog_checked_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # The last time a fetch of this course was tried, whether it succeeded or failed.
    catalog_attempted_at = models.DateTimeField(null=True, blank=True)
    # Outbox marker: set when a publish or refresh request asks for a fetch, cleared when a fetch
    # completes; a row with it set is owed a fetch even if the queued task was lost.
    catalog_refresh_requested_at = models.DateTimeField(null=True, blank=True, db_index=True)
    catalog_status = models.CharField(
        max_length=8, choices=CatalogStatus.choices, default=CatalogStatus.NEVER, db_index=True
    )
    catalog_error = models.TextField(blank=True, default="")

    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "course overview"

    def __str__(self) -> str:
        return str(self.id)
