"""The operator surface: the Django admin (overviews with their "Refresh from catalog" action,
the sync's configuration and sweep records) and the commands that may enqueue work
(``sync_catalog``, ``refresh_course``). It sits above the sync core and the tasks."""
