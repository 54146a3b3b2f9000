"""What every benchmark shares: timing and statistics, the environment record, result files and
tables, the stand-in catalog and a Celery worker as subprocesses, peak RSS of a child process, and a
Django setup on a SQLite file under a temporary directory.

Nothing here imports Django at module level: a benchmark first starts what it needs (the stand-in
gives it a URL), then calls ``setup_django(env)`` with the environment its processes share.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# Redis databases reserved for benchmarks (flushed at the start of each benchmark that uses them).
# 10: in-process benches (broker and cache); 11, 12: broker and cache of a bench with a worker.
REDIS_DB_INPROC, REDIS_DB_BROKER, REDIS_DB_CACHE = 10, 11, 12

now_ns = time.perf_counter_ns


# --- statistics -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """n, min, median, p95, max, mean of ``values`` (rounded)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


def ratio(a: float, b: float, digits: int = 2) -> float | None:
    return round(a / b, digits) if b else None


# --- results ----------------------------------------------------------------------------------------


@dataclass
class BenchContext:
    """What the runner hands a benchmark: ``quick`` (smaller sizes) and a private temp dir."""

    name: str
    quick: bool
    tmp: Path


@dataclass
class BenchResult:
    """What a benchmark returns. ``checks`` are invariants (a failed one makes the run exit 1);
    ``goals`` are performance targets, reported but never failing (the machine is noisy)."""

    name: str
    description: str
    inputs: dict[str, Any]
    headers: list[str]
    rows: list[list[Any]]
    samples: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def environment() -> dict[str, Any]:
    """Versions, machine and date, recorded with every result."""
    import celery
    import django
    import kombu
    import redis

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(Exception):
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    with contextlib.suppress(Exception):
        info["redis_server"] = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def write_result(result: BenchResult, env: dict[str, Any], command: str) -> Path:
    """``bench/results/<name>.json`` (written atomically)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result.name}.json"
    doc = {
        "name": result.name,
        "description": result.description,
        "command": command,
        "environment": env,
        "inputs": result.inputs,
        "summary": result.summary,
        "checks": result.checks,
        "goals": result.goals,
        "notes": result.notes,
        "table": {"headers": result.headers, "rows": result.rows},
        "extra_tables": [{"title": t, "headers": h, "rows": r} for t, h, r in result.extra_tables],
        "samples": result.samples,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(doc), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def print_result(result: BenchResult) -> None:
    print(f"\n== {result.name}: {result.description}", flush=True)
    print(format_table(result.headers, result.rows))
    for title, headers, rows in result.extra_tables:
        print(f"\n{title}")
        print(format_table(headers, rows))
    for name, passed in result.checks.items():
        print(f"  check {'PASS' if passed else 'FAIL'}: {name}")
    for name, met in result.goals.items():
        print(f"  goal  {'MET ' if met else 'MISSED'}: {name}")
    for note in result.notes:
        print(f"  note: {note}")
    sys.stdout.flush()


# --- processes --------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class RssPoller:
    """Peak resident memory of a process tree (the process and its children, summed), sampled
    every ``interval`` seconds from a daemon thread with psutil."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_total = 0
        self.peak_by_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> RssPoller:
        self._thread.start()
        return self

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.peak_by_pid[proc.pid] = max(self.peak_by_pid.get(proc.pid, 0), rss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self.sample()
        self._stop.set()
        self._thread.join(timeout=2)
        return self.report()

    def report(self) -> dict[str, float]:
        return {
            "peak_tree_mb": round(self.peak_total / 2**20, 1),
            "peak_single_process_mb": round(max(self.peak_by_pid.values(), default=0) / 2**20, 1),
        }


def children_maxrss_mb() -> float:
    """Largest peak RSS among the waited-for children of this process (getrusage; Linux: kB)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def self_maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _terminate(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process, then SIGKILL it and its own children if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.wait()


class StandinProcess:
    """``python -m standin`` as a subprocess; ready when it writes ``--ready-file``. Control routes
    (faults, stats, runs) are called over HTTP with urllib (never through ``requests``)."""

    def __init__(
        self,
        tmp: Path,
        *,
        courses: int,
        seed: int = 1,
        latency_ms: float = 0.0,
        latency_per_item_ms: float = 0.0,
        insert_between_pages: int = 0,
        delete_between_pages: int = 0,
        throttle_per_window: int = 0,
        throttle_window_s: float = 3600.0,
        write_lms_records: Path | None = None,
        name: str = "standin",
    ) -> None:
        self.tmp = tmp
        self.ready_file = tmp / f"{name}.ready"
        self.log_path = tmp / f"{name}.log"
        self.args = [
            PYTHON,
            "-m",
            "standin",
            "--port",
            "0",
            "--courses",
            str(courses),
            "--seed",
            str(seed),
            "--latency-ms",
            str(latency_ms),
            "--latency-per-item-ms",
            str(latency_per_item_ms),
            "--insert-between-pages",
            str(insert_between_pages),
            "--delete-between-pages",
            str(delete_between_pages),
            "--throttle-per-window",
            str(throttle_per_window),
            "--throttle-window-s",
            str(throttle_window_s),
            "--ready-file",
            str(self.ready_file),
        ]
        if write_lms_records is not None:
            self.args += ["--write-lms-records", str(write_lms_records)]
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.rss: RssPoller | None = None

    def start(self, timeout: float = 60) -> StandinProcess:
        self.ready_file.unlink(missing_ok=True)
        log = open(self.log_path, "w")  # noqa: SIM115 -- lives as long as the process
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_until(
            lambda: self.ready_file.exists() or self.proc.poll() is not None,
            timeout,
            what="stand-in ready file",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"stand-in exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        self.base_url = self.ready_file.read_text().strip()
        self.rss = RssPoller(self.proc.pid, interval=0.2).start()
        return self

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None:
            _terminate(self.proc)

    def __enter__(self) -> StandinProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return self.base_url + "api/v1/"

    @property
    def oauth_url(self) -> str:
        return self.base_url + "oauth2/access_token"

    def control(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(  # noqa: S310 -- our own local http:// URL
            self.base_url + "_standin/" + route,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 -- our own local http:// URL
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "stats")

    def reset_stats(self) -> None:
        self.control("POST", "stats/reset")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self.control("POST", "faults", faults)

    def runs(self) -> list[dict[str, Any]]:
        """Every run as stored now, in list order (no tracking parameters)."""
        return self.control("GET", "runs")["runs"]

    def upsert(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        return self.control("POST", "runs", {"upsert": runs})

    def cpu_seconds(self) -> float:
        if self.proc is None:
            return 0.0
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system


def service_env(
    tmp: Path,
    *,
    broker_db: int,
    cache_db: int,
    standin: StandinProcess | None = None,
    coalesce_window: float = 1.0,
    log_level: str = "WARNING",
) -> dict[str, str]:
    """The environment the bench process and its worker share: a SQLite file under ``tmp``,
    Redis broker and cache, the stand-in's URL (a dead local port when there is none)."""
    api_url = standin.api_url if standin else "http://127.0.0.1:9/api/v1/"
    oauth_url = standin.oauth_url if standin else "http://127.0.0.1:9/oauth2/access_token"
    return {
        "DJANGO_SETTINGS_MODULE": "settings.dev",
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "CELERY_BROKER_URL": f"{REDIS_URL}/{broker_db}",
        "CACHE_URL": f"{REDIS_URL}/{cache_db}",
        "CATALOG_API_URL": api_url,
        "CATALOG_OAUTH_URL": oauth_url,
        "CATALOG_CLIENT_ID": "standin-client",
        "CATALOG_CLIENT_SECRET": "standin-secret",  # the stand-in's public test credential
        "CATALOG_PUBLISH_COALESCE_WINDOW": str(coalesce_window),
        "CATALOG_SYNC_VAR_DIR": str(tmp / "var"),
        "LOG_LEVEL": log_level,
        "PYTHONUNBUFFERED": "1",
    }


def flush_redis(*dbs: int) -> None:
    import redis

    for db in dbs:
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


_django_env: dict[str, str] | None = None


def setup_django(env: dict[str, str]) -> None:
    """``django.setup()`` in this process with ``env``, then migrations on the (new) SQLite file.
    Once per process: settings are read at setup, which is why the runner gives each benchmark
    its own process."""
    global _django_env
    if _django_env is not None:
        if env != _django_env:
            raise RuntimeError("Django is already set up in this process with another environment")
        return
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    _django_env = dict(env)


class Worker:
    """``celery -A tasks worker`` (prefork) as a subprocess with its log in ``tmp``."""

    def __init__(self, tmp: Path, env: dict[str, str], *, concurrency: int = 1, name: str = "bench") -> None:
        self.log_path = tmp / f"worker-{name}.log"
        self.env = {**os.environ, **env, "LOG_LEVEL": "INFO"}
        self.args = [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            "catalog.refresh,catalog.sweep,celery",
            "-c",
            str(concurrency),
            "-P",
            "prefork",
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ]
        self.proc: subprocess.Popen | None = None
        self.rss: RssPoller | None = None

    def start(self, timeout: float = 60) -> Worker:
        log = open(self.log_path, "w")  # noqa: SIM115 -- lives as long as the process
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(
            lambda: " ready." in self.log() or self.proc.poll() is not None,
            timeout,
            interval=0.1,
            what="worker ready",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited {self.proc.returncode}: {self.log()[-3000:]}")
        self.rss = RssPoller(self.proc.pid, interval=0.1).start()
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> dict[str, float]:
        report = self.rss.stop() if self.rss is not None else {}
        if self.proc is not None:
            _terminate(self.proc)
        return report

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def counting(owner: Any, names: Sequence[str], counts: dict[str, int]) -> Iterator[dict[str, int]]:
    """Patch methods ``names`` of class ``owner`` to count their calls into ``counts`` (and still
    call through); restored on exit."""
    originals = {name: getattr(owner, name) for name in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in originals.items():
        setattr(owner, name, wrap(name, fn))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(owner, name, fn)
