"""Django settings, split by environment: ``base`` holds what every environment shares.

Pick one with ``DJANGO_SETTINGS_MODULE``: ``settings.dev`` (default), ``settings.test`` or
``settings.production``.
"""
