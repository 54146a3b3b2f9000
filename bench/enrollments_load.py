"""The learners' enrollment API under load, behind the production WSGI server (issue 11).

gunicorn (``gunicorn.conf.py``: 2 sync workers, the collector frozen after start-up) serves
``settings.production`` on a fresh PostgreSQL database (``catalog_bench_enrollments``, created
and dropped here) on loopback. A client of our own (``http.client``, one connection per request, as
gunicorn's sync workers close each one) asks, with a DRF token:

- the full list of a user with 50 and with 500 enrollments, and a default page (10) of the 500;
- at one client: latency p50 / p95 and the server's own time (gunicorn's access log, ``%(D)s``);
- at 10 concurrent clients (threads): p95 and throughput;
- each in ``ROUNDS`` interleaved rounds, reported as the median of the rounds;
- the 500 list again with ``WEB_GC_FREEZE=0`` (the collector not frozen), to show the tail it adds.

In-process (Django's test client, no HTTP): the SQL count of each list (50, 500, 2,000: the same)
and the time of the 2,000 list. Every phase is bounded in requests and in seconds.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shlex
import socket
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REDIS_DB_BROKER,
    REDIS_DB_CACHE,
    REDIS_URL,
    ROOT,
    BenchContext,
    BenchResult,
    _terminate,
    percentile,
    wait_until,
)
from bench.lms import postgres_answers

PG = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "catalog_bench_enrollments"
HOST = "127.0.0.1"
LMS_ROOT_URL = "https://lms.example.com"
SIZES = (50, 500, 2000)  # users with this many active enrollments (2,000: in-process only)
PAGE_SIZE = 10  # api.views.ENROLLMENTS_PAGE_SIZE, the default page
CLIENTS = 10
PHASE_DEADLINE_S = 60.0  # no phase runs longer, whatever its request count

# name, user's enrollments, query string
SCENARIOS = (("list 50", 50, ""), ("list 500", 500, ""), ("page of 500", 500, "page=1"))


def _env(tmp: Path) -> dict[str, str]:
    """``settings.production`` with throwaway values: the catalog, broker and cache are never used
    by this view (nothing here reaches them)."""
    return {
        "DJANGO_SETTINGS_MODULE": "settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": f"{HOST},testserver",
        "DATABASE_URL": f"{PG}/{DB_NAME}".replace("postgresql://", "postgres://"),
        "CELERY_BROKER_URL": f"{REDIS_URL}/{REDIS_DB_BROKER}",
        "CACHE_URL": f"{REDIS_URL}/{REDIS_DB_CACHE}",
        "CATALOG_API_URL": "http://127.0.0.1:9/api/v1/",
        "CATALOG_OAUTH_URL": "http://127.0.0.1:9/oauth2/access_token",
        "CATALOG_CLIENT_ID": "bench",
        "CATALOG_CLIENT_SECRET": secrets.token_urlsafe(30),
        "LMS_ROOT_URL": LMS_ROOT_URL,
        "CATALOG_SYNC_VAR_DIR": str(tmp / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
        "LOG_LEVEL": "WARNING",
    }


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _seed() -> dict[int, str]:
    """Users ``u<n>`` with n active enrollments (and one inactive each), courses with realistic
    field sizes, two thirds with a marketing URL; returns each size's API token."""
    from django.contrib.auth import get_user_model
    from opaque_keys.edx.keys import CourseKey
    from rest_framework.authtoken.models import Token

    from enrollments.models import CourseEnrollment
    from overviews.models import CourseOverview

    t0 = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
    n_courses = max(SIZES) + 1
    blurb = "A course about the things that matter in this field, taught by people who do them. " * 4
    CourseOverview.objects.bulk_create(
        CourseOverview(
            id=CourseKey.from_string(f"course-v1:BenchX+C{i:05d}+2025_T1"),
            display_name=f"Bench course number {i}: an introduction",
            org="BenchX",
            number=f"C{i:05d}",
            run="2025_T1",
            start=t0 + timedelta(days=i % 365, microseconds=i),
            end=t0 + timedelta(days=400 + i % 365),
            enrollment_start=t0 - timedelta(days=30),
            enrollment_end=t0 + timedelta(days=60 + i % 90),
            self_paced=i % 2 == 0,
            short_description=blurb[: 200 + i % 140],
            course_image_url=f"/asset-v1:BenchX+C{i:05d}+2025_T1+type@asset+block@course_image.jpg",
            marketing_url=f"https://www.example.com/course/bench-course-{i}" if i % 3 else None,
            language="en",
            catalog_status="ok",
            catalog_synced_at=t0,
            catalog_checked_at=t0,
            catalog_attempted_at=t0,
        )
        for i in range(n_courses)
    )
    keys = list(CourseOverview.objects.order_by("id").values_list("id", flat=True))
    users = get_user_model().objects
    tokens = {}
    for size in SIZES:
        user = users.create_user(f"u{size}")
        rows = [
            CourseEnrollment(user=user, course_id=keys[i], mode="verified" if i % 4 == 0 else "audit")
            for i in range(size + 1)
        ]
        rows[-1].is_active = False
        made = CourseEnrollment.objects.bulk_create(rows)
        for i, row in enumerate(made):
            row.created = t0 + timedelta(minutes=i, microseconds=i)
        CourseEnrollment.objects.bulk_update(made, ["created"], batch_size=1000)
        tokens[size] = Token.objects.create(user=user).key
    return tokens


