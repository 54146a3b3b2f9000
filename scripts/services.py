"""Start what the tests need when nothing answers (a fresh machine has none of it).

    python scripts/services.py ensure          # Redis, PostgreSQL, RabbitMQ (started if silent), Chromium
    python scripts/services.py ensure redis    # only the named ones (redis, postgres, rabbitmq, chromium)
    python scripts/services.py postgres-ready  # exit 0 when PostgreSQL answers

Each server is looked for on 127.0.0.1 at its usual port (TEST_REDIS_PORT 6379, TEST_PG_PORT 5432,
TEST_RABBIT_PORT 5672). One that answers is left alone: never stopped, restarted or reconfigured.
One that is silent is started: Debian's package is installed first when the binaries are missing
(root and apt-get), then

- Redis: ``redis-server --daemonize yes`` without persistence;
- PostgreSQL: a private cluster under /tmp (``initdb``, trust authentication, superuser
  ``postgres``) started with ``pg_ctl`` and given a database ``test``;
- RabbitMQ: ``rabbitmq-server -detached``, waited for until ``guest``/``guest`` can connect;
- Chromium: not a server; Debian's ``chromium`` and ``chromium-driver`` are installed when
  ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing (the browser test of the status
  page drives them with Selenium).

Never a silent skip: a server that cannot be started is an error naming it, in one line.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
REDIS_HOST, REDIS_PORT = HOST, int(os.environ.get("TEST_REDIS_PORT", "6379"))
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
RABBIT_PORT = int(os.environ.get("TEST_RABBIT_PORT", "5672"))


class ServiceUnavailable(RuntimeError):
    """A server the tests need is silent and could not be started (the message is one line)."""


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _apt_install(package: str, service: str, *more: str) -> None:
    packages = [package, *more]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceUnavailable(
            f"{service} is not installed and cannot be installed here (needs root and apt-get): "
            f"install it (e.g. `apt-get install {' '.join(packages)}`)"
        )
    print(f"installing {' '.join(packages)} from Debian's packages ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise ServiceUnavailable(f"{service}: `apt-get install {' '.join(packages)}` failed ({exc})") from exc


# --- Redis ---------------------------------------------------------------------------------------
def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int, *, logfile: str) -> None:
    """A redis-server without persistence on 127.0.0.1:port, daemonized (tests also start their own)."""
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            REDIS_HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
            "--logfile",
            logfile,
        ],
        check=True,
    )


def ensure_redis() -> None:
    if redis_answers():
        return
    if not shutil.which("redis-server"):
        _apt_install("redis-server", "Redis")
    print(f"starting redis-server on {REDIS_HOST}:{REDIS_PORT}", flush=True)
    log = f"/tmp/catalog-sync-redis-{REDIS_PORT}.log"
    try:
        start_redis(REDIS_PORT, logfile=log)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ServiceUnavailable(f"Redis: redis-server did not start on port {REDIS_PORT} ({exc})") from exc
    if not _wait(redis_answers, 5):
        raise ServiceUnavailable(f"Redis: redis-server did not answer PING within 5 seconds (see {log})")


# --- PostgreSQL ----------------------------------------------------------------------------------
def postgres_ready(port: int = PG_PORT) -> bool:
    return _port_open(port)


def _pg_bindir() -> str | None:
    """Where initdb and pg_ctl are: on PATH, else the newest Debian cluster version's bin/."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return str(Path(shutil.which("pg_ctl")).resolve().parent)  # a symlink: its createdb is beside it
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return str(Path(found[-1]).parent) if found else None


def _as_user(args: list[str], user: str | None) -> list[str]:
    """initdb and postgres refuse to run as root: run them as an unprivileged account."""
    return ["runuser", "-u", user, "--", *args] if user else args


