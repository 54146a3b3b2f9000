"""Invariants between the Celery numbers: a violation means a task runs twice or is killed early."""

import celeryconfig as conf
from catalog.connection import client_config
from catalog.models import CatalogIntegration
from tasks.app import app
from tasks.refresh import refresh_course
from tasks.sweep import sweep, sweep_chunk


def test_longest_countdown_and_hard_limit_are_below_the_visibility_timeout():
    assert conf.REFRESH_RETRY_CAP < conf.BROKER_VISIBILITY_TIMEOUT
    assert conf.REFRESH_TIME_LIMIT < conf.BROKER_VISIBILITY_TIMEOUT
    if app.conf.broker_url.startswith("redis://"):
        assert app.conf.broker_transport_options["visibility_timeout"] == conf.BROKER_VISIBILITY_TIMEOUT


def test_soft_limit_is_below_hard_limit():
    assert refresh_course.soft_time_limit < refresh_course.time_limit


def test_http_timeouts_times_attempts_fit_in_the_soft_limit(settings, db):
    settings.CATALOG_API_URL = "https://c.example/api/v1/"
    settings.CATALOG_OAUTH_URL = "https://c.example/oauth2/access_token"
    settings.CATALOG_CLIENT_ID, settings.CATALOG_CLIENT_SECRET = "id", "secret"
    budget = conf.REFRESH_SOFT_TIME_LIMIT / conf.REFRESH_HTTP_ATTEMPTS
    # even with timeouts set absurdly high in the admin, the task's client is clamped to its budget
    for connect, read in ((3.05, 10.0), (30.0, 300.0)):
        cfg = client_config(
            CatalogIntegration(connect_timeout=connect, read_timeout=read), timeout_budget=budget
        )
        assert (
            cfg.connect_timeout + cfg.read_timeout
        ) * conf.REFRESH_HTTP_ATTEMPTS <= conf.REFRESH_SOFT_TIME_LIMIT


def test_retries_are_bounded_but_ride_out_an_outage_of_several_minutes():
    caps = [
        min(conf.REFRESH_RETRY_CAP, conf.REFRESH_RETRY_BASE * 2**n) for n in range(conf.REFRESH_MAX_RETRIES)
    ]
    # full jitter: the expected wait is half of each cap
    assert sum(caps) / 2 >= 5 * 60
    assert sum(caps) < conf.BROKER_VISIBILITY_TIMEOUT


def test_prefetch_is_one_and_tasks_ack_late_on_their_own_queue():
    assert app.conf.worker_prefetch_multiplier == 1
    assert refresh_course.acks_late and refresh_course.reject_on_worker_lost
    assert refresh_course.name == "catalog_sync.refresh_course"
    assert app.amqp.router.route({}, refresh_course.name)["queue"].name == conf.REFRESH_QUEUE


def test_sweep_tasks_limits_and_queues():
    for task in (sweep, sweep_chunk):
        assert task.soft_time_limit < task.time_limit < conf.BROKER_VISIBILITY_TIMEOUT
        assert task.acks_late and task.reject_on_worker_lost
        assert app.amqp.router.route({}, task.name)["queue"].name == conf.SWEEP_QUEUE
    assert sweep.name == "catalog_sync.sweep" and sweep_chunk.name == "catalog_sync.sweep_chunk"
    # the chunk's HTTP budget (clamped timeouts times attempts) fits in its soft limit
    budget = conf.SWEEP_CHUNK_SOFT_TIME_LIMIT / conf.SWEEP_CHUNK_HTTP_ATTEMPTS
    assert budget * conf.SWEEP_CHUNK_HTTP_ATTEMPTS <= conf.SWEEP_CHUNK_SOFT_TIME_LIMIT
    # a chunk lost with its worker is redone before a sweep's lease would expire twice over
    from catalog.sweep import LEASE_TTL

    assert conf.SWEEP_CHUNK_TIME_LIMIT < LEASE_TTL


def test_the_beat_schedule_exists_with_an_expiry(db):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="catalog_sync.sweep")
    assert task.enabled and task.expire_seconds and task.queue == conf.SWEEP_QUEUE
    assert task.expire_seconds <= task.interval.every * 3600
