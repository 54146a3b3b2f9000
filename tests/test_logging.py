"""LOG_FORMAT=json: one JSON object per line, carrying course_key, task_id and sweep_id when
known (observability.logcontext), set by the Celery signal hooks and by the sweep."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from observability import logcontext

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process: settings are read once, at start, from the environment.
TASK_LINES = """
import logging
from celery.signals import task_postrun, task_prerun
from tasks.refresh import refresh_course
from tasks.sweep import sweep_chunk

log = logging.getLogger("tasks.refresh")
log.info("before any task")
task_prerun.send(sender=refresh_course, task_id="task-123", task=refresh_course,
                 args=("course-v1:Log+Json+1",), kwargs={})
log.warning("catalog task: %s fetched", "course-v1:Log+Json+1")
task_postrun.send(sender=refresh_course, task_id="task-123", task=refresh_course, args=(), kwargs={})
task_prerun.send(sender=sweep_chunk, task_id="task-456", task=sweep_chunk,
                 args=(), kwargs={"run_id": 77, "chunk_id": 3, "first_key": "a", "last_key": "b"})
logging.getLogger("catalog.sweep").info("chunk done")
task_postrun.send(sender=sweep_chunk, task_id="task-456", task=sweep_chunk, args=(), kwargs={})
log.info("after the tasks")
"""


@pytest.fixture(autouse=True)
def _no_context_left():
    """Other tests (an in-process sweep) may leave context bound in this thread."""
    logcontext.clear()
    yield
    logcontext.clear()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "DJANGO_SETTINGS_MODULE")}
    environ.update(DJANGO_SETTINGS_MODULE="settings.dev", **env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


def test_json_lines_carry_the_task_id_and_course_key():
    result = run_python(TASK_LINES, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    by_message = {line["message"]: line for line in lines}
    task_line = by_message["catalog task: course-v1:Log+Json+1 fetched"]
    assert task_line["task_id"] == "task-123"
    assert task_line["course_key"] == "course-v1:Log+Json+1"
    assert task_line["level"] == "WARNING" and task_line["logger"] == "tasks.refresh"
    assert "sweep_id" not in task_line
    chunk_line = by_message["chunk done"]
    assert (chunk_line["task_id"], chunk_line["sweep_id"]) == ("task-456", "77")
    assert "course_key" not in chunk_line
    for message in ("before any task", "after the tasks"):  # outside a task: no stale context
        assert not {"task_id", "course_key", "sweep_id"} & by_message[message].keys()


def test_plain_is_the_default_and_has_no_json():
    result = run_python(TASK_LINES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "INFO tasks.refresh: before any task" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("{")]


def test_an_unknown_log_format_refuses_to_start():
    result = run_python("import django; django.setup()", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json, not 'xml'" in result.stderr


def test_context_holds_inside_its_block_only(caplog):
    filt = logcontext.ContextFilter()
    log = logging.getLogger("test.logcontext")
    log.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="test.logcontext"):
            with logcontext.context(course_key="course-v1:A+B+C", sweep_id=9):
                log.info("inside")
                log.info("explicit", extra={"course_key": "course-v1:X+Y+Z"})  # an extra= wins
            log.info("outside")
    finally:
        log.removeFilter(filt)
    inside, explicit, outside = caplog.records
    assert (inside.course_key, inside.sweep_id) == ("course-v1:A+B+C", "9")
    assert explicit.course_key == "course-v1:X+Y+Z"
    assert not hasattr(outside, "course_key") and not hasattr(outside, "sweep_id")


def test_unknown_context_field_is_refused():
    with pytest.raises(TypeError, match="unknown log context field"):
        logcontext.bind(user="x")


@pytest.mark.django_db
def test_a_started_sweep_names_itself_in_the_log_context():
    from catalog.sweep import start_sweep

    try:
        run = start_sweep("test")
        assert run is not None
        assert logcontext.current()["sweep_id"] == str(run.pk)
    finally:
        logcontext.clear()


def test_the_publish_after_commit_names_its_course(monkeypatch, caplog):
    """A publish's after-commit step (enqueue, or the fallback's warnings) logs with its course key."""
    from signals import publish
    from tasks import refresh as tasks_refresh

    seen = []

    def enqueue(course_key):
        seen.append(logcontext.current().get("course_key"))
        logging.getLogger("tasks.refresh").warning("catalog refresh: broker unavailable for %s", course_key)
        return False

    monkeypatch.setattr(tasks_refresh, "enqueue_refresh", enqueue)
    filt = logcontext.ContextFilter()
    logging.getLogger("tasks.refresh").addFilter(filt)
    try:
        with caplog.at_level(logging.WARNING, logger="tasks.refresh"):
            publish._after_commit("course-v1:Pub+Log+1", created=False)
    finally:
        logging.getLogger("tasks.refresh").removeFilter(filt)
    assert seen == ["course-v1:Pub+Log+1"]
    assert caplog.records[-1].course_key == "course-v1:Pub+Log+1"
    assert "course_key" not in logcontext.current()  # not left behind after the call


@pytest.mark.django_db  # request_started's other receivers close old database connections
def test_each_web_request_starts_without_context():
    from django.core.signals import request_started

    logcontext.bind(sweep_id=5, course_key="course-v1:Left+Over+1")
    request_started.send(sender=None)
    assert logcontext.current() == {}
