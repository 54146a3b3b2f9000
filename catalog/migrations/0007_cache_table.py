"""Django's database cache table, so that ``manage.py migrate`` alone prepares a database.

Created whatever ``CACHES`` says today: a deployment on Redis (``CACHE_URL``) that later drops
``CACHE_URL`` falls back to the database cache and finds its table. Same schema as Django's
``createcachetable`` (which this calls); a table that exists already is left as it is.
"""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

# settings.base's DatabaseCache LOCATION when CACHE_URL is unset.
TABLE = "catalog_sync_cache"


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    if TABLE in schema_editor.connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0006_sweep_lease_in_db")]
    operations = [migrations.RunPython(create_cache_table, drop_cache_table)]
