"""Benchmarks: ``make bench`` = ``.venv/bin/python bench/run.py [--only NAME ...] [--quick] [--db DB]``.

Each benchmark runs in its own Python process (Django reads its settings once per process, and each
benchmark has its own database, broker and cache), prints a table and writes
``bench/results/<name>.json``. Exit status 1 when a benchmark failed or one of its invariant checks
did; performance goals are reported (MET/MISSED) but never fail the run: the machine is shared.

To add a benchmark: write ``run(ctx: BenchContext) -> BenchResult`` in a module under ``bench/``
(Django imports inside the function, after ``setup_django``) and register it in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    enrollments_load,
    page_size_curve,
    publish_receiver,
    publish_to_fresh,
    sweep_scale,
    sweep_strategies,
    sweep_sync,
    sweep_workers,
    walk_page_search,
)
from bench.common import (  # noqa: E402
    RESULTS_DIR,
    BenchContext,
    BenchResult,
    children_maxrss_mb,
    environment,
    print_result,
    self_maxrss_mb,
    write_result,
)

Benchmark = Callable[[BenchContext], BenchResult]

# name -> function. Sweeps of other sizes: sweep_sync.make(courses=..., page_size=...).
BENCHMARKS: dict[str, Benchmark] = {
    "publish_receiver": publish_receiver.run,
    "publish_to_fresh": publish_to_fresh.run,
    "sweep_sync_3200": sweep_sync.make(courses=3200, page_size=100, insert_between_pages=5),
    # The scale benchmarks (issue 4): PostgreSQL when it answers, else SQLite (--db forces one).
    "sweep_scale": sweep_scale.run,
    "sweep_workers": sweep_workers.run,
    "page_size_curve": page_size_curve.run,
    # The learners' enrollment API behind gunicorn on PostgreSQL (issue 11).
    "enrollments": enrollments_load.run,
    # Keys-batched vs walk + repair, chosen per sweep, against the baseline (issue 9): throttled,
    # drifting, a wide catalog, 100,000 courses on SQLite and PostgreSQL, the floor, 200/hour.
    "sweep_strategies": sweep_strategies.run,
    # What the walk's run-time page size settles at, by the catalog's cost per run (issue 9).
    "walk_page_search": walk_page_search.run,
}

CHILD_TIMEOUT = 900  # seconds per benchmark
CHILD_TIMEOUTS = {"sweep_strategies": 2400}  # the ones that take longer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not figures to quote")
    p.add_argument("--keep-tmp", action="store_true", help="keep each benchmark's temp dir (DB, logs)")
    p.add_argument(
        "--db",
        choices=("postgres", "sqlite"),
        help="database of the scale benchmarks (sweep_scale, sweep_workers, page_size_curve): default "
        "PostgreSQL (database catalog_bench on 127.0.0.1:5432) when it answers, else a SQLite file; "
        "sets BENCH_DB",
    )
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # one benchmark, here
    return p


def _command(args: argparse.Namespace, name: str) -> str:
    return (
        f".venv/bin/python bench/run.py --only {name}"
        + (" --quick" if args.quick else "")
        + (f" --db {args.db}" if args.db else "")
    )


def run_here(name: str, args: argparse.Namespace) -> int:
    """Run one benchmark in this process: table on stdout, JSON in bench/results/."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        env = environment()
        started = time.monotonic()
        result = BENCHMARKS[name](BenchContext(name=name, quick=args.quick, tmp=tmp))
        result.inputs.setdefault("quick", args.quick)
        result.summary["benchmark_wall_s"] = round(time.monotonic() - started, 1)
        # getrusage: this process's own peak, and the largest peak among its waited-for children
        # (the stand-in, a worker's main process; not a worker's pool children).
        result.summary["bench_process_maxrss_mb"] = self_maxrss_mb()
        result.summary["largest_child_maxrss_mb"] = children_maxrss_mb()
        env["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
        path = write_result(result, env, _command(args, name))
        print_result(result)
        print(f"  -> {path.relative_to(ROOT)} ({result.summary['benchmark_wall_s']} s)", flush=True)
        return 0 if result.ok else 1
    finally:
        if args.keep_tmp:
            print(f"  (temp dir kept: {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_child(cmd: list[str], timeout: float = CHILD_TIMEOUT) -> int:
    """Run one benchmark's process in its own process group, so that a timeout or Ctrl-C also
    stops what it started (stand-in, worker); -1 on timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if isinstance(exc, KeyboardInterrupt):
            raise
        return -1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.only or list(BENCHMARKS)
    if args.db:
        os.environ["BENCH_DB"] = args.db  # read by bench.lms in each benchmark's process
    if args.in_process:
        if len(names) != 1:
            sys.exit("--in-process runs exactly one benchmark")
        try:
            return run_here(names[0], args)
        except Exception:
            traceback.print_exc()
            return 2
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, str] = {}
    started = time.monotonic()
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--in-process", "--only", name]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--keep-tmp"] if args.keep_tmp else []
        cmd += ["--db", args.db] if args.db else []
        t0 = time.monotonic()
        rc = _run_child(cmd, CHILD_TIMEOUTS.get(name, CHILD_TIMEOUT))
        outcome[name] = {0: "ok", 1: "CHECK FAILED", -1: "TIMEOUT"}.get(rc, f"ERROR (exit {rc})")
        outcome[name] += f" ({time.monotonic() - t0:.0f} s)"
    print(f"\n== bench summary ({time.monotonic() - started:.0f} s)")
    for name, status in outcome.items():
        print(f"  {name:<20} {status}")
    return 0 if all(s.startswith("ok") for s in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
