"""The feature switches exist from the first ``migrate``, off, each with its note: an operator
finds the kill switch in the admin (Waffle > Switches) instead of having to type its exact name
into ``waffle_switch --create`` during an incident.

Names and notes are copied from ``catalog.switches`` (a migration keeps the values of its day).
A switch that exists already keeps its state; only an empty note is filled. Reversing deletes
the two switches.
"""

from django.db import migrations

SWITCHES = {
    "catalog_sync.disable_catalog_calls": (
        "Kill switch for every catalog call. ON: no catalog request at all -- the publish task, sweeps, "
        "refreshes and the staff API all stop before the network; publishes still update the overview "
        "content in place. Default: off."
    ),
    "catalog_sync.fetch_on_create": (
        "Fetch catalog data in-process when a publish creates a row. ON: when a publish CREATES an "
        "overview row, fetch its catalog data right after the commit, in the publishing process, with a "
        "short timeout; on any failure fall back to the per-course task. Default: off (it puts a network "
        "call on the publishing request)."
    ),
}


def create_switches(apps, schema_editor):
    Switch = apps.get_model("waffle", "Switch")
    for name, note in SWITCHES.items():
        switch, created = Switch.objects.get_or_create(name=name, defaults={"active": False, "note": note})
        if not created and not switch.note:
            switch.note = note
            switch.save(update_fields=["note"])


def delete_switches(apps, schema_editor):
    apps.get_model("waffle", "Switch").objects.filter(name__in=list(SWITCHES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0002_initial_data"),
        ("waffle", "0004_update_everyone_nullbooleanfield"),
    ]
    operations = [migrations.RunPython(create_switches, delete_switches)]
