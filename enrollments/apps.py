from django.apps import AppConfig


class EnrollmentsConfig(AppConfig):
    name = "enrollments"
    verbose_name = "Course enrollments"
    default_auto_field = "django.db.models.BigAutoField"
