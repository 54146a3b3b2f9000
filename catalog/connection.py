"""Builds the catalog client from the environment (secrets) and the runtime configuration."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from catalog.client import CatalogClient, ClientConfig
from catalog.models import CatalogIntegration

_REQUIRED = ("CATALOG_API_URL", "CATALOG_OAUTH_URL", "CATALOG_CLIENT_ID", "CATALOG_CLIENT_SECRET")


def client_config(config: CatalogIntegration | None = None) -> ClientConfig:
    config = config or CatalogIntegration.current()
    missing = [name for name in _REQUIRED if not getattr(settings, name, None)]
    if missing:
        raise ImproperlyConfigured(
            "the catalog connection is not configured: set " + ", ".join(missing) + " in the environment"
        )
    return ClientConfig(
        api_url=settings.CATALOG_API_URL,
        oauth_url=settings.CATALOG_OAUTH_URL,
        client_id=settings.CATALOG_CLIENT_ID,
        client_secret=settings.CATALOG_CLIENT_SECRET,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_url_length=config.max_url_length,
    )


def build_client(config: CatalogIntegration | None = None) -> CatalogClient:
    return CatalogClient(client_config(config))
