"""Request throttles of the API (DRF throttling, counts in Django's cache).

A scope's rate is read at each request from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (the
environment sets it: ``API_REFRESH_THROTTLE_RATE``, ``HEALTH_THROTTLE_RATE``), not frozen when
this module is imported as DRF's own classes do, so a settings override reaches them.

DRF's counter is a list read and written back (``cache.get`` then ``cache.set``): two requests
racing on one count can both be admitted, a count the cache loses (eviction, a Redis restart)
starts its window again. A lost count costs extra admitted requests, never a wrong row: the
refresh requests they let through still coalesce on the course's pending marker and its
database outbox marker.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

log = logging.getLogger("api.throttling")

REFRESH_SCOPE = "catalog_refresh"
HEALTH_SCOPE = "health"


class SettingsScopedRateThrottle(ScopedRateThrottle):
    """The view's ``throttle_scope``, counted per user (authenticated) or per client address
    (anonymous; ``NUM_PROXIES`` says which address, see settings)."""

    def get_rate(self) -> str | None:
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"no throttle rate set for the scope {self.scope!r}") from None

    def allow_request(self, request, view) -> bool:
        """Admits the request when the cache cannot be read: a cache outage must not turn
        ``/health/`` into a 500 (it reports the cache down instead) or block every refresh."""
        try:
            return super().allow_request(request, view)
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            log.warning(
                "throttle: %s count unavailable, request admitted: %s", self.scope, type(exc).__name__
            )
            return True

    def get_cache_key(self, request, view) -> str | None:
        user = getattr(request, "user", None)  # None when anonymous (UNAUTHENTICATED_USER)
        if user is not None and user.is_authenticated:
            ident = f"user-{user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
