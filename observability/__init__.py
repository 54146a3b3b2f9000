"""Observability: the Prometheus metrics every process reports, their multiprocess setup, the
Celery signal hooks that count tasks, and the log context (course key, task id, sweep id).

The lowest layer of the project: it imports nothing of it (prometheus_client, Celery's signals,
python-json-logger and Django settings at most), so every other package may report through it.
"""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def multiproc_dir() -> Path:
    """Where every process of this host writes its metric samples (created if missing):
    ``PROMETHEUS_MULTIPROC_DIR`` from the environment, else ``prometheus/`` under
    ``CATALOG_SYNC_VAR_DIR`` (the repository's ``var/``). Set here, in the package, so that it is
    in the environment before any module of the package imports ``prometheus_client`` (which picks
    its multiprocess value class on first import) and before Celery or gunicorn fork."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not configured:
        var = Path(os.environ.get("CATALOG_SYNC_VAR_DIR") or _ROOT / "var")
        configured = str(var / "prometheus")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = configured
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


MULTIPROC_DIR = multiproc_dir()
