from django.apps import AppConfig


class OverviewsConfig(AppConfig):
    name = "overviews"
    verbose_name = "Course overviews"
    default_auto_field = "django.db.models.BigAutoField"
