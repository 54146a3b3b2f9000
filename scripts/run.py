"""`make run`: the long-running service in the foreground -- web (gunicorn), a Celery worker, Celery beat,
and the event bus consumer when EVENT_BUS_REDIS_CONNECTION_URL is set.

Uses CELERY_BROKER_URL when set, the embedded SQLAlchemy broker otherwise. The consumer is
`manage.py consume_events` in consumer group CONSUMER_GROUP (default catalog-sync) under the name
CONSUMER_NAME (default this host's name: a restarted consumer takes back what it had read and not
acknowledged). Ctrl-C (or SIGTERM) stops them all; if one of them exits, the others are stopped too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python scripts/run.py` puts scripts/, not the root, on the path
    sys.path.insert(0, str(ROOT))
PY = sys.executable

COMMANDS = {
    # The production WSGI server, configured by gunicorn.conf.py (workers, timeouts, the collector):
    # `make web` keeps runserver for development.
    "web": [PY, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:application"],
    "worker": [
        PY,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "--loglevel=INFO",
        "-Q",
        "catalog.refresh,catalog.sweep,celery",
        "-c",
        os.environ.get("WORKER_CONCURRENCY", "2"),
    ],
    "beat": [PY, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"],
}


def consumer_command(env: dict[str, str]) -> list[str] | None:
    """The event bus consumer, started exactly as in any Open edX service; None when the bus is off."""
    if not env.get("EVENT_BUS_REDIS_CONNECTION_URL"):
        return None
    extra = json.dumps({"consumer_name": env.get("CONSUMER_NAME") or socket.gethostname()})
    group = env.get("CONSUMER_GROUP") or "catalog-sync"
    return [
        PY,
        "manage.py",
        "consume_events",
        "-t",
        "course-catalog-info-changed",
        "-g",
        group,
        "--extra",
        extra,
    ]


def main() -> int:
    # Only manage.py defaults to development settings; the worker and beat fail closed without it.
    env = {**os.environ}
    env.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    # Metrics (multiprocess): nothing of this host's service runs yet, so the samples of the last
    # run go; web, worker and beat inherit the directory observability chose (PROMETHEUS_MULTIPROC_DIR).
    from observability import multiproc

    multiproc.clean()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc.MULTIPROC_DIR)
    commands = dict(COMMANDS)
    consumer = consumer_command(env)
    if consumer:
        commands["consumer"] = consumer
    else:
        print("run: EVENT_BUS_REDIS_CONNECTION_URL is not set: no event bus consumer", flush=True)
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"run: {name} exited with {proc.returncode}; stopping the others", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
