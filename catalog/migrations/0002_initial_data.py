"""The data a fresh install needs besides the tables, so that ``manage.py migrate`` alone
prepares a database:

- the first configuration row: the integration enabled with the defaults, so a fresh install
  syncs without a visit to the admin (every later change is a new row: history);
- the beat schedule of the full sweep, in django-celery-beat's tables: editable at runtime in the
  admin (Periodic tasks), with an ``expires`` so that missed sweeps never pile up;
- Django's database cache table, created whatever ``CACHES`` says today: a deployment on Redis
  (``CACHE_URL``) that later drops ``CACHE_URL`` falls back to the database cache and finds its
  table. Same schema as Django's ``createcachetable`` (which this calls); a table that exists
  already is left as it is.

Each step is idempotent (it checks before it creates) and reversible.
"""

import json

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

SWEEP_TASK = "catalog_sync.sweep"
SWEEP_SCHEDULE_NAME = "catalog full sweep"
# settings.base's DatabaseCache LOCATION when CACHE_URL is unset.
CACHE_TABLE = "catalog_sync_cache"


def create_initial_configuration(apps, schema_editor):
    CatalogIntegration = apps.get_model("catalog", "CatalogIntegration")
    if not CatalogIntegration.objects.exists():
        CatalogIntegration.objects.create(enabled=True)


def create_sweep_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if PeriodicTask.objects.filter(name=SWEEP_SCHEDULE_NAME).exists():
        return
    every_day, _ = IntervalSchedule.objects.get_or_create(every=24, period="hours")
    PeriodicTask.objects.create(
        name=SWEEP_SCHEDULE_NAME,
        task=SWEEP_TASK,
        interval=every_day,
        kwargs=json.dumps({"trigger": "beat"}),
        queue="catalog.sweep",
        expire_seconds=3600,
        description="Full resync of every overview from the catalog (single flight: a tick during "
        "a running sweep does nothing).",
    )


def remove_sweep_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=SWEEP_SCHEDULE_NAME).delete()


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, CACHE_TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    if CACHE_TABLE in schema_editor.connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [
        # Reversing leaves the configuration history alone: it may hold rows an operator added.
        migrations.RunPython(create_initial_configuration, migrations.RunPython.noop),
        migrations.RunPython(create_sweep_schedule, remove_sweep_schedule),
        migrations.RunPython(create_cache_table, drop_cache_table),
    ]
