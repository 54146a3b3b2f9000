"""The log context: which course, task and sweep a log line belongs to.

Set by the code that knows (the Celery signal hooks in ``observability.celery`` for a task's id,
course key and sweep; ``catalog.sweep`` for a sweep it starts; the publish receiver for its
course), read by ``ContextFilter`` into every log record, so that ``LOG_FORMAT=json`` lines carry
``course_key``, ``task_id`` and ``sweep_id`` and one search follows a course through publish,
task and sweep. Context variables: a thread or an asyncio task sees only its own values.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from django.core.signals import request_started

T = TypeVar("T")

FIELDS: tuple[str, ...] = ("course_key", "task_id", "sweep_id")

_vars: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in FIELDS}


def bind(**fields: object) -> dict[str, Token]:
    """Set some fields (None clears one); returns the tokens ``unbind`` restores."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {sorted(unknown)}; known: {FIELDS}")
    return {name: _vars[name].set(None if value is None else str(value)) for name, value in fields.items()}


def unbind(tokens: dict[str, Token]) -> None:
    for name, token in tokens.items():
        _vars[name].reset(token)


@contextmanager
def context(**fields: object) -> Iterator[None]:
    """``with context(course_key=...):`` the fields hold inside the block only."""
    tokens = bind(**fields)
    try:
        yield
    finally:
        unbind(tokens)


def current() -> dict[str, str]:
    """The fields known now (unknown ones left out)."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


def clear() -> None:
    for var in _vars.values():
        var.set(None)


class ContextFilter(logging.Filter):
    """Adds the known context fields to each record (never overwriting an ``extra=`` of the call),
    so a formatter can print them; the JSON formatter writes every such attribute."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def binding(field: str, position: int = 0) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: during each call, ``field`` holds the call's argument at ``position`` (or the
    keyword of the same name), e.g. ``@binding("course_key")`` on ``f(course_key, ...)``."""

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def bound(*args: Any, **kwargs: Any) -> T:
            value = kwargs.get(field, args[position] if len(args) > position else None)
            with context(**{field: value}):
                return func(*args, **kwargs)

        return bound

    return decorate


def _clear_on_request(**_: Any) -> None:
    """Each web request starts without context: a thread of the web server serves many requests,
    and something bound during one (an in-process sweep's id) must not label the next."""
    clear()


request_started.connect(_clear_on_request, dispatch_uid="observability.logcontext.clear")
