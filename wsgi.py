"""WSGI entry point: ``application`` for a WSGI server (gunicorn, uWSGI, mod_wsgi).

Fails closed: without ``DJANGO_SETTINGS_MODULE`` it refuses to start instead of falling back to
development settings (``settings.env.require_settings_module``). ``make web`` serves through
``manage.py runserver``, which keeps the development default.
"""

from django.core.wsgi import get_wsgi_application

from settings.env import require_settings_module

require_settings_module("WSGI application")
application = get_wsgi_application()
