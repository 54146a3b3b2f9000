"""Security of the settings and the entry points: fail closed without DJANGO_SETTINGS_MODULE,
loopback hosts only in development, nothing written at import, ``check --deploy`` clean.

Each case runs in a fresh interpreter: settings are read from the environment once per process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Non-default values for every variable settings.production requires.
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "settings.production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "sync.example.com",
    "DATABASE_URL": "postgres://catalog_sync@db.example.com:5432/catalog_sync",  # never connected to
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
    "CACHE_URL": "redis://127.0.0.1:6379/15",
    "CATALOG_API_URL": "https://discovery.example.com/api/v1/",
    "CATALOG_OAUTH_URL": "https://lms.example.com/oauth2/access_token",
    "CATALOG_CLIENT_ID": "catalog-sync",
    "CATALOG_CLIENT_SECRET": secrets.token_urlsafe(30),
    "LMS_ROOT_URL": "https://lms.example.com",
}

# Variables of the shell (or of CI) that would change what is being tested.
_SCRUBBED = (
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CACHE_URL",
    "DJANGO_SECURE_SSL_REDIRECT",
    "DJANGO_SECURE_HSTS_SECONDS",
    "DJANGO_SECURE_COOKIES",
)


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    base["CATALOG_SYNC_VAR_DIR"] = str(tmp_path / "var")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- fail closed: only manage.py defaults to development settings -----------------------------


@pytest.mark.parametrize(
    ("module", "process"),
    [("wsgi", "WSGI application"), ("tasks", "Celery app"), ("tasks.app", "Celery app")],
)
def test_web_and_worker_refuse_to_start_without_a_settings_module(module, process, tmp_path):
    result = run_python(f"import {module}", tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "django.core.exceptions.ImproperlyConfigured: DJANGO_SETTINGS_MODULE is not set"
    )
    assert process in last_line
    assert not (tmp_path / "var").exists()  # nothing was set up, nothing written


def test_an_empty_settings_module_is_unset_too(tmp_path):
    result = run_python("import wsgi", tmp_path, DJANGO_SETTINGS_MODULE=" ")
    assert result.returncode != 0 and "DJANGO_SETTINGS_MODULE is not set" in result.stderr


def test_the_wsgi_application_starts_with_a_settings_module(tmp_path):
    result = run_python(
        "import wsgi; from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)",
        tmp_path,
        DJANGO_SETTINGS_MODULE="settings.test",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["settings.test", "False"]


def test_manage_py_alone_defaults_to_development_settings(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    base["CATALOG_SYNC_VAR_DIR"] = str(tmp_path / "var")
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.SETTINGS_MODULE)",
        ],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "settings.dev"


# --- hosts --------------------------------------------------------------------------------------

LOOPBACK = ["localhost", "127.0.0.1", "[::1]", "testserver"]
PRINT_HOSTS = "import json, importlib; print(json.dumps(importlib.import_module({!r}).ALLOWED_HOSTS))"


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("settings.dev", {}, LOOPBACK),
        ("settings.test", {}, LOOPBACK),
        ("settings.base", {}, []),
        ("settings.production", PRODUCTION_ENV | {"DJANGO_ALLOWED_HOSTS": ""}, []),
        ("settings.production", PRODUCTION_ENV, ["sync.example.com"]),
        ("settings.dev", {"DJANGO_ALLOWED_HOSTS": "dev.example.com"}, ["dev.example.com"]),
    ],
)
def test_allowed_hosts_default_to_loopback_in_development_and_tests_only(module, env, expected, tmp_path):
    import json

    result = run_python(PRINT_HOSTS.format(module), tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_development_settings_answer_400_for_a_non_loopback_host(tmp_path):
    code = (
        "import django; django.setup(); from django.test import Client; "
        "c = Client(); "
        "print(c.get('/health/', HTTP_HOST='evil.example.com').status_code, "
        "c.get('/nowhere/', HTTP_HOST='evil.example.com').status_code)"
    )
    result = run_python(code, tmp_path, DJANGO_SETTINGS_MODULE="settings.dev", DJANGO_DEBUG="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["400", "400"]


# --- no filesystem writes at import -------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "env"),
    [
        ("settings.dev", {}),
        ("settings.test", {}),
        ("settings.base", {}),
        ("settings.production", PRODUCTION_ENV),
    ],
)
def test_importing_settings_writes_nothing(module, env, tmp_path):
    var = tmp_path / "var"
    result = run_python(
        f"import importlib; m = importlib.import_module({module!r}); print(m.VAR_DIR)",
        tmp_path,
        **({"DATABASE_URL": f"sqlite:///{var / 'db' / 'x.sqlite3'}"} | env),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(var)
    assert list(tmp_path.iterdir()) == []


def test_django_setup_creates_the_directories_the_sqlite_files_need(tmp_path):
    database = tmp_path / "db" / "nested" / "catalog.sqlite3"
    broker = tmp_path / "broker-dir" / "broker.sqlite3"
    result = run_python(
        "import django; django.setup()",
        tmp_path,
        DJANGO_SETTINGS_MODULE="settings.dev",
        DATABASE_URL=f"sqlite:///{database}",
        CELERY_BROKER_URL=f"sqla+sqlite:///{broker}",
    )
    assert result.returncode == 0, result.stderr
    assert database.parent.is_dir() and broker.parent.is_dir()
    assert not database.exists() and not broker.exists()  # directories only: SQLite makes the files
    assert not (tmp_path / "var").exists()  # nothing configured there, nothing created there


def test_the_default_local_state_directory_is_created_on_setup_not_on_import(tmp_path):
    result = run_python(
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('migrate', verbosity=0)",
        tmp_path,
        DJANGO_SETTINGS_MODULE="settings.dev",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "catalog_sync.sqlite3").is_file()


# --- manage.py check --deploy -------------------------------------------------------------------


def check_deploy(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env = base | PRODUCTION_ENV | extra
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    result = check_deploy(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output
    assert "WARNING" not in output and "security." not in output


def test_check_deploy_still_warns_when_production_is_weakened(tmp_path):
    """The check is not silenced wholesale: turning HSTS and secure cookies off is reported."""
    result = check_deploy(tmp_path, DJANGO_SECURE_HSTS_SECONDS="0", DJANGO_SECURE_COOKIES="0")
    assert result.returncode != 0
    for check in ("security.W004", "security.W012", "security.W016"):
        assert check in result.stderr


def test_production_https_settings(tmp_path):
    code = (
        "import importlib, json; m = importlib.import_module('settings.production'); "
        "print(json.dumps([m.SECURE_HSTS_SECONDS, m.SECURE_SSL_REDIRECT, "
        "getattr(m, 'SECURE_PROXY_SSL_HEADER', None), m.SESSION_COOKIE_SECURE, m.DEBUG]))"
    )
    import json

    default = run_python(code, tmp_path, **PRODUCTION_ENV)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout) == [60, False, None, True, False]
    behind_proxy = run_python(
        code,
        tmp_path,
        **PRODUCTION_ENV,
        DJANGO_SECURE_HSTS_SECONDS="31536000",
        DJANGO_SECURE_SSL_REDIRECT="1",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto=https",
        DJANGO_DEBUG="1",  # ignored: production never runs with DEBUG
    )
    assert behind_proxy.returncode == 0, behind_proxy.stderr
    assert json.loads(behind_proxy.stdout) == [
        31536000,
        True,
        ["HTTP_X_FORWARDED_PROTO", "https"],
        True,
        False,
    ]
