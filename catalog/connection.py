"""Builds the catalog client from the environment (secrets) and the runtime configuration."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from catalog.models import CatalogIntegration, current_config
from catalog.switches import DISABLE_CATALOG_CALLS, catalog_calls_disabled
from catalog.throttle import FleetThrottle
from catalog_client.client import CatalogClient, ClientConfig
from observability.metrics import observe_catalog_request

_REQUIRED = ("CATALOG_API_URL", "CATALOG_OAUTH_URL", "CATALOG_CLIENT_ID", "CATALOG_CLIENT_SECRET")


def client_config(
    config: CatalogIntegration | None = None,
    *,
    timeout_budget: float | None = None,
    deadline: float | None = None,
) -> ClientConfig:
    """The client's configuration. ``timeout_budget`` caps connect + read timeouts (seconds), so
    that a task's worst-case HTTP attempts fit inside its soft time limit.

    ``deadline``: wall-clock seconds for one catalog call (an API request with the token request
    and the 401 retry it may need, bodies included; ``ClientConfig.deadline``). None: connect +
    read timeout, after the budget's cut. A caller that must answer quickly (a web request
    refreshing in-line) passes a short one; the timeouts are then cut to fit it too.
    """
    config = config or current_config()
    missing = [name for name in _REQUIRED if not getattr(settings, name, None)]
    if missing:
        raise ImproperlyConfigured(
            "the catalog connection is not configured: set " + ", ".join(missing) + " in the environment"
        )
    connect, read = config.connect_timeout, config.read_timeout
    if timeout_budget is not None and connect + read > timeout_budget:
        connect = min(connect, timeout_budget / 3)
        read = timeout_budget - connect
    if deadline is not None:
        connect, read = min(connect, deadline), min(read, deadline)
    return ClientConfig(
        api_url=settings.CATALOG_API_URL,
        oauth_url=settings.CATALOG_OAUTH_URL,
        client_id=settings.CATALOG_CLIENT_ID,
        client_secret=settings.CATALOG_CLIENT_SECRET,
        connect_timeout=connect,
        read_timeout=read,
        max_url_length=config.max_url_length,
        deadline=deadline,
    )


def catalog_api_url() -> str:
    """The configured API URL as the client normalises it (a trailing slash), or "" when unset:
    what request URLs are built on, for planners that size requests before a client exists."""
    api_url = settings.CATALOG_API_URL or ""
    return api_url if not api_url or api_url.endswith("/") else api_url + "/"


class CatalogCallsDisabled(RuntimeError):
    """The kill switch is on (``catalog.switches.DISABLE_CATALOG_CALLS``)."""


def why_calls_are_off(config: CatalogIntegration | None = None) -> str | None:
    """Why no catalog call may be made now (the kill switch, or the admin's ``enabled``), or None."""
    if catalog_calls_disabled():
        return f"catalog calls are disabled by the waffle switch {DISABLE_CATALOG_CALLS!r}"
    if not (config or current_config()).enabled:
        return "the catalog integration is disabled in the admin (Catalog integration configuration)"
    return None


def _allowed_config(config: CatalogIntegration | None) -> CatalogIntegration:
    config = config or current_config()
    reason = why_calls_are_off(config)
    if reason:
        raise CatalogCallsDisabled(reason)
    return config


def build_client(
    config: CatalogIntegration | None = None,
    *,
    timeout_budget: float | None = None,
    deadline: float | None = None,
) -> CatalogClient:
    """A client for the configured catalog; refuses while calls are off (``CatalogCallsDisabled``).
    ``timeout_budget`` and ``deadline``: see ``client_config``."""
    config = _allowed_config(config)
    gate = FleetThrottle(rate_per_second=config.rate_limit_per_second)
    return CatalogClient(
        client_config(config, timeout_budget=timeout_budget, deadline=deadline),
        gate=gate,
        observer=observe_catalog_request,  # every request counted and timed for /metrics
    )


_shared: dict[ClientConfig, CatalogClient] = {}


def shared_client(
    config: CatalogIntegration | None = None,
    *,
    timeout_budget: float | None = None,
    deadline: float | None = None,
) -> CatalogClient:
    """This process's client for the current configuration, kept between tasks so that its OAuth
    token and its pooled connections are reused (a token request per task would double the
    catalog requests of a publish). Call it inside the task, after the worker has forked; don't
    close it. A configuration change (admin, environment) builds a new one and closes the old."""
    config = _allowed_config(config)
    client_cfg = client_config(config, timeout_budget=timeout_budget, deadline=deadline)
    client = _shared.get(client_cfg)
    if client is None:
        for stale in [cfg for cfg in _shared if cfg.api_url != client_cfg.api_url or len(_shared) > 4]:
            _shared.pop(stale).close()
        client = _shared[client_cfg] = CatalogClient(client_cfg)
    client.gate = FleetThrottle(rate_per_second=config.rate_limit_per_second)
    client.observer = observe_catalog_request  # every request counted and timed for /metrics
    return client
