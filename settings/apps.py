"""Creates the local directories the configured SQLite files need, when Django starts.

Not at settings import: importing settings must write nothing (a read-only image, a test that
only reads configuration, ``manage.py check`` on a build machine). ``ready()`` runs once per
process that calls ``django.setup()`` -- ``manage.py``, the WSGI application, the Celery app --
before any database or broker connection is opened, and SQLite creates its file but not the
directory it lives in.
"""

from __future__ import annotations

from pathlib import Path

from django.apps import AppConfig
from django.conf import settings

_EMBEDDED_BROKER_PREFIX = "sqla+sqlite:///"


def sqlite_paths() -> list[Path]:
    """The on-disk SQLite files of the configured databases and of the embedded broker."""
    paths = []
    for db in settings.DATABASES.values():
        name = str(db.get("NAME") or "")
        if db.get("ENGINE") == "django.db.backends.sqlite3" and name and not _in_memory(name):
            paths.append(Path(name))
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if broker.startswith(_EMBEDDED_BROKER_PREFIX):
        name = broker.removeprefix(_EMBEDDED_BROKER_PREFIX).split("?", 1)[0]
        if name and not _in_memory(name):
            paths.append(Path(name))
    return paths


def _in_memory(name: str) -> bool:
    return name == ":memory:" or name.startswith("file:") or "mode=memory" in name


def ensure_local_dirs() -> list[Path]:
    """Create the missing parent directories of those files; returns the ones it created."""
    created = []
    for path in sqlite_paths():
        parent = path.parent
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True)
            created.append(parent)
    return created


class LocalFilesConfig(AppConfig):
    name = "settings"
    label = "catalog_sync_local_files"
    verbose_name = "Local files"

    def ready(self) -> None:
        ensure_local_dirs()
