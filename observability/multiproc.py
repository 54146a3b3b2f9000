"""The multiprocess directory's housekeeping (``PROMETHEUS_MULTIPROC_DIR``, see
``observability.metrics``).

Every process writes its samples to files named after its pid; ``/metrics`` sums all the files.

- ``clean()`` (``python -m observability.multiproc clean``): empty the directory. Only when no
  process of this host's service is running: ``make run`` does it before it starts web, worker and
  beat. A live process whose file is removed keeps writing to the deleted file and disappears
  from the scrape until it restarts.
- ``clean_dead()``: remove only the files of processes that are gone (their pid is not alive).
  A Celery worker does it as it starts (``observability.celery``), gunicorn as it starts
  (``observability.gunicorn_conf``): safe beside live processes. The counters of the removed
  files leave the sums, which Prometheus reads as a counter reset (``rate()`` copes).
- ``mark_dead(pid)``: prometheus_client's ``mark_process_dead``: drops a dead process's live
  gauges. gunicorn's ``child_exit`` and Celery's ``worker_process_shutdown`` call it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from prometheus_client import multiprocess

from observability.metrics import MULTIPROC_DIR

_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean(path: Path = MULTIPROC_DIR) -> int:
    """Remove every sample file; the number removed."""
    removed = 0
    for file in path.glob("*.db"):
        file.unlink(missing_ok=True)
        removed += 1
    return removed


def clean_dead(path: Path = MULTIPROC_DIR) -> int:
    """Remove the sample files of processes no longer alive; the number removed."""
    removed = 0
    for file in path.glob("*.db"):
        match = _PID.search(file.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            file.unlink(missing_ok=True)
            removed += 1
    return removed


def mark_dead(pid: int, path: Path = MULTIPROC_DIR) -> None:
    multiprocess.mark_process_dead(pid, str(path))


def main(argv: list[str]) -> int:
    if argv[1:] == ["clean"]:
        print(f"metrics: removed {clean()} sample file(s) from {MULTIPROC_DIR}")
        return 0
    if argv[1:] == ["clean-dead"]:
        print(f"metrics: removed {clean_dead()} sample file(s) of dead processes from {MULTIPROC_DIR}")
        return 0
    print("usage: python -m observability.multiproc clean|clean-dead", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
