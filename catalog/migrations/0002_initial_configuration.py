"""The first configuration row: the integration enabled with the defaults, so a fresh install
syncs without a visit to the admin. Every later change is a new row (history)."""

from django.db import migrations


def create_initial(apps, schema_editor):
    CatalogIntegration = apps.get_model("catalog", "CatalogIntegration")
    if not CatalogIntegration.objects.exists():
        CatalogIntegration.objects.create(enabled=True)


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(create_initial, migrations.RunPython.noop)]