def ensure_postgres() -> None:
    if postgres_ready():
        return
    bindir = _pg_bindir()
    if not bindir:
        _apt_install("postgresql", "PostgreSQL")
        bindir = _pg_bindir()
        if not bindir:
            raise ServiceUnavailable("PostgreSQL: installed, but no initdb/pg_ctl was found")
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None:
            raise ServiceUnavailable("PostgreSQL: running as root and no 'postgres' account to run it as")
    data = Path(f"/tmp/catalog-sync-pg-{PG_PORT}")
    log = Path(f"/tmp/catalog-sync-pg-{PG_PORT}.log")
    print(f"starting PostgreSQL on {HOST}:{PG_PORT} (private cluster in {data})", flush=True)
    try:
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, exist_ok=True)
            if user:
                shutil.chown(data, user)
            subprocess.run(
                _as_user(
                    [f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                    user,
                ),
                check=True,
                capture_output=True,
            )
        log.touch()
        if user:
            shutil.chown(log, user)
        options = f"-p {PG_PORT} -c listen_addresses={HOST} -k {data}"
        subprocess.run(
            _as_user(
                [
                    f"{bindir}/pg_ctl",
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                user,
            ),
            check=True,
            capture_output=True,
        )
        made = subprocess.run(
            [f"{bindir}/createdb", "-h", HOST, "-p", str(PG_PORT), "-U", "postgres", "test"],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise ServiceUnavailable(f"PostgreSQL: createdb test failed: {made.stderr.strip()}")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise ServiceUnavailable(
            f"PostgreSQL did not start on port {PG_PORT}: {exc} {detail.decode(errors='replace').strip()} "
            f"(see {log})"
        ) from exc
    if not _wait(postgres_ready, 10):
        raise ServiceUnavailable(f"PostgreSQL did not answer on port {PG_PORT} (see {log})")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# --- RabbitMQ ------------------------------------------------------------------------------------
def rabbitmq_answers(port: int = RABBIT_PORT) -> bool:
    """guest/guest can open an AMQP connection (a listening port alone is not enough: the broker
    accepts TCP before its boot is complete)."""
    if not _port_open(port):
        return False
    from kombu import Connection

    try:
        with Connection(f"amqp://guest:guest@{HOST}:{port}//", connect_timeout=2) as conn:
            conn.connect()
        return True
    except Exception:  # any failure means "not usable yet"
        return False


def ensure_rabbitmq() -> None:
    if rabbitmq_answers():
        return
    if not shutil.which("rabbitmq-server"):
        _apt_install("rabbitmq-server", "RabbitMQ")
        if rabbitmq_answers() or _wait(rabbitmq_answers, 30):  # the package may start it itself
            return
    node = "rabbit" if RABBIT_PORT == 5672 else f"catalog-sync-{RABBIT_PORT}"
    base = Path(f"/tmp/catalog-sync-rabbitmq-{RABBIT_PORT}")
    env = {**os.environ, "RABBITMQ_NODE_PORT": str(RABBIT_PORT), "RABBITMQ_NODE_IP_ADDRESS": HOST}
    if RABBIT_PORT != 5672:  # a second node beside the machine's: its own name, state, ports, config
        base.mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = {HOST}:{RABBIT_PORT}\n")
        (base / "enabled_plugins").write_text("[].\n")
        if _user_exists("rabbitmq"):
            for path in (base, base / "rabbitmq.conf", base / "enabled_plugins"):
                shutil.chown(path, "rabbitmq")
        env.update(
            RABBITMQ_NODENAME=f"{node}@localhost",
            RABBITMQ_DIST_PORT=str(RABBIT_PORT + 20000),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "pid"),
        )
    print(f"starting rabbitmq-server on {HOST}:{RABBIT_PORT}", flush=True)
    try:
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ServiceUnavailable(
            f"RabbitMQ: rabbitmq-server did not start on port {RABBIT_PORT} ({exc})"
        ) from exc
    if not _wait(rabbitmq_answers, 90):
        raise ServiceUnavailable(
            f"RabbitMQ did not accept guest/guest on port {RABBIT_PORT} within 90 seconds "
            "(see rabbitmq's log directory)"
        )


# --- Chromium ------------------------------------------------------------------------------------
# Where Debian's packages put them; the browser test reads the same two paths.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def ensure_chromium() -> None:
    """The headless browser and its WebDriver, both from Debian (the driver matches the browser's
    version only when both come from the same release, which a download from elsewhere does not
    promise)."""
    if chromium_installed():
        return
    _apt_install("chromium", "Chromium", "chromium-driver")
    if not chromium_installed():
        raise ServiceUnavailable(f"Chromium: installed, but {CHROMIUM} or {CHROMEDRIVER} is missing")


ENSURE = {
    "redis": ensure_redis,
    "postgres": ensure_postgres,
    "rabbitmq": ensure_rabbitmq,
    "chromium": ensure_chromium,
}


def ensure(*names: str) -> None:
    for name in names or tuple(ENSURE):
        ENSURE[name]()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "ensure"
    try:
        if command == "ensure":
            unknown = [n for n in argv[2:] if n not in ENSURE]
            if unknown:
                print(
                    f"unknown service(s): {', '.join(unknown)} (one of {', '.join(ENSURE)})", file=sys.stderr
                )
                return 2
            ensure(*argv[2:])
            return 0
        if command == "postgres-ready":
            return 0 if postgres_ready() else 1
    except ServiceUnavailable as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
