"""The Celery application. Configuration lives in ``celeryconfig.py``."""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
django.setup()

app = Celery("catalog_sync")
app.config_from_object("celeryconfig")
# The task modules (each registers its tasks on import).
app.conf.imports = ("tasks.refresh", "tasks.sweep")
