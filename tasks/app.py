"""The Celery application. Configuration lives in ``celeryconfig.py``.

Fails closed: without ``DJANGO_SETTINGS_MODULE`` a worker or beat refuses to start instead of
running on development settings (``settings.env.require_settings_module``).
"""

import django
from celery import Celery
from celery.signals import task_prerun
from edx_django_utils.cache import RequestCache

from settings.env import require_settings_module

require_settings_module("Celery app")
django.setup()

import observability.celery  # noqa: E402, F401  (connects the metrics and log-context hooks)

app = Celery("catalog_sync")
app.config_from_object("celeryconfig")
# The task modules (each registers its tasks on import).
app.conf.imports = ("tasks.refresh", "tasks.sweep")


@task_prerun.connect
def _fresh_configuration(**_: object) -> None:
    """Every task reads the current admin configuration: config_models also caches it per thread
    in a request cache that only the web middleware clears."""
    RequestCache.clear_all_namespaces()
