"""The sweep's lease moves from the cache into the database: one running ``SweepRun`` at most (a
partial unique constraint), an ``owner`` token; chunks can be ``cancelled``; the fleet rate
limit's window counter gets a table."""

from django.db import migrations, models
from django.utils import timezone


def stop_extra_running_runs(apps, schema_editor):
    """Before the constraint: a database from before it may hold several ``running`` runs (a
    sweep whose completion was lost stayed running for ever). Keep the newest, which the next
    trigger resumes and completes; mark the others failed, saying why."""
    SweepRun = apps.get_model("catalog", "SweepRun")
    running = list(SweepRun.objects.filter(status="running").order_by("-started_at", "-pk"))
    for run in running[1:]:
        run.status = "failed"
        run.finished_at = run.finished_at or timezone.now()
        run.error = "stopped by migration 0006: a newer sweep was running (one running sweep at most)"
        run.save(update_fields=["status", "finished_at", "error"])


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0005_sweep_schedule"),
    ]

    operations = [
        migrations.RunPython(stop_extra_running_runs, migrations.RunPython.noop),
        migrations.CreateModel(
            name="RateWindow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("seconds", models.PositiveIntegerField()),
                ("number", models.BigIntegerField()),
                ("used", models.PositiveIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("seconds", "number"), name="unique_rate_window")
                ],
            },
        ),
        migrations.AddField(
            model_name="sweeprun",
            name="owner",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AlterField(
            model_name="sweepchunk",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "pending"),
                    ("done", "done"),
                    ("failed", "failed"),
                    ("cancelled", "cancelled"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="sweeprun",
            name="resumed",
            field=models.PositiveIntegerField(
                default=0, help_text="times resumed after its heartbeat went stale"
            ),
        ),
        migrations.AddConstraint(
            model_name="sweeprun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "running")), fields=("status",), name="one_running_sweep"
            ),
        ),
    ]
