from __future__ import annotations

from rest_framework.permissions import BasePermission


class IsSelfOrStaff(BasePermission):
    """The user named by the route's ``username`` argument, or a staff user.

    Checked before the user is looked up, so a non-staff caller cannot tell an unknown username
    (404 for staff) from someone else's (403).
    """

    def has_permission(self, request, view) -> bool:
        user = request.user  # None for anonymous requests (REST_FRAMEWORK["UNAUTHENTICATED_USER"])
        if user is None or not user.is_authenticated:
            return False
        return bool(user.is_staff) or user.get_username() == view.kwargs.get("username")
