"""`make run`: the long-running service in the foreground -- web, a Celery worker, Celery beat.

Uses CELERY_BROKER_URL when set, the embedded SQLAlchemy broker otherwise. Ctrl-C (or SIGTERM)
stops all three; if one of them exits, the others are stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

COMMANDS = {
    "web": [PY, "manage.py", "runserver", os.environ.get("WEB_ADDRESS", "127.0.0.1:8000"), "--noreload"],
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


def main() -> int:
    # Only manage.py defaults to development settings; the worker and beat fail closed without it.
    env = {**os.environ}
    env.setdefault("DJANGO_SETTINGS_MODULE", "settings.dev")
    # Metrics (multiprocess): nothing of this host's service runs yet, so the samples of the last
    # run go; web, worker and beat inherit the directory observability chose (PROMETHEUS_MULTIPROC_DIR).
    from observability import multiproc

    multiproc.clean()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc.MULTIPROC_DIR)
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in COMMANDS.items()}
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
