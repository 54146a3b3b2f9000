"""Runtime configuration with history (django-config-models, the Open edX way)."""

from __future__ import annotations

from config_models.models import ConfigurationModel
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

DEFAULT_PAGE_SIZE = 100


class CatalogIntegration(ConfigurationModel):
    """Every save is a new row: the admin shows who changed what and when.

    ``CatalogIntegration.current()`` returns the newest row (or an unsaved one with the defaults
    below). Rows are cached for ``cache_timeout`` seconds per process, so a change reaches every
    worker within that time.
    """

    cache_timeout = 15

    page_size = models.PositiveIntegerField(
        default=DEFAULT_PAGE_SIZE,
        validators=[MinValueValidator(1), MaxValueValidator(2000)],
        help_text="Courses per catalog request in a sweep (overridable per run with --page-size).",
    )
    connect_timeout = models.FloatField(
        default=3.05, validators=[MinValueValidator(0.1)], help_text="Seconds to connect to the catalog."
    )
    read_timeout = models.FloatField(
        default=15.0, validators=[MinValueValidator(0.1)], help_text="Seconds to wait for a catalog answer."
    )
    max_url_length = models.PositiveIntegerField(
        default=4096,
        validators=[MinValueValidator(512)],
        help_text="Bulk requests by key are split so that no URL is longer than this.",
    )
    page_attempts = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Attempts per page in a synchronous sweep before the sweep stops (exit 1).",
    )

    class Meta(ConfigurationModel.Meta):
        verbose_name = "catalog integration configuration"

    def __str__(self) -> str:
        return f"CatalogIntegration(enabled={self.enabled}, page_size={self.page_size})"
