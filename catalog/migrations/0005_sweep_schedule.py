"""The beat schedule of the full sweep, in django-celery-beat's tables: editable at runtime in
the admin (Periodic tasks), with an ``expires`` so that missed sweeps never pile up."""

import json

from django.db import migrations

SWEEP_TASK = "catalog_sync.sweep"
NAME = "catalog full sweep"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    every_day, _ = IntervalSchedule.objects.get_or_create(every=24, period="hours")
    PeriodicTask.objects.create(
        name=NAME,
        task=SWEEP_TASK,
        interval=every_day,
        kwargs=json.dumps({"trigger": "beat"}),
        queue="catalog.sweep",
        expire_seconds=3600,
        description="Full resync of every overview from the catalog (single flight: a tick during "
        "a running sweep does nothing).",
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_rate_limit"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_schedule, remove_schedule)]
