"""Feature switches (django-waffle), every one named here with what it guards and its default.

Switches are toggled in the admin (Waffle > Switches) or with
``manage.py waffle_switch NAME on|off --create``.
"""

from __future__ import annotations

import waffle

# ON: no catalog request at all -- the publish task, sweeps, refreshes and the staff API all stop
# before the network. Publishes still update the overview content in place. Default: off.
DISABLE_CATALOG_CALLS = "catalog_sync.disable_catalog_calls"

# ON: when a publish CREATES an overview row, fetch its catalog data right after the commit, in
# the publishing process, with a short timeout; on any failure fall back to the per-course task.
# A new course then shows its catalog fields at once instead of after the task runs. Default:
# off: it puts a blocking network call on the publishing request, often a user-facing web worker.
FETCH_ON_CREATE = "catalog_sync.fetch_on_create"

ALL_SWITCHES = {
    DISABLE_CATALOG_CALLS: "kill switch for every catalog call",
    FETCH_ON_CREATE: "fetch catalog data in-process when a publish creates a row",
}


def catalog_calls_disabled() -> bool:
    return waffle.switch_is_active(DISABLE_CATALOG_CALLS)


def fetch_on_create() -> bool:
    return waffle.switch_is_active(FETCH_ON_CREATE)
