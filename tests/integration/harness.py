"""Real processes for integration tests: a database, a broker, a cache, Celery workers, manage.py.

The test process serves the stand-in catalog over HTTP from a thread; real worker processes (and
manage.py subprocesses, as an operator would run them) share the database, the broker, the cache
and the stand-in's URL through the environment. A ``Service`` runs on one of the supported stacks:

- ``embedded``: the defaults on a laptop. A SQLite file, Django's database cache (table
  ``catalog_sync_cache``), kombu's SQLAlchemy transport on a SQLite file as the broker.
- ``redis-pg``: Redis as broker (db 15) and cache (db 14), PostgreSQL (a fresh database per Service).
- ``rabbitmq-pg``: RabbitMQ as broker (a fresh vhost per Service when ``rabbitmqctl`` can make one,
  else the default vhost with our three queues purged), Redis as cache (db 14), PostgreSQL.

Servers are found at 127.0.0.1 on TEST_REDIS_PORT (6379), TEST_PG_PORT (5432) and TEST_RABBIT_PORT
(5672); ``scripts/services.py ensure`` starts any that is silent.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

# A task's last line in a worker's log (Celery's own lines at INFO): it finished, one way or another.
_TASK_ENDED = re.compile(r"\] (succeeded in|retry: |raised unexpected|ignored)")

ROOT = Path(__file__).resolve().parents[2]
# The servers that `scripts/services.py ensure` answers for.
REDIS_URL = f"redis://127.0.0.1:{os.environ.get('TEST_REDIS_PORT', '6379')}"
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
RABBIT_PORT = int(os.environ.get("TEST_RABBIT_PORT", "5672"))
BROKER_DB, CACHE_DB = 15, 14
STACKS = ("embedded", "redis-pg", "rabbitmq-pg")
QUEUES = ("catalog.refresh", "catalog.sweep", "celery")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def pg_admin_url(dbname: str = "postgres") -> str:
    return f"postgresql://postgres@127.0.0.1:{PG_PORT}/{dbname}"


# Migrated databases of this session, by kind ("sqlite": a file path, "postgres": a database name).
_TEMPLATES: dict[str, str] = {}


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database in WAL mode (the backup API, not a file copy)."""
    import sqlite3

    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _drop_pg_database(name: str) -> None:
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Service:
    """One deployment of the service for a test: env, manage.py, workers, on one stack.

    ``redis_url`` points the Redis stacks at another Redis (the Redis-restart test starts its own).
    """

    def __init__(
        self,
        tmp: Path,
        standin: Any,
        *,
        coalesce_window: float = 1.0,
        lease_ttl: float = 600,
        stack: str = "redis-pg",
        redis_url: str | None = None,
    ) -> None:
        if stack not in STACKS:
            raise ValueError(f"unknown stack {stack!r}: one of {', '.join(STACKS)}")
        self.tmp = tmp
        self.standin = standin
        self.stack = stack
        self.redis_url = redis_url or REDIS_URL
        self.workers: list[subprocess.Popen] = []
        self.pg_db: str | None = None  # the PostgreSQL database of this Service (dropped by stop())
        self._pg_dropped = False
        self.vhost: str | None = None
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings.dev",
            "DJANGO_DEBUG": "0",
            "CATALOG_API_URL": standin.api_url,
            "CATALOG_OAUTH_URL": standin.oauth_url,
            "CATALOG_CLIENT_ID": standin.client_id,
            "CATALOG_CLIENT_SECRET": standin.client_secret,
            "CATALOG_PUBLISH_COALESCE_WINDOW": str(coalesce_window),
            "CATALOG_SWEEP_LEASE_TTL": str(max(1, round(lease_ttl))),
            "CATALOG_SYNC_VAR_DIR": str(tmp / "var"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("CACHE_URL", "CELERY_BROKER_URL", "DATABASE_URL"):
            env.pop(name, None)
        (tmp / "var").mkdir(parents=True, exist_ok=True)
        try:
            self.env = self._stack_env(env)
            if not self._from_template():
                # `migrate` alone, as every deployment runs it: it creates the database cache's
                # table too, so the embedded stack proves that nothing else is needed.
                self.manage("migrate", "--noinput")
                self._save_template()
        except BaseException:
            self.stop()  # no database or vhost left behind by a Service that never started
            raise

    def _stack_env(self, env: dict[str, str]) -> dict[str, str]:
        tmp, stack = self.tmp, self.stack
        if stack == "embedded":
            env["DATABASE_URL"] = f"sqlite:///{tmp / 'db.sqlite3'}"
            env["CELERY_BROKER_URL"] = f"sqla+sqlite:///{tmp / 'var' / 'broker.sqlite3'}"
        else:
            self.pg_db = self._create_pg_database()
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{PG_PORT}/{self.pg_db}"
            env["CACHE_URL"] = f"{self.redis_url}/{CACHE_DB}"
            redis.Redis.from_url(f"{self.redis_url}/{CACHE_DB}").flushdb()
            if stack == "redis-pg":
                env["CELERY_BROKER_URL"] = f"{self.redis_url}/{BROKER_DB}"
                # this Service's own keys on the shared database: a message left by another run,
                # or sent by a test run beside this one, is never delivered here (and no flush
                # here empties another run's queues); stop() deletes them
                self.broker_prefix = f"t{os.getpid()}-{uuid.uuid4().hex[:8]}:"
                env["CELERY_BROKER_KEY_PREFIX"] = self.broker_prefix
            else:
                env["CELERY_BROKER_URL"] = self._rabbit_broker_url()
        return env

    # --- stack setup -------------------------------------------------------------------------
    # `migrate` takes seconds per test; the first Service of a session on each kind of database
    # migrates, and keeps a copy that the next ones start from (a PostgreSQL template database, a
    # SQLite file): the same schema and initial rows, as `migrate` made them in this session.
    def _template_kind(self) -> str:
        return "sqlite" if self.stack == "embedded" else "postgres"

    def _save_template(self) -> None:
        kind = self._template_kind()
        if kind in _TEMPLATES:
            return
        if kind == "sqlite":
            folder = Path(tempfile.mkdtemp(prefix="cs_it_template_"))
            atexit.register(shutil.rmtree, folder, True)
            _sqlite_copy(self.tmp / "db.sqlite3", folder / "db.sqlite3")
            _TEMPLATES[kind] = str(folder / "db.sqlite3")
        else:
            import psycopg

            name = f"cs_it_tmpl_{secrets.token_hex(6)}"
            with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_db}"')
            atexit.register(_drop_pg_database, name)
            _TEMPLATES[kind] = name

    def _from_template(self) -> bool:
        template = _TEMPLATES.get(self._template_kind())
        if template is None:
            return False
        if self.stack == "embedded":
            _sqlite_copy(Path(template), self.tmp / "db.sqlite3")
            self.sql("delete from catalog_sync_cache")  # the database cache starts empty, like Redis's
        else:
            import psycopg

            with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{self.pg_db}"')
                conn.execute(f'CREATE DATABASE "{self.pg_db}" TEMPLATE "{template}"')
        return True

    @staticmethod
    def _create_pg_database() -> str:
        import psycopg

        name = f"cs_it_{secrets.token_hex(6)}"
        with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def _rabbit_broker_url(self) -> str:
        """A fresh vhost when rabbitmqctl can make one (nothing left from another test), else the
        default vhost with our queues purged."""
        rabbitmqctl = shutil.which("rabbitmqctl")
        if rabbitmqctl and RABBIT_PORT == 5672:
            vhost = f"cs_it_{secrets.token_hex(6)}"
            made = subprocess.run([rabbitmqctl, "add_vhost", vhost], capture_output=True, timeout=60)
            if made.returncode == 0:
                self.vhost = vhost
                subprocess.run(
                    [rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                    capture_output=True,
                    check=True,
                    timeout=60,
                )
                return f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}/{vhost}"
        url = f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}//"
        from kombu import Connection

        with Connection(url) as conn:
            channel = conn.channel()
            for queue in QUEUES:
                with contextlib.suppress(Exception):
                    channel.queue_purge(queue)
        return url

    # --- operator's commands -------------------------------------------------------------------
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

    # --- processes -----------------------------------------------------------------------------
    def start_worker(
        self, *, concurrency: int = 1, queues: str = ",".join(QUEUES), name: str = "w1"
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

    def start_process(self, args: list[str], *, name: str) -> subprocess.Popen:
        """Another long-running process of this deployment (``celery beat``, ...), logged to
        ``<name>.log`` and stopped with the workers."""
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 -- closed with the process
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker and its pool: no warm shutdown, nothing acked or requeued."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.wait()

    def sql(self, query: str, params: tuple | list = ()) -> list[tuple]:
        """Query the service's database directly (SQLite file or PostgreSQL), autocommit."""
        if self.stack != "embedded":
            import psycopg

            with psycopg.connect(pg_admin_url(self.pg_db), autocommit=True) as conn:
                cur = conn.execute(query.replace("?", "%s") if params else query, params or None)
                return cur.fetchall() if cur.description else []
        import sqlite3

        conn = sqlite3.connect(self.tmp / "db.sqlite3", timeout=30)
        try:
            with conn:
                cur = conn.execute(query, params)
                return cur.fetchall()
        finally:
            conn.close()

    def worker_log(self, name: str = "w1") -> str:
        path = self.tmp / f"worker-{name}.log"
        return path.read_text() if path.exists() else ""

    def settle(self, name: str = "w1", *, quiet: float = 1.5, timeout: float = 30) -> None:
        """Wait until worker ``name`` has finished every task it received, and nothing new reached
        it for ``quiet`` seconds. How a test shows that something did NOT happen (no fetch, no
        second task) without a blind sleep: ``quiet`` outlasts the embedded broker's 1 s polling
        interval, and a countdown or coalescing window shows up at once as a received task."""
        last = {"log": None, "since": time.monotonic()}

        def settled() -> bool:
            log = self.worker_log(name)
            if log != last["log"]:
                last.update(log=log, since=time.monotonic())
                return False
            received = log.count("] received")
            ended = len(_TASK_ENDED.findall(log))
            return ended >= received and time.monotonic() - last["since"] >= quiet

        wait_until(settled, timeout, interval=0.2, what=f"worker {name} to settle")

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def pool_children(self, proc: subprocess.Popen) -> list[psutil.Process]:
        return psutil.Process(proc.pid).children(recursive=True)

    def stop(self) -> None:
        """End the processes and drop what this Service made. The test is over: no warm shutdown
        (it waits for the embedded broker's polling and costs seconds per test)."""
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc)
        self.workers.clear()
        if self.pg_db and not self._pg_dropped:
            _drop_pg_database(self.pg_db)
            self._pg_dropped = True
        if getattr(self, "broker_prefix", None):
            broker = redis.Redis.from_url(f"{self.redis_url}/{BROKER_DB}")
            for key in broker.scan_iter(match=f"{self.broker_prefix}*", count=500):
                broker.delete(key)
            self.broker_prefix = None
        if self.vhost:
            subprocess.run(
                [shutil.which("rabbitmqctl") or "rabbitmqctl", "delete_vhost", self.vhost],
                capture_output=True,
                timeout=60,
            )
            self.vhost = None


def configure(**fields: Any) -> None:
    """In this process (the in-process integration tests): a new admin configuration row with short
    timeouts and few attempts, so that faults cost seconds."""
    from catalog.models import CatalogIntegration

    values = {"enabled": True, "page_attempts": 3, "connect_timeout": 0.5, "read_timeout": 2.0}
    CatalogIntegration.objects.create(**{**values, **fields})
