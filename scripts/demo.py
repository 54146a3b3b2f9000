"""`make demo`: the whole pipeline end to end on embedded defaults, with a summary.

SQLite under var/demo/, kombu's SQLAlchemy broker (no server), Django's database cache, the
bundled stand-in catalog with 3,200 courses over HTTP on localhost, and a real Celery worker:

  1. import the LMS's courses (content only);
  2. a course publish -> the per-course task on the worker -> the catalog fields appear;
  3. a full sweep on the worker (`sync_catalog --async`; the cheaper strategy by estimate), then a second one;
  4. an ops refresh of one course (`refresh_course`);
  5. a Studio-style COURSE_CATALOG_INFO_CHANGED event over the event bus (Redis Streams) to
     `consume_events`: the course renamed in place, then fresh -- when a Redis answers or can be
     started (TEST_REDIS_PORT, default 6379); without one the demo says so in one line and goes on;
  6. a summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "demo"
COURSES = int(os.environ.get("DEMO_COURSES", "3200"))


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what} (logs in {VAR})")


def main() -> int:
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.dev",
        "DATABASE_URL": f"sqlite:///{VAR / 'db.sqlite3'}",
        "CATALOG_SYNC_VAR_DIR": str(VAR),  # the embedded broker's file lives here too
        "CATALOG_PUBLISH_COALESCE_WINDOW": "1",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):
        env.pop(name, None)  # embedded defaults, whatever the shell has

    procs: list[subprocess.Popen] = []
    try:
        say(f"starting the stand-in catalog with {COURSES} courses")
        url_file, records = VAR / "standin.url", VAR / "courses.jsonl"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "standin",
                    "--port",
                    "0",
                    "--courses",
                    str(COURSES),
                    "--ready-file",
                    str(url_file),
                    "--write-lms-records",
                    str(records),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        base = wait_for(lambda: url_file.exists() and url_file.read_text().strip(), 60, "the stand-in")
        env.update(
            {
                "CATALOG_API_URL": f"{base.rstrip('/')}/api/v1/",
                "CATALOG_OAUTH_URL": f"{base.rstrip('/')}/oauth2/access_token",
                "CATALOG_CLIENT_ID": "standin-client",
                "CATALOG_CLIENT_SECRET": "standin-secret",
            }
        )
        print(f"   catalog at {base}")

        def manage(*args: str) -> str:
            proc = subprocess.run(
                [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise SystemExit(f"demo: manage.py {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
            return proc.stdout.strip()

        say("database: manage.py migrate (every table, the cache's included), import the LMS's courses")
        manage("migrate", "--noinput")
        print("   " + manage("import_courses", str(records)))

        say("starting a Celery worker (embedded SQLAlchemy broker, no server)")
        worker_log = open(VAR / "worker.log", "w")  # noqa: SIM115 -- lives as long as the worker
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks",
                    "worker",
                    "-c",
                    "2",
                    "-Q",
                    "catalog.refresh,catalog.sweep,celery",
                    "--loglevel=INFO",
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd=ROOT,
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(lambda: "ready" in (VAR / "worker.log").read_text(), 60, "the worker")
        print("   worker ready")

        os.environ.update({k: v for k, v in env.items() if k.startswith(("DJANGO", "DATABASE", "CATALOG"))})
        import django

        sys.path.insert(0, str(ROOT))
        django.setup()
        from catalog.models import SweepRun
        from overviews.models import CourseOverview

        def control(path: str, payload: dict | None = None) -> dict:
            data = json.dumps(payload).encode() if payload is not None else None
            req = urllib.request.Request(
                f"{base.rstrip('/')}/_standin/{path}", data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=10) as answer:
                return json.loads(answer.read())

        first = json.loads(records.read_text().splitlines()[0])
        key = first["id"]
        say(f"publish of {key}: the overview updates in place, then the task fetches its catalog data")
        started = time.monotonic()
        print(
            "   "
            + manage("simulate_publish", key, "--display-name", first["display_name"] + " (republished)")
        )
        row = wait_for(
            lambda: CourseOverview.objects.filter(id=key, catalog_status="ok").first(),
            60,
            "the publish's catalog fetch",
        )
        print(
            f"   fresh after {time.monotonic() - started:.1f}s (coalescing window 1s): "
            f"marketing_url={row.marketing_url!r} language={row.language!r}"
        )

        for label in ("first full sweep (writes)", "second full sweep (nothing changed)"):
            say(f"{label}: sync_catalog --async, on the worker (strategy chosen per sweep)")
            control("stats/reset", {})
            started = time.monotonic()
            previous = SweepRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            print("   " + manage("sync_catalog", "--async"))
            run = wait_for(
                lambda p=previous: SweepRun.objects.filter(pk__gt=p).exclude(status="running").first(),
                120,
                "the sweep",
            )
            stats = control("stats")
            how = (
                f"walk + repair: {run.walk_pages} list pages "
                f"({', '.join(f'{size}x{pages}' for size, pages in run.walk_sizes)}), "
                f"{run.chunks_done} repair chunk(s)"
                if run.strategy == "walk"
                else f"keys-batched: {run.chunks_done} chunks"
            )
            print(
                f"   sweep #{run.pk} {run.status} in {time.monotonic() - started:.1f}s, {how} "
                f"(estimates: walk {run.estimate_walk}, keys {run.estimate_keys} requests): "
                f"seen={run.courses_seen} updated={run.courses_updated} "
                f"unchanged={run.courses_unchanged} missing={run.courses_missing} "
                f"refused={run.courses_refused}; catalog requests={stats['requests']}"
            )

        other = json.loads(records.read_text().splitlines()[1])["id"]
        say(f"ops refresh of {other} after the catalog changed its marketing URL")
        changed = f"https://www.example.com/course/renamed-{int(time.time())}"
        current = CourseOverview.objects.get(id=other)
        control("runs", {"upsert": [{**_catalog_run(base, other), "marketing_url": changed}]})
        print("   " + manage("refresh_course", other))
        current.refresh_from_db()
        print(f"   marketing_url is now {current.marketing_url!r}")

        _event_bus_step(env, procs, control, base, exclude=(key, other))

        say("summary")
        by_status = {
            s: CourseOverview.objects.filter(catalog_status=s).count()
            for s in ("ok", "missing", "error", "never")
        }
        statuses = ", ".join(f"{k}={v}" for k, v in by_status.items())
        print(f"   overviews: {CourseOverview.objects.count()} ({statuses})")
        print(f"   sweeps: {SweepRun.objects.filter(status='complete').count()} complete")
        print(f"   admin: `make web`, then http://127.0.0.1:8000/admin/ (DATABASE_URL={env['DATABASE_URL']})")
        print("\ndemo: OK")
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _event_bus_step(env: dict, procs: list, control, base: str, exclude: tuple) -> None:
    """Studio publishes; its COURSE_CATALOG_INFO_CHANGED crosses the event bus to `consume_events`."""
    say("event bus: Studio renames a course; COURSE_CATALOG_INFO_CHANGED reaches consume_events over Redis")
    port = os.environ.get("TEST_REDIS_PORT", "6379")
    try:
        ensured = subprocess.run(
            [sys.executable, "scripts/services.py", "ensure", "redis"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        reason = "" if ensured.returncode == 0 else (ensured.stderr.strip().splitlines() or ["no answer"])[-1]
    except subprocess.TimeoutExpired:
        reason = "starting one took over 5 minutes"
    if reason:
        print(f"   skipped: no Redis on 127.0.0.1:{port} and none could be started ({reason})")
        return
    from datetime import UTC, datetime

    import redis
    from django.conf import settings
    from edx_event_bus_redis import create_producer
    from opaque_keys.edx.keys import CourseKey
    from openedx_events.content_authoring.data import CourseCatalogData, CourseScheduleData
    from openedx_events.content_authoring.signals import COURSE_CATALOG_INFO_CHANGED
    from openedx_events.data import EventsMetadata

    from overviews.models import CourseOverview

    # Db 12, a topic prefix of this run's own: nothing else there is touched; the stream goes at the end.
    bus_url, prefix = f"redis://127.0.0.1:{port}/12", f"demo{os.getpid()}"
    topic = "course-catalog-info-changed"
    env.update(
        EVENT_BUS_REDIS_CONNECTION_URL=bus_url,
        EVENT_BUS_TOPIC_PREFIX=prefix,
        EVENT_BUS_REDIS_CONSUMER_POLL_TIMEOUT="1",
    )
    settings.EVENT_BUS_REDIS_CONNECTION_URL, settings.EVENT_BUS_TOPIC_PREFIX = bus_url, prefix
    settings.EVENT_BUS_REDIS_AUDIT_LOGGING_ENABLED = False  # the demo prints its own lines
    log_path = VAR / "consumer.log"
    extra = json.dumps({"consumer_name": "demo"})
    with open(log_path, "w") as log:
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "consume_events", "-t", topic, "-g", "demo", "--extra", extra],
                cwd=ROOT,
                env={**env, "LOG_LEVEL": "INFO"},  # its "Running consumer" line and one line per event
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    wait_for(lambda: "Running consumer for" in log_path.read_text(), 60, "the event bus consumer")
    print(f"   consume_events running: group demo, stream {prefix}-{topic} on {bus_url}")
    course = CourseOverview.objects.filter(catalog_status="ok", id__startswith="course-v1:").exclude(
        id__in=exclude
    )
    course = course.order_by("id").first()
    key = str(course.id)
    new_url = f"https://www.example.com/course/event-{int(time.time())}"
    control("runs", {"upsert": [{**_catalog_run(base, key), "marketing_url": new_url}]})
    name = f"{course.display_name} (renamed in Studio)"
    info = CourseCatalogData(
        course_key=CourseKey.from_string(key),
        name=name,
        schedule_data=CourseScheduleData(start=course.start or datetime.now(UTC), pacing="self"),
    )
    producer = create_producer()
    started = time.monotonic()
    producer.send(
        signal=COURSE_CATALOG_INFO_CHANGED,
        topic=topic,
        event_key_field="catalog_info.course_key",
        event_data={"catalog_info": info},
        event_metadata=EventsMetadata(event_type=COURSE_CATALOG_INFO_CHANGED.event_type),
    )
    print(f"   produced as Studio does (Avro, edx-event-bus-redis): {key} -> {name!r}")
    wait_for(lambda: CourseOverview.objects.filter(id=key, display_name=name).exists(), 30, "the event")
    print(f"   renamed in place after {time.monotonic() - started:.1f}s (catalog fields kept)")
    row = wait_for(
        lambda: CourseOverview.objects.filter(id=key, marketing_url=new_url).first(), 30, "the refresh"
    )
    print(
        f"   fresh after {time.monotonic() - started:.1f}s: marketing_url={row.marketing_url!r}, "
        f"event time {row.content_event_time:%H:%M:%S.%f} kept with the content"
    )
    redis.Redis.from_url(bus_url).delete(f"{prefix}-{topic}")
    producer.client.close()


def _catalog_run(base: str, key: str) -> dict:
    """The stand-in's current record of a course run (the detail route needs a token)."""
    from urllib.parse import quote

    token_req = urllib.request.Request(
        f"{base.rstrip('/')}/oauth2/access_token",
        data=b"grant_type=client_credentials&client_id=standin-client&client_secret=standin-secret&token_type=jwt",
    )
    with urllib.request.urlopen(token_req, timeout=10) as answer:
        token = json.loads(answer.read())["access_token"]
    req = urllib.request.Request(
        f"{base.rstrip('/')}/api/v1/course_runs/{quote(key, safe='')}/?exclude_utm=1",
        headers={"Authorization": f"JWT {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


if __name__ == "__main__":
    sys.exit(main())
