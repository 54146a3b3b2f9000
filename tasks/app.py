"""The Celery application. Configuration lives in ``celeryconfig.py``."""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
django.setup()

app = Celery("catalog_sync")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["tasks"], related_name="refresh", force=True)
