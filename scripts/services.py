"""Start what the tests need when nothing answers (a fresh machine has none of it).

    python scripts/services.py ensure          # Redis on 127.0.0.1:6379, started if silent
    python scripts/services.py postgres-ready  # exit 0 when PostgreSQL answers on 127.0.0.1:5432

Redis: if nothing answers, start ``redis-server`` (installing Debian's package first when the
binary is missing and we are root). Never a silent skip: failing to start it is an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("TEST_REDIS_PORT", "6379"))


def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _install_redis() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("redis-server is not installed: install Redis (e.g. `apt-get install redis-server`)")
    print("installing redis-server from Debian's packages ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)


def ensure_redis() -> None:
    if redis_answers():
        return
    if not shutil.which("redis-server"):
        _install_redis()
    print(f"starting redis-server on {REDIS_HOST}:{REDIS_PORT}", flush=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            REDIS_HOST,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
            "--logfile",
            "/tmp/catalog-sync-redis.log",
        ],
        check=True,
    )
    for _ in range(50):
        if redis_answers():
            return
        time.sleep(0.1)
    sys.exit("redis-server did not answer PING within 5 seconds (see /tmp/catalog-sync-redis.log)")


def postgres_ready() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "ensure"
    if command == "ensure":
        ensure_redis()
        return 0
    if command == "postgres-ready":
        return 0 if postgres_ready() else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
