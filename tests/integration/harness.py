"""Real processes for integration tests: a database file, Redis, a Celery worker, manage.py.

The test process serves the stand-in catalog over HTTP from a thread; a real worker process (and
manage.py subprocesses, as an operator would run them) share a SQLite file, Redis as broker and
cache, and the stand-in's URL through the environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[2]
# The Redis that `scripts/services.py ensure` answers for (TEST_REDIS_PORT, default 6379).
REDIS_URL = f"redis://127.0.0.1:{os.environ.get('TEST_REDIS_PORT', '6379')}"
BROKER_DB, CACHE_DB = 15, 14


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Service:
    """One deployment of the service for a test: env, manage.py, workers."""

    def __init__(
        self, tmp: Path, standin: Any, *, coalesce_window: float = 1.0, lease_ttl: float = 600
    ) -> None:
        self.tmp = tmp
        self.standin = standin
        self.workers: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings.dev",
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "CELERY_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
            "CACHE_URL": f"{REDIS_URL}/{CACHE_DB}",
            "CATALOG_API_URL": standin.api_url,
            "CATALOG_OAUTH_URL": standin.oauth_url,
            "CATALOG_CLIENT_ID": standin.client_id,
            "CATALOG_CLIENT_SECRET": standin.client_secret,
            "CATALOG_PUBLISH_COALESCE_WINDOW": str(coalesce_window),
            "CATALOG_SWEEP_LEASE_TTL": str(int(lease_ttl)),
            "CATALOG_SYNC_VAR_DIR": str(tmp / "var"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        for db in (BROKER_DB, CACHE_DB):
            redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()
        self.manage("migrate", "--noinput")

    def manage(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def import_courses(self, records: list[dict]) -> None:
        self.manage("import_courses", "-", stdin="".join(json.dumps(r) + "\n" for r in records))

    def dump(self) -> dict[str, dict]:
        out = self.manage("dump_overviews").stdout
        return {rec["id"]: rec for rec in map(json.loads, out.splitlines())}

    def start_worker(
        self, *, concurrency: int = 1, queues: str = "catalog.refresh,catalog.sweep,celery", name: str = "w1"
    ) -> subprocess.Popen:
        log = open(self.tmp / f"worker-{name}.log", "w")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
                "-P",
                "prefork",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        wait_until(
            lambda: "ready" in self.worker_log(name) or proc.poll() is not None, 60, what="worker ready"
        )
        assert proc.poll() is None, self.worker_log(name)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker and its pool: no warm shutdown, nothing acked or requeued."""
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()

    def sql(self, query: str) -> list[tuple]:
        """Read the service's database directly (SQLite file)."""
        import sqlite3

        with sqlite3.connect(self.tmp / "db.sqlite3", timeout=30) as conn:
            return conn.execute(query).fetchall()

    def worker_log(self, name: str = "w1") -> str:
        path = self.tmp / f"worker-{name}.log"
        return path.read_text() if path.exists() else ""

    def pool_children(self, proc: subprocess.Popen) -> list[psutil.Process]:
        return psutil.Process(proc.pid).children(recursive=True)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
