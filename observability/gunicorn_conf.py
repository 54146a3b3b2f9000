"""gunicorn hooks for multiprocess metrics: ``gunicorn -c python:observability.gunicorn_conf``.

A config module: gunicorn reads its settings and hooks from the module's globals. Settings given
on the command line win over nothing here (this module sets hooks only).
"""

from __future__ import annotations

from observability import multiproc


def on_starting(server) -> None:
    """The master, before its workers fork: drop the files of processes from an earlier run."""
    multiproc.clean_dead()


def child_exit(server, worker) -> None:
    """A worker exited (restart, timeout, max_requests): its live gauges leave the scrape."""
    multiproc.mark_dead(worker.pid)
