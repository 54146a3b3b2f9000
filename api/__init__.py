"""The HTTP API: the staff refresh endpoint, the mobile enrollments endpoint and the health check.

A plain module, not a Django app (it has no models): routes in ``api.urls``, included by ``urls``.
"""
