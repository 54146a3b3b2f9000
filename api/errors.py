"""JSON errors for the API: every answer under ``/api/`` (and ``/health/``) is JSON, also the 404
of a route that does not exist and the 500 of a bug, and never echoes a long input back.

``urls.handler400``, ``handler403``, ``handler404`` and ``handler500`` call these; pages outside
the API (the admin) keep Django's HTML pages. With ``DEBUG`` on, Django shows its technical
pages instead (development only).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIXES = ("/api/", "/health/")
# Longest piece of caller input an error message repeats (a course key is at most 255 long).
ECHO_LIMIT = 100


def short(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a caller's value, cut to ``limit`` characters: an error names what it refused
    without sending 10,000 characters back (or writing them to the log)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(str(value))} characters)"


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return JsonResponse({"error": "bad request"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return JsonResponse({"error": "forbidden"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path):
        return JsonResponse({"error": "not found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path):
        return JsonResponse({"error": "internal server error"}, status=500)
    return defaults.server_error(request)


def exception_handler(exc: Exception, context: dict) -> object:
    """DRF's handler, plus ``error`` beside DRF's ``detail``: the API's errors all carry ``error``."""
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data.setdefault("error", str(response.data["detail"]))
    return response