def _path(size: int, query: str) -> str:
    return f"/api/mobile/v1/users/u{size}/course_enrollments/" + (f"?{query}" if query else "")


def _in_process(tokens: dict[int, str]) -> dict[str, Any]:
    """SQL count and body of each list (and of a default page) through Django, without HTTP;
    the time of the 2,000 list."""
    import json

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    out: dict[str, Any] = {}
    for size in SIZES:
        client = Client(HTTP_AUTHORIZATION=f"Token {tokens[size]}")
        for label, query, expected in (("list", "", size), ("page", "page=1", min(size, PAGE_SIZE))):
            with CaptureQueriesContext(connection) as queries:
                response = client.get(_path(size, query))
            body = json.loads(response.content)
            items = body if isinstance(body, list) else body["results"]
            out[f"{label} {size}"] = {
                "status": response.status_code,
                "items": len(items),
                "items_ok": len(items) == expected,
                "sql": len(queries),
                "body_bytes": len(response.content),
                "about_fallbacks": sum(1 for i in items if i["course"]["marketing_url"] is None),
                **_timed(client, _path(size, query)),
            }
    return out


def _before_and_after(n: int = 20) -> list[list[Any]]:
    """CPU of the list's own work (query, rows, JSON; no HTTP, no authentication) the way it was
    before issue 11 (model instances through DRF's field-by-field serializer and JSON renderer)
    and now, on the same rows in this process: a comparison the shared machine's load cannot
    skew."""
    from django.contrib.auth import get_user_model
    from django.db import reset_queries
    from rest_framework import serializers
    from rest_framework.renderers import JSONRenderer

    from api.serializers import course_about_base, enrollment_items, render_json
    from enrollments.models import CourseEnrollment, listed_enrollments
    from overviews.models import CATALOG_FIELDS, CONTENT_FIELDS, CourseOverview

    class Course(serializers.ModelSerializer):
        id = serializers.CharField(read_only=True)

        class Meta:
            model = CourseOverview
            fields = ("id", *CONTENT_FIELDS, *CATALOG_FIELDS)

    class Enrollment(serializers.ModelSerializer):
        course = Course(read_only=True)

        class Meta:
            model = CourseEnrollment
            fields = ("created", "mode", "is_active", "course")

    about = course_about_base(LMS_ROOT_URL)
    ways = {
        "before: instances + DRF serializer": lambda user: JSONRenderer().render(
            Enrollment(CourseEnrollment.objects.active_for(user), many=True).data
        ),
        "now: tuples + one-pass dicts + orjson": lambda user: render_json(
            enrollment_items(listed_enrollments(user), about)
        ),
    }
    rows = []
    for size in SIZES:
        user = get_user_model().objects.get(username=f"u{size}")
        row: list[Any] = [size]
        for build in ways.values():
            build(user)
            cpu = []
            for _ in range(max(5, n * 50 // size)):
                c = time.process_time()
                build(user)
                cpu.append((time.process_time() - c) * 1000)
                reset_queries()
            row.append(round(statistics.median(cpu), 2))
        row.append(round(row[1] / row[2], 1))
        rows.append(row)
    return rows


def _gc_tail(token: str, n: int) -> list[list[Any]]:
    """The 500 list ``n`` times through Django in this process, the collector as a fresh worker
    has it and then frozen (as ``gunicorn.conf.py`` does): each request's CPU, and the full
    (generation 2) collections that ran and how long the longest took. In CPU time, so that the
    shared machine's load does not decide the comparison."""
    import gc

    from django.test import Client
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 -- as gunicorn.conf.py's post_worker_init
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    path = _path(500, "")
    full: list[float] = []
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.process_time()
        else:
            full.append((time.process_time() - started[0]) * 1000)

    rows = []
    gc.callbacks.append(watch)
    try:
        for label, freeze in (("not frozen", False), ("frozen (gunicorn.conf.py)", True)):
            gc.unfreeze()
            gc.collect()
            if freeze:
                gc.freeze()
            tracked = len(gc.get_objects())
            for _ in range(10):
                client.get(path)
            full.clear()
            cpu = []
            for _ in range(n):
                c = time.process_time()
                client.get(path)
                cpu.append((time.process_time() - c) * 1000)
            rows.append(
                [
                    label,
                    tracked,
                    n,
                    round(percentile(cpu, 50), 2),
                    round(percentile(cpu, 95), 2),
                    round(percentile(cpu, 99), 2),
                    round(max(cpu), 2),
                    len(full),
                    round(max(full), 2) if full else None,
                ]
            )
    finally:
        gc.callbacks.remove(watch)
        gc.unfreeze()
    return rows


def _timed(client, path: str, n: int = 30) -> dict[str, float]:
    """Median wall and CPU time of the request through Django in this process (no HTTP, no server):
    the CPU figure is what a request costs whatever else the shared machine is doing."""
    for _ in range(5):
        client.get(path)
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        client.get(path)
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return {
        "in_process_ms_p50": round(statistics.median(wall), 2),
        "cpu_ms_p50": round(statistics.median(cpu), 2),
    }


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py wsgi:application`` with 2 sync workers on a free loopback port;
    its access log records each request's own time (microseconds) for the server-time figures."""

    def __init__(self, tmp: Path, env: dict[str, str], *, gc_freeze: bool) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.log = tmp / f"access-{'freeze' if gc_freeze else 'nofreeze'}.log"
        self.env = {
            **os.environ,
            **env,
            "WEB_ADDRESS": f"{HOST}:{self.port}",
            "WEB_CONCURRENCY": "2",
            "WEB_THREADS": "1",
            "WEB_GC_FREEZE": "1" if gc_freeze else "0",
            "WEB_ACCESS_LOG": str(self.log),
            "WEB_LOG_LEVEL": "warning",
            "GUNICORN_CMD_ARGS": "--access-logformat " + shlex.quote("%(D)s %(s)s %(U)s?%(q)s"),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, token: str) -> Gunicorn:
        cmd = [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:application"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                return fetch(self.port, _path(50, ""), token)[1] == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, interval=0.2, what="gunicorn to answer")
        return self

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def server_ms(self, since: int, path: str) -> list[float]:
        """The server's time of each request for ``path`` logged after byte ``since``."""
        with self.log.open("rb") as f:
            f.seek(since)
            lines = f.read().decode().splitlines()
        wanted = path if "?" in path else f"{path}?"
        return [int(line.split()[0]) / 1000 for line in lines if line.split()[2] == wanted]

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, timeout=30)


def fetch(port: int, path: str, token: str) -> tuple[float, int, int]:
    """One request on a new connection: (milliseconds, status, body bytes)."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Token {token}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return (time.perf_counter() - t) * 1000, response.status, len(body)


def one_client(server: Gunicorn, path: str, token: str, n: int) -> dict[str, Any]:
    since = server.log_offset()
    lat, statuses = [], set()
    deadline = time.monotonic() + PHASE_DEADLINE_S
    while len(lat) < n and time.monotonic() < deadline:
        ms, code, _ = fetch(server.port, path, token)
        lat.append(ms)
        statuses.add(code)
    time.sleep(0.2)  # the access log line is written as the response ends
    srv = server.server_ms(since, path)
    return {
        "requests": len(lat),
        "statuses": sorted(statuses),
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2),
        "server_p50_ms": round(percentile(srv, 50), 2) if srv else None,
        "server_p95_ms": round(percentile(srv, 95), 2) if srv else None,
    }


def many_clients(server: Gunicorn, path: str, token: str, per_client: int) -> dict[str, Any]:
    lat: list[float] = []
    statuses: set[int] = set()
    lock = threading.Lock()
    deadline = time.monotonic() + PHASE_DEADLINE_S
    start = threading.Barrier(CLIENTS + 1)

    def client() -> None:
        mine, codes = [], set()
        start.wait()
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            ms, code, _ = fetch(server.port, path, token)
            mine.append(ms)
            codes.add(code)
        with lock:
            lat.extend(mine)
            statuses.update(codes)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(PHASE_DEADLINE_S + 35)
    elapsed = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "statuses": sorted(statuses),
        "p50_ms": round(percentile(lat, 50), 2),
        "p95_ms": round(percentile(lat, 95), 2),
        "throughput_rps": round(len(lat) / elapsed, 1),
    }


def _median_of(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def run(ctx: BenchContext) -> BenchResult:
    rounds = 1 if ctx.quick else 3
    n_one = 60 if ctx.quick else 300  # requests per scenario per round, one client
    per_client = 10 if ctx.quick else 50  # requests per client per round, 10 clients
    if not postgres_answers():
        raise RuntimeError(
            "enrollments: PostgreSQL on 127.0.0.1:5432 (user postgres) does not answer; this benchmark "
            "measures the API on PostgreSQL only (scripts/services.py ensure starts it)"
        )
    env = _env(ctx.tmp)
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    os.environ.update(env)
    servers: list[Gunicorn] = []
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        tokens = _seed()
        inproc = _in_process(tokens)
        before_after = _before_and_after()
        gc_tail = _gc_tail(tokens[500], 200 if ctx.quick else 1000)
        connections.close_all()

        # Both servers up at once (an idle one costs nothing), their rounds interleaved: the
        # comparison of the collector frozen or not is not skewed by the shared machine's load
        # drifting between the two.
        frozen = Gunicorn(ctx.tmp, env, gc_freeze=True).start(tokens[50])
        servers.append(frozen)
        thawed = Gunicorn(ctx.tmp, env, gc_freeze=False).start(tokens[50])
        servers.append(thawed)
        one: dict[str, list] = {name: [] for name, _, _ in SCENARIOS}
        many: dict[str, list] = {name: [] for name, _, _ in SCENARIOS}
        gc_one, gc_many = [], []
        for _name, size, query in SCENARIOS:  # warm both workers on every route
            one_client(frozen, _path(size, query), tokens[size], 40)
        one_client(thawed, _path(500, ""), tokens[500], 40)
        for _ in range(rounds):
            for name, size, query in SCENARIOS:
                one[name].append(one_client(frozen, _path(size, query), tokens[size], n_one))
                if size == 500 and not query:  # the same 500 list, collector not frozen (WEB_GC_FREEZE=0)
                    gc_one.append(one_client(thawed, _path(500, ""), tokens[500], n_one))
                many[name].append(many_clients(frozen, _path(size, query), tokens[size], per_client))
                if size == 500 and not query:
                    gc_many.append(many_clients(thawed, _path(500, ""), tokens[500], per_client))
    finally:
        for server in servers:
            server.stop()
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")

    rows = []
    for name, size, query in SCENARIOS:
        ip = inproc[f"{'page' if query else 'list'} {size}"]
        rows.append(
            [
                name,
                size,
                ip["sql"],
                round(ip["body_bytes"] / 1024, 1),
                ip["cpu_ms_p50"],
                _median_of(one[name], "p50_ms"),
                _median_of(one[name], "p95_ms"),
                _median_of(one[name], "server_p50_ms"),
                _median_of(one[name], "server_p95_ms"),
                _median_of(many[name], "p95_ms"),
                _median_of(many[name], "throughput_rps"),
            ]
        )
    big = inproc["list 2000"]
    rows.append(["list 2000 (in-process)", 2000, big["sql"], round(big["body_bytes"] / 1024, 1)])
    rows[-1] += [big["cpu_ms_p50"], big["in_process_ms_p50"], None, None, None, None, None]

    gc_rows = []
    for label, o, m in (
        ("frozen (default)", one["list 500"], many["list 500"]),
        ("not frozen", gc_one, gc_many),
    ):
        gc_rows.append(
            [
                label,
                _median_of(o, "p50_ms"),
                _median_of(o, "p95_ms"),
                _median_of(o, "p99_ms"),
                _median_of(o, "server_p95_ms"),
                _median_of(m, "p95_ms"),
                _median_of(m, "throughput_rps"),
            ]
        )

    # columns: 5 p50, 6 p95 (1 client), 7 server p50, 8 server p95, 9 p95 (10 clients), 10 req/s
    l500, page = rows[1], rows[2]
    all_runs = [r for v in (*one.values(), *many.values(), gc_one, gc_many) for r in v]
    return BenchResult(
        name="enrollments",
        description="GET .../course_enrollments/ behind gunicorn (2 sync workers), PostgreSQL, loopback; "
        f"median of {rounds} round(s)",
        inputs={
            "rounds": rounds,
            "requests_per_scenario_one_client": n_one,
            "clients": CLIENTS,
            "requests_per_client": per_client,
            "page_size": PAGE_SIZE,
            "gunicorn": "gunicorn.conf.py: 2 sync workers, 1 thread, collector frozen after start-up",
            "settings": "settings.production",
            "database": f"PostgreSQL {DB_NAME} (created and dropped)",
        },
        headers=[
            "scenario",
            "enrollments",
            "SQL",
            "body KB",
            "CPU ms",
            "p50 ms (1 client)",
            "p95 ms (1 client)",
            "server p50 ms",
            "server p95 ms",
            f"p95 ms ({CLIENTS} clients)",
            "req/s",
        ],
        rows=rows,
        extra_tables=[
            (
                "In-process CPU ms of the list's own work (query, rows, JSON), before issue 11 and now",
                ["enrollments", "before (DRF)", "now", "x faster"],
                before_after,
            ),
            (
                "The collector, in-process CPU: the 500 list, gc.freeze() after start-up or not",
                [
                    "collector",
                    "objects scanned by a full collection",
                    "requests",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "full collections",
                    "longest ms",
                ],
                gc_tail,
            ),
            (
                "The collector behind gunicorn (WEB_GC_FREEZE=1 or 0): 500 list",
                ["collector", "p50 ms", "p95 ms", "p99 ms", "server p95 ms", f"p95 ms ({CLIENTS})", "req/s"],
                gc_rows,
            ),
        ],
        samples={
            "before_after_cpu_ms": before_after,
            "gc_tail_in_process": gc_tail,
            "in_process": inproc,
            "one_client": one,
            "many_clients": many,
            "gc_off": {"one": gc_one, "many": gc_many},
        },
        summary={
            "list_500_server_p50_ms": l500[7],
            "list_500_p95_ms": l500[6],
            "list_500_p95_10_clients_ms": l500[9],
        },
        checks={
            "every response 200": all(r["statuses"] == [200] for r in all_runs),
            "every list and page has the expected items": all(
                v["status"] == 200 and v["items_ok"] for v in inproc.values()
            ),
            "SQL constant: the 50, 500 and 2,000 lists cost the same": len(
                {inproc[f"list {n}"]["sql"] for n in SIZES}
            )
            == 1,
            "SQL constant: pages too": len({inproc[f"page {n}"]["sql"] for n in SIZES}) == 1,
            "course_about falls back for courses without a marketing URL": inproc["list 500"][
                "about_fallbacks"
            ]
            > 0,
        },
        goals={
            "500 list: server time (p50) <= 10 ms": l500[7] is not None and l500[7] <= 10,
            "500 list: p95 <= 15 ms at 1 client": l500[6] is not None and l500[6] <= 15,
            f"500 list: p95 <= 100 ms at {CLIENTS} clients": l500[9] is not None and l500[9] <= 100,
            f"default page: p95 <= 30 ms at {CLIENTS} clients": page[9] is not None and page[9] <= 30,
        },
        notes=[
            "server time: gunicorn's own time per request (access log %(D)s), parse to last byte written",
            "CPU ms: one request's CPU through Django in the bench process (no HTTP), median of 30: "
            "the cost whatever else the shared machine is doing; the 2,000 row's p50 is in-process",
            "one connection per request (sync workers close each); the client runs on the same 2 cores",
        ],
    )
