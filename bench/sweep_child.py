"""One sweep in a fresh process, for the scale benchmarks (``bench/lms.py`` runs it):

    python bench/sweep_child.py --out REPORT.json sweep [--page-size N]
    python bench/sweep_child.py --out REPORT.json baseline --page-size N [--sample-every K]

``sweep`` is ``manage.py sync_catalog --no-progress [--page-size N]`` through ``call_command`` (the
in-process sweep, exactly as an operator runs it); ``baseline`` is ``bench.baseline`` (Open edX's
``sync_course_runs`` algorithm) with the project's catalog client. The environment (database,
cache, catalog URL) comes from the parent.

Every SQL statement Django sends is counted by a ``connection.execute_wrapper`` installed around
the work (by its first word: SELECT, UPDATE, SAVEPOINT...; ``BEGIN``/``COMMIT`` that the driver
sends on its own are not statements Django executes and are not counted). The report (JSON) has
the wall and CPU time of the work alone, the statement counts, the peak RSS of this process
(``VmHWM`` of ``/proc/self/status``: the whole life of the process, Django's start included) and its
RSS once Django is set up, before the work. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries
the parent's high-water mark over the exec into it (subprocess starts the child with vfork), so a
child of a 190 MB parent reports 190 MB whatever it does; it is kept in the report for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from collections import Counter
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB) in MB: ``VmRSS`` now, ``VmHWM`` the peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _table_group(sql: str) -> str:
    """What a statement is about: the overview table (the sync itself), the sweep's bookkeeping
    (``SweepRun``/``SweepChunk``), or anything else (configuration, switches, transactions)."""
    if "overviews_courseoverview" in sql:
        return "overview"
    if "catalog_sweep" in sql:
        return "sweep"
    return "other"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/sweep_child.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--page-size", type=int)
    b = sub.add_parser("baseline")
    b.add_argument("--page-size", type=int, required=True)
    b.add_argument("--sample-every", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    import django

    django.setup()
    from django.db import connection

    verbs: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    def count(execute, sql, params, many, context):
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        verbs[verb] += 1
        kinds[f"{verb} {_table_group(sql)}"] += 1
        return execute(sql, params, many, context)

    report: dict = {"mode": args.mode, "pid": os.getpid(), "rss_after_setup_mb": _status_mb("VmRSS")}
    status = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        with connection.execute_wrapper(count):
            if args.mode == "sweep":
                report.update(_sweep(args))
            else:
                report.update(_baseline(args))
    except BaseException as exc:  # reported to the parent, which decides
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
        report["summary_line"] = getattr(args, "summary_line", "")
        report["complete"] = False
        status = 1
    report["wall_s"] = round(time.perf_counter() - t0, 3)
    if args.mode == "sweep":
        report["config"] = _config()
    report["cpu_s"] = round(time.process_time() - cpu0, 3)
    report["sql_total"] = sum(verbs.values())
    report["sql_by_verb"] = dict(verbs)
    report["sql_by_kind"] = dict(kinds)
    report["rss_end_mb"] = _status_mb("VmRSS")
    report["peak_rss_mb"] = _status_mb("VmHWM")
    # Not the figure to quote: Linux folds the parent's high-water mark into ru_maxrss at exec.
    report["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return status


def _sweep(args: argparse.Namespace) -> dict:
    from django.core.management import call_command

    out = StringIO()
    cmd = ["sync_catalog", "--no-progress"]
    if args.page_size:
        cmd += ["--page-size", str(args.page_size)]
    try:
        call_command(*cmd, stdout=out)
    finally:
        lines = out.getvalue().strip().splitlines()
        args.summary_line = lines[-1] if lines else ""
    return {
        "summary_line": args.summary_line,
        "complete": args.summary_line.startswith("sync_catalog complete"),
    }


def _config() -> dict:
    from catalog.models import CatalogIntegration

    config = CatalogIntegration.current()
    return {"page_size": config.page_size, "max_url_length": config.max_url_length}


def _baseline(args: argparse.Namespace) -> dict:
    from bench.baseline import run_baseline
    from catalog.connection import build_client

    with build_client() as client:
        metrics = run_baseline(client, page_size=args.page_size, sample_every=args.sample_every)
        requests, tokens = client.requests_made, client.tokens_fetched
    return {
        "metrics": metrics.as_dict(),
        "sample_every": args.sample_every,
        "client_requests": requests,
        "client_tokens": tokens,
        "complete": True,
    }


if __name__ == "__main__":
    sys.exit(main())
