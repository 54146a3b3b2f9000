"""The Celery application. Configuration lives in ``celeryconfig.py``."""

import os

import django
from celery import Celery
from celery.signals import task_prerun
from edx_django_utils.cache import RequestCache

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
django.setup()

app = Celery("catalog_sync")
app.config_from_object("celeryconfig")
# The task modules (each registers its tasks on import).
app.conf.imports = ("tasks.refresh", "tasks.sweep")


@task_prerun.connect
def _fresh_configuration(**_: object) -> None:
    """Every task reads the current admin configuration: config_models also caches it per thread
    in a request cache that only the web middleware clears."""
    RequestCache.clear_all_namespaces()
