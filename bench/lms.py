"""What the scale benchmarks (``sweep_scale``, ``sweep_workers``, ``page_size_curve``) share: the LMS
database, the import of the stand-in's LMS records, the reset of the catalog-owned fields, and one
sweep (ours or the baseline) run in a fresh subprocess (``bench/sweep_child.py``) that counts its SQL
statements and reports its own peak RSS.

The database is PostgreSQL (database ``catalog_bench`` on 127.0.0.1:5432, dropped and created anew
by each benchmark) when it answers, else a SQLite file in the benchmark's temp dir.
``bench/run.py --db sqlite|postgres`` (environment ``BENCH_DB``) forces one.

Like ``bench.common``, nothing here imports Django at module level.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, StandinProcess, now_ns, service_env

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"
PG_BENCH_DB = "catalog_bench"
PG_BENCH_URL = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{PG_BENCH_DB}"
CHILD = ROOT / "bench" / "sweep_child.py"

# The catalog-owned fields and the sync metadata as a fresh import leaves them.
RESET_VALUES: dict[str, Any] = {
    "marketing_url": None,
    "eligible_for_financial_aid": True,
    "language": None,
    "catalog_status": "never",
    "catalog_synced_at": None,
    "catalog_error": "",
}


def postgres_answers(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=timeout):
            return True
    except OSError:
        return False


def chosen_db() -> str:
    """``postgres`` or ``sqlite``: ``BENCH_DB`` if set, else PostgreSQL when it answers."""
    wanted = os.environ.get("BENCH_DB", "").strip().lower()
    if wanted in ("postgres", "sqlite"):
        return wanted
    if wanted:
        raise ValueError(f"BENCH_DB={wanted!r}: use postgres or sqlite")
    return "postgres" if postgres_answers() else "sqlite"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def recreate_pg_database(name: str = PG_BENCH_DB) -> None:
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {name}")


def drop_pg_database(name: str = PG_BENCH_DB) -> None:
    from django.db import connections

    connections.close_all()
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def bench_env(
    tmp: Path,
    db: str,
    *,
    broker_db: int,
    cache_db: int,
    standin: StandinProcess | None,
    pg_name: str = PG_BENCH_DB,
) -> dict[str, str]:
    """``bench.common.service_env`` on the chosen database (a new, empty one; ``pg_name``: a
    PostgreSQL database of its own, for a benchmark that must not share ``catalog_bench``)."""
    env = service_env(tmp, broker_db=broker_db, cache_db=cache_db, standin=standin)
    if db == "postgres":
        recreate_pg_database(pg_name)
        env["DATABASE_URL"] = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{pg_name}"
    return env


def database_label(db: str, pg_name: str = PG_BENCH_DB) -> str:
    if db == "postgres":
        return f"PostgreSQL {_pg_version()} (database {pg_name}, 127.0.0.1)"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} file (temp dir)"


def _pg_version() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]


def import_records(path: Path, *, method: str = "import_courses") -> dict[str, Any]:
    """The stand-in's LMS records into the overview table. ``import_courses``: the management
    command (validates every record, in_bulk + bulk_create per 1,000); ``bulk_create``: the same
    rows created directly, 2,000 a statement (for the 100,000-course set, where it is faster)."""
    from io import StringIO

    from django.core.management import call_command
    from django.db import transaction

    from overviews.models import CourseOverview
    from overviews.records import parse_course_record

    started = now_ns()
    if method == "import_courses":
        call_command("import_courses", str(path), stdout=StringIO())
    else:
        rows = []
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                if line.strip():
                    key, content = parse_course_record(json.loads(line))
                    rows.append(CourseOverview(id=key, **content))
        with transaction.atomic():
            CourseOverview.objects.bulk_create(rows, batch_size=2000)
    return {
        "method": method,
        "seconds": round((now_ns() - started) / 1e9, 2),
        "overviews": CourseOverview.objects.count(),
    }


def reset_catalog_fields() -> float:
    """Every overview back to 'never synced' (catalog-owned fields cleared): the next sweep, ours or
    the baseline, has everything to write. Returns the seconds it took."""
    from overviews.models import CourseOverview

    started = now_ns()
    CourseOverview.objects.update(**RESET_VALUES)
    return round((now_ns() - started) / 1e9, 2)


def clear_overviews() -> None:
    """Empty the LMS side and the sweep history (between sizes in one benchmark)."""
    from catalog.models import SweepChunk, SweepRun
    from overviews.models import CourseOverview

    SweepChunk.objects.all().delete()
    SweepRun.objects.all().delete()
    CourseOverview.objects.all().delete()


def run_child(
    tmp: Path, env: dict[str, str], mode: str, *args: str, timeout: float = 900, label: str = ""
) -> dict[str, Any]:
    """Run ``bench/sweep_child.py MODE ARGS`` in a fresh process; its JSON report, plus the wall
    time of the whole process (interpreter and Django start included) as ``process_wall_s``."""
    out = tmp / f"child-{label or mode}-{time.monotonic_ns()}.json"
    log = tmp / f"child-{label or mode}.log"
    cmd = [PYTHON, str(CHILD), "--out", str(out), mode, *args]
    started = now_ns()
    with open(log, "a") as log_file:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    wall = (now_ns() - started) / 1e9
    if not out.exists():
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{mode} child exited {proc.returncode} without a report: {tail}")
    report = json.loads(out.read_text())
    report["process_wall_s"] = round(wall, 2)
    report["exit_code"] = proc.returncode
    return report


def set_config(**fields: Any) -> None:
    """A new ``CatalogIntegration`` row (as the admin saves one): the current values, ``fields``
    changed, the integration enabled."""
    from catalog.models import CatalogIntegration

    current = CatalogIntegration.current()
    values = {
        f.name: getattr(current, f.name)
        for f in CatalogIntegration._meta.concrete_fields
        if f.name not in ("id", "change_date", "changed_by")
    }
    values.update(enabled=True, **fields)
    CatalogIntegration.objects.create(**values)
