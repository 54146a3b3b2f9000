from django.apps import AppConfig


class OpsConfig(AppConfig):
    """No models: the admin registrations of other apps' models and the operator commands."""

    name = "ops"
    label = "catalog_sync_ops"  # no models; a label that cannot clash with another "ops"
    verbose_name = "Operations"
