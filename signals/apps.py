from django.apps import AppConfig


class SignalsConfig(AppConfig):
    """Connects the receivers of ``course_published`` once the models are loaded.

    The signal is defined low (``overviews.signals``) and its receivers live here, above the sync:
    the LMS side fires it without importing the sync, and nothing below this app imports it.
    """

    name = "signals"
    label = "catalog_sync_signals"  # no models; a label that cannot clash with another "signals"
    verbose_name = "Publish receivers"

    def ready(self) -> None:
        # Receivers are wired here, not at import time of the signal module: importing
        # overviews.signals (the LMS side does, to fire it) must not connect the sync's receivers.
        # events: COURSE_CATALOG_INFO_CHANGED, which the event bus consumer emits in-process.
        from signals import events, receivers  # noqa: F401
