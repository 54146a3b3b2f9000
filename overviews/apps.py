from django.apps import AppConfig


class OverviewsConfig(AppConfig):
    name = "overviews"
    verbose_name = "Course overviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Receivers are wired here, not at import time of the signal module (STYLE.md).
        from signals import receivers  # noqa: F401
