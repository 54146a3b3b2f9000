"""One sweep in a fresh process, for the scale benchmarks (``bench/lms.py`` runs it):

    python bench/sweep_child.py --out REPORT.json sweep [--page-size N] [--strategy auto|keys|walk]
    python bench/sweep_child.py --out REPORT.json baseline --page-size N [--sample-every K] [--paced]
    python bench/sweep_child.py --out REPORT.json floor --sizes JSON [--probe] [--repair-keys FILE]

``sweep`` is ``manage.py sync_catalog --no-progress [--page-size N] [--strategy S]`` through
``call_command`` (the in-process sweep, exactly as an operator runs it); its report has the
``SweepRun`` it left (strategy, catalog count, request estimates, walk pages and sizes, catalog
requests, counters) under ``sweep_run``. ``baseline`` is ``bench.baseline`` (Open edX's
``sync_course_runs`` algorithm) with the project's catalog client (``--paced``: its walk waits out
429s, see ``bench.baseline``). ``floor`` is the catalog side of a walk alone, with no Django and no
database: the same list pages (``--sizes``, a ``SweepRun.walk_sizes`` list of ``[page size,
pages]``) fetched and JSON-decoded with ``CatalogClient.list_page``, after the one-item count
probe (``--probe``), then the ``keys=`` fetch of ``--repair-keys`` (one key a line) with
``CatalogClient.get_course_runs``; the token request is timed too, as in the sweep. The
environment (database, cache, catalog URL) comes from the parent.

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
    s.add_argument("--strategy", choices=("auto", "keys", "walk"))
    b = sub.add_parser("baseline")
    b.add_argument("--page-size", type=int, required=True)
    b.add_argument("--sample-every", type=int, default=1)
    b.add_argument("--paced", action="store_true")
    f = sub.add_parser("floor")
    f.add_argument("--sizes", required=True, help="JSON list of [page size, pages]")
    f.add_argument("--probe", action="store_true")
    f.add_argument("--repair-keys", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "floor":
        return _floor_main(args)
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
        report["sweep_run"] = _sweep_run()
    report["cpu_s"] = round(time.process_time() - cpu0, 3)
    report["sql_total"] = sum(verbs.values())
    report["sql_by_verb"] = dict(verbs)
    report["sql_by_kind"] = dict(kinds)
    if args.mode == "sweep":
        report["sql_per_page"] = _per_page(report["sql_total"], report["sweep_run"])
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
    if args.strategy:
        cmd += ["--strategy", args.strategy]
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
    fields = (
        "page_size",
        "max_url_length",
        "rate_limit_per_second",
        "sweep_strategy",
        "walk_page_budget",
        "walk_page_size_ceiling",
    )
    return {name: getattr(config, name, None) for name in fields}


# What the report keeps of the SweepRun the sweep left (the ones this code has, by name).
SWEEP_RUN_FIELDS = (
    "id",
    "status",
    "trigger",
    "strategy",
    "strategy_reason",
    "catalog_count",
    "estimate_keys",
    "estimate_walk",
    "walk_pages",
    "walk_sizes",
    "walk_done",
    "walk_error",
    "catalog_requests",
    "chunks_total",
    "chunks_done",
    "resumed",
    "error",
)


def _sweep_run() -> dict:
    """The newest ``SweepRun``: its strategy record and counters (JSON-able values only)."""
    from catalog.models import SweepRun

    run = SweepRun.objects.order_by("-pk").first()
    if run is None:
        return {}
    out = {}
    for f in run._meta.concrete_fields:
        if f.name in SWEEP_RUN_FIELDS or f.name.startswith(("courses_", "catalog_")):
            value = getattr(run, f.attname)
            out[f.name] = (
                value if isinstance(value, int | float | str | bool | list | dict | None) else str(value)
            )
    return out


def _per_page(sql_total: int, run: dict) -> float | None:
    """SQL statements per catalog page: walk pages plus repair chunks for a walk, chunks for keys."""
    pages = (run.get("chunks_done") or 0) + (run.get("walk_pages") or 0)
    return round(sql_total / pages, 2) if pages else None


def _floor_main(args: argparse.Namespace) -> int:
    """The ``floor`` mode: no Django at all (see the module docstring)."""
    from catalog_client.client import CatalogClient, ClientConfig

    sizes = [(int(size), int(pages)) for size, pages in json.loads(args.sizes)]
    repair = []
    if args.repair_keys:
        repair = [line.strip() for line in args.repair_keys.read_text().splitlines() if line.strip()]
    report: dict = {"mode": "floor", "pid": os.getpid(), "sizes": sizes, "repair_keys": len(repair)}
    status = 0
    try:
        config = ClientConfig(
            api_url=os.environ["CATALOG_API_URL"],
            oauth_url=os.environ["CATALOG_OAUTH_URL"],
            client_id=os.environ["CATALOG_CLIENT_ID"],
            client_secret=os.environ["CATALOG_CLIENT_SECRET"],
            read_timeout=120.0,
        )
        with CatalogClient(config) as client:
            t0 = time.perf_counter()
            if args.probe:
                report["catalog_count"] = client.list_page(1, 1).count
            t1 = time.perf_counter()
            offset = pages = items = 0
            for size, n in sizes:
                for _ in range(n):
                    page = offset // size + 1
                    listed = client.list_page(page, size)
                    pages += 1
                    items += listed.answered
                    offset = (page - 1) * size + listed.answered
            t2 = time.perf_counter()
            found = client.get_course_runs(repair) if repair else {}
            t3 = time.perf_counter()
            report.update(
                probe_s=round(t1 - t0, 3),
                walk_s=round(t2 - t1, 3),
                repair_s=round(t3 - t2, 3),
                wall_s=round(t3 - t0, 3),
                pages=pages,
                items=items,
                repair_found=len(found),
                client_requests=client.requests_made,
            )
    except BaseException as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
        status = 1
    report["peak_rss_mb"] = _status_mb("VmHWM")
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return status


def _baseline(args: argparse.Namespace) -> dict:
    from bench.baseline import run_baseline
    from catalog.connection import build_client

    with build_client() as client:
        metrics = run_baseline(
            client, page_size=args.page_size, sample_every=args.sample_every, paced=args.paced
        )
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
