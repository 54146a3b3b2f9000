"""Observability: the Prometheus metrics every process reports, their multiprocess setup, the
Celery signal hooks that count tasks, and the log context (course key, task id, sweep id).

The lowest layer of the project: it imports nothing of it (prometheus_client, Celery's signals,
python-json-logger and Django settings at most), so every other package may report through it.
"""
