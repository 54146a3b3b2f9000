"""Celery tasks (thin wrappers over plain functions in ``catalog``). ``celery -A tasks worker``."""

from tasks.app import app

__all__ = ["app"]
