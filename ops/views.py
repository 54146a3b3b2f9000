"""The staff status page, its JSON feed (polled by the page every few seconds) and the "Sweep
now" / "Resume" buttons. Every view is wrapped in ``admin.site.admin_view`` (``ops.urls``):
staff only, a login redirect otherwise, CSRF on the POSTs.

Charts are server-rendered SVG (the geometry is computed here, the template only draws it), so
the page needs nothing from outside this service: no CDN, no chart library.
"""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from kombu.exceptions import OperationalError as BrokerError

import celeryconfig
from catalog.connection import why_calls_are_off
from catalog.walk import AUTO, KEYS, WALK
from ops.admin import WORKER_PING_TIMEOUT, workers_answering
from ops.status import AGE_BUCKETS, Status, problems, snapshot
from tasks.sweep import sweep

log = logging.getLogger("ops.views")

# Who may start or resume a sweep: whoever may change the catalog integration (switch it off,
# change its rate): the same operators, the same weight.
SWEEP_PERMISSION = "catalog.change_catalogintegration"
# "Sweep now"'s optional strategy, passed to the sweep task as ``sync_catalog --strategy`` is:
# keys or walk forces one; auto compares the two estimates; none leaves it to the admin's
# ``sweep_strategy``. A resumed run keeps its own.
SWEEP_STRATEGIES = (AUTO, KEYS, WALK)
# The page reads the JSON feed this often (milliseconds).
POLL_MS = 5000

# Histogram geometry (SVG user units).
CHART_W, CHART_H, CHART_PAD = 560, 180, 24
# Bucket colours, fresh to stale; "never" grey.
AGE_COLOURS = ("#2e7d32", "#558b2f", "#9e9d24", "#f9a825", "#ef6c00", "#c62828", "#9e9e9e")
STATUS_COLOURS = {"ok": "#2e7d32", "missing": "#f9a825", "error": "#c62828", "never": "#9e9e9e"}


def histogram(buckets: list[dict]) -> dict:
    """Bars for the "last checked" histogram: x, y, width, height per bucket, scaled to the
    largest bucket."""
    peak = max((b["count"] for b in buckets), default=0) or 1
    slot = (CHART_W - 2 * CHART_PAD) / len(buckets)
    inner = CHART_H - 2 * CHART_PAD
    bars = []
    for i, (bucket, colour) in enumerate(zip(buckets, AGE_COLOURS, strict=False)):
        height = round(inner * bucket["count"] / peak, 1)
        x = round(CHART_PAD + i * slot + slot * 0.15, 1)
        bars.append(
            {
                **bucket,
                "x": x,
                "y": round(CHART_PAD + inner - height, 1),
                "width": round(slot * 0.7, 1),
                "height": height,
                "colour": colour,
                "label_x": round(x + slot * 0.35, 1),
                "label_y": round(CHART_PAD + inner - height - 4, 1),
            }
        )
    return {"width": CHART_W, "height": CHART_H, "base_y": CHART_H - CHART_PAD + 14, "bars": bars}


def status_bars(by_status: list[dict], total: int) -> list[dict]:
    return [
        {
            **row,
            "percent": round(100.0 * row["count"] / total, 1) if total else 0.0,
            "colour": STATUS_COLOURS.get(row["status"], "#607d8b"),
        }
        for row in by_status
    ]


def schedule_gauge(status: Status) -> dict | None:
    """The last complete sweep's age on a track of 0 .. 1.5 x the schedule's interval, with a
    mark at the interval: a bar past the mark is a sweep overdue."""
    if status.schedule_seconds is None:
        return None
    span = 1.5 * status.schedule_seconds
    age = status.last_sweep_age
    return {
        "fill": round(100.0 * min(age, span) / span, 1) if age is not None else 100.0,
        "mark": round(100.0 / 1.5, 1),
        "overdue": status.sweep_overdue,
    }


def rate_gauge(status: Status) -> dict:
    """Requests per minute as a share of the limit; no gauge without a limit (a bar that is
    full at any rate would read as "at the limit")."""
    limit = status.rate_limit_per_minute
    if limit <= 0:
        return {"fill": 0.0, "capped": False}
    return {"fill": round(min(100.0, 100.0 * status.requests_per_minute / limit), 1), "capped": True}


def _context(request: HttpRequest, status: Status) -> dict:
    return {
        **admin.site.each_context(request),
        "title": "Catalog sync status",
        "status": status,
        "problems": problems(status),
        "histogram": histogram(status.age_buckets),
        "age_labels": [b[0] for b in AGE_BUCKETS],
        "status_bars": status_bars(status.by_status, status.overviews),
        "schedule": schedule_gauge(status),
        "rate": rate_gauge(status),
        "poll_ms": POLL_MS,
        "poll_seconds": f"{POLL_MS / 1000:g}",
        "may_sweep": request.user.has_perm(SWEEP_PERMISSION),
        "failed_courses": [
            {**row, "url": reverse("admin:overviews_courseoverview_change", args=[quote(row["key"])])}
            for row in status.failed_courses
        ],
        "failed_chunks": [
            {**row, "run_url": reverse("admin:catalog_sweeprun_change", args=[row["run_id"]])}
            for row in status.failed_chunks
        ],
    }


@require_GET
def status_page(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(request, "ops/status.html", _context(request, snapshot()))


@require_GET
def status_json(request: HttpRequest) -> JsonResponse:
    status = snapshot()
    return JsonResponse({**status.as_dict(), "problems": problems(status)})


@require_POST
def trigger_sweep(request: HttpRequest) -> HttpResponse:
    """Enqueue the sweep task, as ``sync_catalog --async`` does, with the form's optional
    ``strategy`` (``SWEEP_STRATEGIES``; anything else is a 400 with a JSON error). "Resume" is the
    same trigger: a running run whose heartbeat is older than the lease is taken over and goes on
    from its checkpoint, with the strategy it had; a live one makes the task a logged no-op
    (single flight)."""
    if not request.user.has_perm(SWEEP_PERMISSION):
        raise PermissionDenied
    resume = request.POST.get("action") == "resume"
    strategy = request.POST.get("strategy") or None
    if strategy is not None and strategy not in SWEEP_STRATEGIES:
        # the page's select offers only these: anything else is a hand-made request
        return JsonResponse(
            {
                "error": f"strategy must be one of {', '.join(SWEEP_STRATEGIES)} (or left out), "
                f"not {strategy[:20]!r}"
            },
            status=400,
        )
    back = redirect("ops-status")
    reason = why_calls_are_off()
    if reason:
        messages.warning(request, f"{reason.capitalize()}: no sweep was queued.")
        return back
    try:
        result = sweep.apply_async(
            kwargs={"trigger": "admin", "strategy": strategy}, expires=celeryconfig.SWEEP_EXPIRES
        )
    except BrokerError as exc:
        log.error("ops: sweep not queued: broker unavailable: %s", exc)
        messages.error(request, f"The broker is unavailable; no sweep was queued ({exc}).")
        return back
    log.info(
        "ops: %s queued by %s (task %s, strategy %s)",
        "resume" if resume else "sweep",
        request.user,
        result.id,
        strategy or "as configured",
    )
    messages.success(
        request,
        ("Resume queued: the sweep goes on from its checkpoint" if resume else "Sweep queued")
        + (f", strategy {strategy}" if strategy and not resume else "")
        + f" (task {result.id}). A running sweep that is alive makes it a no-op.",
    )
    if workers_answering() is False:
        messages.warning(
            request,
            f"No Celery worker answered a ping within {WORKER_PING_TIMEOUT:g} s: "
            "the sweep waits in the queue until a worker runs.",
        )
    return back
