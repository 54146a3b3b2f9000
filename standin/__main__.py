"""Run the stand-in catalog: ``python -m standin --port 8765 --courses 3200 --seed 1``.

Serves until SIGTERM/SIGINT, then exits 0. Prints one line ending with the base URL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .data import generate_runs, lms_course_records
from .server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, StandinServer

log = logging.getLogger("standin")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m standin", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--courses", type=int, default=3200, help="number of course runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    p.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-per-item-ms", type=float, default=0.0)
    p.add_argument("--insert-between-pages", type=int, default=0)
    p.add_argument("--delete-between-pages", type=int, default=0)
    p.add_argument("--throttle-per-window", type=int, default=0, help="0 = no throttling")
    p.add_argument("--throttle-window-s", type=float, default=3600.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--token-ttl", type=float, default=36000.0)
    p.add_argument("--write-lms-records", metavar="PATH", help="write the LMS import records (JSON Lines)")
    p.add_argument("--ready-file", metavar="PATH", help="write the base URL here once listening")
    p.add_argument("--log-level", default="WARNING")
    return p


def _write_atomically(path: str, text: str) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until a signal, return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runs = generate_runs(args.courses, seed=args.seed)
    if args.write_lms_records:
        records = lms_course_records(runs, seed=args.seed)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        _write_atomically(args.write_lms_records, lines)
        log.info("wrote %d LMS records to %s", len(records), args.write_lms_records)

    server = StandinServer(
        runs, host=args.host, port=args.port, client_id=args.client_id, client_secret=args.client_secret
    )
    server.set_faults(
        latency_ms=args.latency_ms,
        latency_per_item_ms=args.latency_per_item_ms,
        insert_between_pages=args.insert_between_pages,
        delete_between_pages=args.delete_between_pages,
        throttle_per_window=args.throttle_per_window,
        throttle_window_s=args.throttle_window_s,
        error_rate=args.error_rate,
        token_ttl=args.token_ttl,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    try:
        print(f"Stand-in catalog with {len(runs)} course runs serving at {server.base_url}", flush=True)
        if args.ready_file:
            _write_atomically(args.ready_file, server.base_url + "\n")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
