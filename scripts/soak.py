"""The chaos soak: the whole service under faults for a few minutes, then a check of the table.

    python scripts/soak.py [--stack redis-pg|embedded|rabbitmq-pg] [--seconds 300] [--courses 10000]

Not part of ``make test`` or CI (``make soak``). What it runs, all on loopback addresses:

- the stand-in catalog (in this process) with ``--courses`` runs: 20% of API requests answer a 5xx,
  a per-client throttle (429 with ``Retry-After``), runs inserted between page requests, 1% of
  runs served hostile; while the chaos lasts, marketing URLs of random runs change in the catalog;
- two Celery workers (``-c 2`` each), one ``celery beat`` (the sweep due every ``SWEEP_EVERY``
  seconds, the outbox requeue every ``REQUEUE_INTERVAL``), a sweep lease of ``LEASE_TTL`` seconds
  so that a dead sweep is resumed quickly, and bursts of ``simulate_publish`` of random courses;
- every 40-60 s one worker, its whole process group, is SIGKILLed and started again.

Before the chaos every course is imported and synced once without faults, so a hostile run has
a known good value to keep. Then the chaos; then the catalog stops changing and its error rate
drops to ``FINAL_ERROR_RATE`` (the throttle, the inserts and the hostile runs stay), a sweep
started after that moment must complete, and the script waits (bounded) until no sweep runs, no
outbox marker is left, the queues are empty and the workers idle. The checks: every overview
holds the catalog's current values (a hostile run: the value it had before it turned hostile),
no hostile value is stored anywhere, every ``SweepRun`` is complete and no chunk is pending, no
outbox marker is left. One summary line; exit 0 on PASS, 1 on FAIL (the reasons above it).

Logs, the final dump and the sweep runs go to ``var/soak/``. The Redis stacks get a private
``redis-server`` on a free port (the shared one's databases belong to the test suite), PostgreSQL
a fresh database (dropped at the end unless ``--keep``), RabbitMQ a fresh vhost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog.mapping import RefusedRecord, map_course_run  # noqa: E402
from scripts.services import ServiceUnavailable, ensure  # noqa: E402
from standin import StandinServer, generate_runs, hostile_variant, hostilize, lms_course_records  # noqa: E402
from tests.integration.harness import QUEUES, Service  # noqa: E402

OUT = ROOT / "var" / "soak"
LEASE_TTL = 20  # seconds without a heartbeat before a sweep counts as dead and is resumed
SWEEP_EVERY = 30  # seconds between beat's sweep ticks
REQUEUE_INTERVAL = 5  # seconds between beat's outbox requeue ticks
COALESCE_WINDOW = 2.0
ERROR_RATE = 0.20
FINAL_ERROR_RATE = 0.05  # while the final sweep runs: the catalog still fails now and then
THROTTLE = {"throttle_per_window": 40, "throttle_window_s": 2.0}  # 20 requests/s per client
INSERT_BETWEEN_PAGES = 1
HOSTILE_RATE = 0.01
KILL_EVERY = (40.0, 60.0)
KILL_WAIT = 20.0
PUBLISH_EVERY = (2.0, 5.0)  # seconds between publish bursts
# Courses per burst. The embedded broker (kombu's SQLAlchemy transport) hands a worker about one
# message a second per queue (it polls), ~2 refreshes/s for two workers: a bigger rate there only
# builds a backlog that the drain then waits out.
PUBLISH_BURST = {"redis-pg": (10, 60), "rabbitmq-pg": (10, 60), "embedded": (1, 6)}
MUTATE_EVERY = 1.0  # seconds between catalog changes
MUTATE_BATCH = 5  # runs changed each time
DRAIN_TIMEOUT = 600.0  # the final phase's bound
STACK_SERVICES = {"embedded": (), "redis-pg": ("postgres",), "rabbitmq-pg": ("rabbitmq", "postgres")}
# A task's last line in a worker's log (Celery's own lines at INFO): it finished, one way or another.
TASK_ENDED = re.compile(r"\] (succeeded in|retry: |raised unexpected|ignored)")
# The catalog field each hostile variant (standin.data.HOSTILE_VARIANTS) spoils.
HOSTILE_FIELD = {
    "marketing_url_javascript": "marketing_url",
    "marketing_url_huge": "marketing_url",
    "marketing_url_int": "marketing_url",
    "financial_aid_string": "eligible_for_financial_aid",
    "language_list": "content_language",
}
REFRESH_RESULT = re.compile(r"catalog_sync\.refresh_course\[[^]]+\] succeeded in [0-9.]+s: '([a-z-]+)'")


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def utc(value) -> datetime | None:
    """A timestamp column as an aware datetime (PostgreSQL gives one; SQLite gives UTC text)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def wait_for(predicate, timeout: float, interval: float = 1.0):
    """The predicate's first truthy value, or None once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class PrivateRedis:
    """A redis-server of our own on a free loopback port, without persistence."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailable("redis-server is not installed (scripts/services.py ensure redis)")
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        self.client = redis.Redis.from_url(self.url)
        if not wait_for(self._pings, 10, 0.1):
            raise ServiceUnavailable(f"the private redis-server did not answer on port {self.port}")

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)  # noqa: S311 -- chaos, reproducible by --seed
        self.procs: dict[str, subprocess.Popen] = {}  # name -> process (its own process group)
        self.incarnation = {"w1": 0, "w2": 0}
        self.publisher: subprocess.Popen | None = None
        self.publisher_keys: list[str] = []
        self.counts = {
            "kills": 0,
            "publishes": 0,
            "publish_bursts": 0,
            "publish_failures": 0,
            "mutations": 0,
        }
        self.published: set[str] = set()
        self.redis: PrivateRedis | None = None
        self.service: Service | None = None
        self.standin: StandinServer | None = None
        self.hostile_expected: dict[str, dict] = {}

    # --- processes ---------------------------------------------------------------------------
    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(OUT / f"{name}.log", "w")  # noqa: SIM115 -- the child holds it; closed here at once
        try:
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.service.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a SIGKILL takes the pool with it
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self, base: str) -> None:
        self.incarnation[base] += 1
        name = f"worker-{base}-{self.incarnation[base]}"
        self.start(
            name,
            [
                *(sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", ",".join(QUEUES)),
                *("-c", "2", "-n", f"{base}@%h", "--without-mingle", "--without-gossip"),
                *("--loglevel=INFO", "-P", "prefork"),
            ],
        )

    def current_worker(self, base: str) -> str:
        return f"worker-{base}-{self.incarnation[base]}"

    @staticmethod
    def kill_group(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def kill_worker(self, base: str) -> None:
        name = self.current_worker(base)
        self.kill_group(self.procs.pop(name))
        self.counts["kills"] += 1
        say(f"SIGKILLed {name} (its process group)")

    def stop_all(self) -> None:
        for proc in [*self.procs.values(), *([self.publisher] if self.publisher else [])]:
            if proc.poll() is None:
                self.kill_group(proc)
        self.procs.clear()

    def log(self, name: str) -> str:
        path = OUT / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker_logs(self) -> str:
        return "".join(self.log(p.stem) for p in sorted(OUT.glob("worker-*.log")))

    # --- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        args = self.args
        ensure(*STACK_SERVICES[args.stack])
        redis_url = None
        if args.stack != "embedded":
            if not shutil.which("redis-server"):
                ensure("redis")  # installs it (and starts the shared one, which we leave alone)
            (OUT / "redis").mkdir()
            self.redis = PrivateRedis(OUT / "redis")
            redis_url = self.redis.url
        runs = generate_runs(args.courses, seed=args.seed)
        self.standin = StandinServer(runs).start()
        say(f"stand-in catalog: {len(runs)} runs at {self.standin.base_url}")
        self.service = Service(
            OUT,
            self.standin,
            stack=args.stack,
            redis_url=redis_url,
            lease_ttl=LEASE_TTL,
            coalesce_window=COALESCE_WINDOW,
        )
        # A short requeue interval: a settings module over settings.dev, on the processes' path.
        (OUT / "soak_settings.py").write_text(
            "from settings.dev import *  # noqa: F403\n"
            f"CATALOG_REFRESH_REQUEUE_INTERVAL = {REQUEUE_INTERVAL}\n"
        )
        env = self.service.env
        env["DJANGO_SETTINGS_MODULE"] = "soak_settings"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OUT), str(ROOT), env.get("PYTHONPATH", "")) if p)
        records = lms_course_records(runs, lms_only=0, ccx_every=0)
        started = time.monotonic()
        self.service.import_courses(records)
        say(f"imported {len(records)} courses in {time.monotonic() - started:.0f}s")
        started = time.monotonic()
        synced = self.service.manage("sync_catalog", "--no-progress")
        say(f"first sync, no faults, in {time.monotonic() - started:.0f}s: {synced.stdout.strip()[-200:]}")
        self.service.manage(
            "shell",
            "-c",
            "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
            f"every, _ = IntervalSchedule.objects.get_or_create(every={SWEEP_EVERY}, period='seconds')\n"
            "task = PeriodicTask.objects.get(name='catalog full sweep')\n"
            "task.interval = every\n"
            "task.save()\n",
        )
        self.setup_runs = self.sql_int("select coalesce(max(id), 0) from catalog_sweeprun")

    def sql_int(self, query: str) -> int:
        return int(self.service.sql(query)[0][0])

    # --- the chaos ---------------------------------------------------------------------------
    def chaos(self) -> None:
        standin, args = self.standin, self.args
        standin.set_faults(
            error_rate=ERROR_RATE,
            insert_between_pages=INSERT_BETWEEN_PAGES,
            hostile_rate=HOSTILE_RATE,
            seed=args.seed,
            **THROTTLE,
        )
        # A hostile run keeps the value it was synced with before it turned hostile.
        for key in self.lms_keys:
            if standin.state.is_hostile(key):
                self.hostile_expected[key] = map_course_run(standin.state.get(key))
        say(f"chaos on: {len(self.hostile_expected)} hostile runs; {args.seconds}s")
        standin.reset_stats()
        for base in ("w1", "w2"):
            self.start_worker(base)
        self.start(
            "beat",
            [
                *(sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"),
                *(f"--pidfile={OUT / 'beat.pid'}", f"--schedule={OUT / 'beat.db'}"),
            ],
        )
        now = time.monotonic()
        end = now + args.seconds
        next_kill = now + self.rng.uniform(*KILL_EVERY)
        next_publish = now + self.rng.uniform(*PUBLISH_EVERY)
        next_mutation = now + MUTATE_EVERY
        victim = "w1"
        while (now := time.monotonic()) < end:
            for name in ("beat",):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited {self.procs[name].returncode}; see {OUT / name}.log")
            # A kill is due: preferably while a sweep runs (it may take a chunk with it, and the
            # run must then be resumed), else at most KILL_WAIT seconds late.
            if now >= next_kill and (now >= next_kill + KILL_WAIT or self.sweep_running()):
                self.kill_worker(victim)
                self.start_worker(victim)
                victim = "w2" if victim == "w1" else "w1"
                next_kill += self.rng.uniform(*KILL_EVERY)  # from when it was due: no drift
            if now >= next_publish:
                self.publish_burst()
                next_publish = now + self.rng.uniform(*PUBLISH_EVERY)
            if now >= next_mutation:
                self.mutate()
                next_mutation = now + MUTATE_EVERY
            time.sleep(0.2)
        self.reap_publisher(wait=True)

    def publish_burst(self) -> None:
        if not self.reap_publisher(wait=False):
            return  # the previous burst is still running: no pile-up of manage.py processes
        keys = self.rng.sample(self.lms_keys, self.rng.randint(*PUBLISH_BURST[self.args.stack]))
        self.publisher_keys = keys
        self.counts["publish_bursts"] += 1
        log = open(OUT / "publish.log", "a")  # noqa: SIM115 -- the child holds it
        try:
            self.publisher = subprocess.Popen(
                [sys.executable, "manage.py", "simulate_publish", *keys],
                cwd=ROOT,
                env=self.service.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def reap_publisher(self, *, wait: bool) -> bool:
        """True when no publish burst is running (the last one's outcome counted)."""
        proc = self.publisher
        if proc is None:
            return True
        if wait:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill_group(proc)
        if proc.poll() is None:
            return False
        if proc.returncode == 0:
            self.counts["publishes"] += len(self.publisher_keys)
            self.published.update(self.publisher_keys)
        else:
            self.counts["publish_failures"] += 1
        self.publisher = None
        return True

    def mutate(self) -> None:
        """Change the marketing URL of a few random runs in the catalog (some to none)."""
        state = self.standin.state
        for key in self.rng.sample(self.lms_keys, MUTATE_BATCH):
            self.counts["mutations"] += 1
            url = (
                None
                if self.rng.random() < 0.1
                else f"https://www.example.com/course/soak-{self.counts['mutations']}"
            )
            state.update(key, marketing_url=url)

    # --- the end -----------------------------------------------------------------------------
    def finish(self) -> list[str]:
        """Stop the chaos, get a complete sweep started after it, wait until everything is drained.
        Returns the reasons the wait failed (empty when drained)."""
        self.standin.set_faults(error_rate=FINAL_ERROR_RATE)
        # No more sweep ticks from beat (its outbox requeue goes on): the final sweep is ours, and
        # "no sweep running" can hold even where a sweep outlasts the interval (embedded).
        self.service.manage(
            "shell",
            "-c",
            "from django_celery_beat.models import PeriodicTask\n"
            "PeriodicTask.objects.filter(name='catalog full sweep').update(enabled=False)\n"
            "from django_celery_beat.models import PeriodicTasks\n"
            "PeriodicTasks.update_changed()\n",
        )
        stopped = datetime.now(UTC)
        for base in ("w1", "w2"):  # both workers alive for the drain
            if self.procs[self.current_worker(base)].poll() is not None:
                self.start_worker(base)
        say(f"chaos off (error rate {FINAL_ERROR_RATE:.0%}, catalog frozen); waiting for a final sweep")
        deadline = time.monotonic() + DRAIN_TIMEOUT
        final_id = None
        last_trigger = 0.0
        while time.monotonic() < deadline:
            runs = self.sweep_runs()
            running = [r for r in runs if r["status"] == "running"]
            after = [r for r in runs if r["id"] > self.setup_runs and utc(r["started_at"]) > stopped]
            if after and after[0]["status"] != "running":
                final_id = after[0]["id"]
                break
            # Triggers as beat's ticks would: none while a live sweep runs; one to resume a dead one
            # (no heartbeat for the lease TTL); one for a sweep that starts after the chaos.
            stale = [r for r in running if self.heartbeat_age(r) > LEASE_TTL + 2]
            if (stale or not (running or after)) and time.monotonic() - last_trigger > 10:
                triggered = self.service.manage("sync_catalog", "--async", check=False)
                say(f"sync_catalog --async: exit {triggered.returncode} {triggered.stdout.strip()[-200:]}")
                last_trigger = time.monotonic()
            time.sleep(1)
        reasons = []
        if final_id is None:
            reasons.append(f"no sweep started after the chaos completed within {DRAIN_TIMEOUT:.0f}s")
        say(f"final sweep #{final_id} finished; waiting for markers, queues and workers to drain")
        drained = wait_for(self.drained, max(10.0, deadline - time.monotonic()), 2.0)
        if not drained:
            reasons.append(f"not drained within {DRAIN_TIMEOUT:.0f}s: {self.drain_state()}")
        self.final_id = final_id
        return reasons

    def sweep_runs(self) -> list[dict]:
        names = ("id", "status", "chunks_total", "chunks_done", "chunks_failed", "resumed", "started_at")
        names += ("heartbeat_at",)
        rows = self.service.sql(f"select {', '.join(names)} from catalog_sweeprun order by id")  # noqa: S608
        return [dict(zip(names, row, strict=True)) for row in rows]

    @staticmethod
    def heartbeat_age(run: dict) -> float:
        beat = utc(run["heartbeat_at"])
        return (datetime.now(UTC) - beat).total_seconds() if beat else 0.0

    def sweep_running(self) -> bool:
        return bool(self.sql_int("select count(*) from catalog_sweeprun where status = 'running'"))

    def unacked_messages(self) -> int | None:
        """Redis: messages delivered to a worker and never acked (the SIGKILLed ones' own, and
        the countdowns they held), restored by Redis only after the visibility timeout; their work
        is recovered by the outbox requeue and the sweep's resume instead. None on other brokers."""
        if self.args.stack != "redis-pg":
            return None
        import redis

        return int(redis.Redis.from_url(f"{self.redis.url}/15").hlen("unacked"))

    def queued_messages(self) -> int:
        stack = self.args.stack
        if stack == "redis-pg":
            import redis

            client = redis.Redis.from_url(f"{self.redis.url}/15")
            return sum(
                client.llen(key)
                for key in client.scan_iter()
                if key.decode(errors="replace").split("\x06")[0] in QUEUES
            )
        if stack == "embedded":
            import sqlite3

            conn = sqlite3.connect(OUT / "var" / "broker.sqlite3", timeout=30)
            try:
                return conn.execute("select count(*) from kombu_message where visible = 1").fetchone()[0]
            finally:
                conn.close()
        from kombu import Connection

        with Connection(self.service.env["CELERY_BROKER_URL"]) as conn:
            channel = conn.channel()
            return sum(channel.queue_declare(queue, passive=True).message_count for queue in QUEUES)

    def workers_idle(self) -> bool:
        for base in ("w1", "w2"):
            log = self.log(self.current_worker(base))
            if log.count("] received") > len(TASK_ENDED.findall(log)):
                return False
        return True

    def drain_state(self) -> dict:
        return {
            "running_sweeps": self.sql_int("select count(*) from catalog_sweeprun where status = 'running'"),
            "markers": self.markers_left(),
            "queued": self.queued_messages(),
            "workers_idle": self.workers_idle(),
        }

    def markers_left(self) -> int:
        return self.sql_int(
            "select count(*) from overviews_courseoverview where catalog_refresh_requested_at is not null"
        )

    def drained(self) -> bool:
        state = self.drain_state()
        return (
            not state["running_sweeps"]
            and not state["markers"]
            and not state["queued"]
            and state["workers_idle"]
        )

    # --- the checks ----------------------------------------------------------------------------
    def check(self, reasons: list[str]) -> tuple[list[str], dict]:
        state = self.standin.state
        out = self.service.manage("dump_overviews").stdout
        (OUT / "overviews.jsonl").write_text(out)
        dump = {rec["id"]: rec for rec in map(json.loads, out.splitlines())}
        right = hostile_stored = 0
        wrong: list[str] = []
        for key in self.lms_keys:
            row = dump.get(key)
            if row is None:
                wrong.append(f"{key}: no overview")
                continue
            run = state.get(key)
            expected = self.hostile_expected.get(key)
            if expected is None:
                try:
                    expected = map_course_run(run)
                except RefusedRecord as exc:  # not hostile by our count, yet refused: note it
                    wrong.append(f"{key}: the catalog's own run is refused: {exc}")
                    continue
            got = {field: row[field] for field in expected}
            # A hostile run is refused, and the refusal is on its row; any other is synced.
            status = "error" if key in self.hostile_expected else "ok"
            ok = got == expected and row["catalog_status"] == status
            if ok and status == "error":
                ok = (row["catalog_error"] or "").startswith("catalog record refused")
            if ok:
                right += 1
            elif len(wrong) < 20:
                wrong.append(
                    f"{key}: stored {got} status={row['catalog_status']!r} error={row['catalog_error']!r}, "
                    f"expected {expected}"
                )
            else:
                wrong.append(key)
        # No hostile value stored: a hostile run does not hold what hostilize() serves for it, and
        # no row holds a value of a hostile kind (a javascript: URL, one longer than the column).
        for key in self.hostile_expected:
            row, bad = dump.get(key) or {}, hostilize(state.get(key))
            raw_field = HOSTILE_FIELD[hostile_variant(key)]
            stored = row.get({"content_language": "language"}.get(raw_field, raw_field))
            if stored is not None and (stored == bad[raw_field] or str(stored) == str(bad[raw_field])):
                hostile_stored += 1
        for row in dump.values():
            url = row.get("marketing_url")
            if isinstance(url, str) and (url.startswith("javascript:") or len(url) > 500 or url == "12345"):
                hostile_stored += 1
        if wrong:
            reasons.append(f"{len(wrong)} overview(s) wrong, e.g. " + "; ".join(wrong[:5]))
        if hostile_stored:
            reasons.append(f"{hostile_stored} hostile value(s) stored")
        runs = self.sweep_runs()
        (OUT / "sweepruns.json").write_text(json.dumps(runs, default=str, indent=1))
        chaos_runs = [r for r in runs if r["id"] > self.setup_runs]
        not_complete = [r for r in runs if r["status"] != "complete"]
        if not_complete:
            reasons.append(f"{len(not_complete)} sweep run(s) not complete: {not_complete}")
        pending = self.sql_int("select count(*) from catalog_sweepchunk where status = 'pending'")
        if pending:
            reasons.append(f"{pending} sweep chunk(s) still pending")
        markers = self.markers_left()
        if markers:
            reasons.append(f"{markers} outbox marker(s) left")
        logs = self.worker_logs()
        results: dict[str, int] = {}
        for outcome in REFRESH_RESULT.findall(logs):
            results[outcome] = results.get(outcome, 0) + 1
        stats = self.standin.stats()
        figures = {
            "sweeps": len(chaos_runs),
            "resumed": sum(r["resumed"] for r in chaos_runs),
            "resumed_runs": sum(1 for r in chaos_runs if r["resumed"]),
            "chunks": sum(r["chunks_total"] for r in chaos_runs),
            "chunks_failed": sum(r["chunks_failed"] for r in chaos_runs),
            "right": right,
            "hostile_stored": hostile_stored,
            "markers": markers,
            "unacked": self.unacked_messages(),
            "refresh_results": results,
            "stats": stats,
        }
        return reasons, figures

    def run(self) -> int:
        started = time.monotonic()
        reasons: list[str] = []
        try:
            self.setup()
            self.lms_keys = sorted(r["key"] for r in self.standin.state.runs())
            self.chaos()
            reasons = self.finish()
            reasons, figures = self.check(reasons)
        finally:
            self.stop_all()
            if self.service is not None and not self.args.keep:
                self.service.stop()
            if self.standin is not None:
                self.standin.stop()
            if self.redis is not None and not self.args.keep:
                self.redis.stop()
            if self.args.keep and self.service is not None:
                kept = {
                    k: self.service.env.get(k) for k in ("DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL")
                }
                pid = self.redis.proc.pid if self.redis is not None else None
                say(f"kept (--keep): {kept}; private redis-server pid {pid}")
        stats, counts = figures["stats"], self.counts
        injected = stats["injected"]
        results = figures["refresh_results"]
        verdict = "FAIL" if reasons else "PASS"
        for reason in reasons:
            print(f"soak: FAIL: {reason}", flush=True)
        line = (
            f"soak: {verdict} {self.args.seconds}s stack={self.args.stack} courses={self.args.courses} "
            f"sweeps={figures['sweeps']} "
            f"(resumed {figures['resumed']} times, {figures['resumed_runs']} runs) "
            f"chunks={figures['chunks']} chunks_failed={figures['chunks_failed']} kills={counts['kills']} "
            f"publishes={counts['publishes']} (courses {len(self.published)}, failed bursts "
            f"{counts['publish_failures']}) refreshes={sum(results.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(results.items()))}) mutations={counts['mutations']} "
            f"catalog_requests={stats['requests'] - stats['token']} errors_injected={injected['error']} "
            f"throttled={injected['throttled']} inserted={stats['inserted']} "
            f"hostile_served={injected['hostile']} "
            f"overviews_right={figures['right']}/{len(self.lms_keys)} "
            f"hostile_stored={figures['hostile_stored']} "
            f"markers_left={figures['markers']} "
            + (f"unacked_lost={figures['unacked']} " if figures["unacked"] is not None else "")
            + f"wall={time.monotonic() - started:.0f}s"
        )
        print(line, flush=True)
        (OUT / "summary.txt").write_text("\n".join([*(f"soak: FAIL: {r}" for r in reasons), line]) + "\n")
        return 1 if reasons else 0


def main(argv: list[str]) -> int:
    global OUT  # one soak per process; every helper above writes there
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("redis-pg", "embedded", "rabbitmq-pg"), default="redis-pg")
    parser.add_argument("--seconds", type=int, default=300, help="how long the chaos lasts")
    parser.add_argument("--courses", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database and the private Redis")
    parser.add_argument("--logs", default=str(OUT), help="logs and results (emptied first; default var/soak)")
    args = parser.parse_args(argv)
    OUT = Path(args.logs).resolve()
    if args.seconds < 1 or args.courses < 100:
        parser.error("--seconds must be positive and --courses at least 100")
    if OUT.exists() and any(OUT.iterdir()):
        if not (OUT / "soak_settings.py").exists():  # never empty a folder that is not a soak's
            parser.error(f"--logs {OUT} is not empty and not an earlier soak's folder")
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # a `kill` of the soak stops its processes too
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    try:
        return Soak(args).run()
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
