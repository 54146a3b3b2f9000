"""Reading settings from the environment: one place, typed helpers, clear errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def _env_number(name: str, default: Any, cast: Callable[[str], Any], what: str) -> Any:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {what}, got {value!r}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_required(name: str, *, forbidden: tuple[str, ...] = ()) -> str:
    """A secret production cannot run without: unset, empty or a known default refuses to start."""
    value = os.environ.get(name, "")
    if not value or value in forbidden:
        raise ImproperlyConfigured(
            f"{name} is not set (or is a development default); "
            "settings.production refuses to start without it"
        )
    return value


def require_settings_module(process: str) -> str:
    """The ``DJANGO_SETTINGS_MODULE`` a long-running process was started with, or a clear refusal.

    Only ``manage.py`` falls back to ``settings.dev`` (as cookiecutter-django does): a web or
    worker process that silently ran on development settings would serve with DEBUG on, the
    development secret and a debug 404 that lists every route.
    """
    value = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    if not value.strip():
        raise ImproperlyConfigured(
            f"DJANGO_SETTINGS_MODULE is not set: the {process} does not fall back to development "
            "settings. Set it to settings.production (or settings.dev on a laptop)."
        )
    return value
