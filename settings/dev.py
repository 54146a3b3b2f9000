"""Local development: embedded defaults (SQLite, the SQLAlchemy broker), the stand-in catalog.

``manage.py`` is the only entry point that falls back to these settings; the WSGI application
and the Celery app refuse to start without ``DJANGO_SETTINGS_MODULE``.
"""

from settings.base import *  # noqa: F403
from settings.base import LOOPBACK_HOSTS
from settings.env import env_bool, env_list

DEBUG = env_bool("DJANGO_DEBUG", True)
# DEBUG pages show settings and the URLconf: serve loopback names only unless told otherwise.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", LOOPBACK_HOSTS)

# The bundled stand-in catalog (`python -m standin`, port 8765 by default) unless told otherwise.
CATALOG_API_URL = CATALOG_API_URL or "http://127.0.0.1:8765/api/v1/"  # noqa: F405
CATALOG_OAUTH_URL = CATALOG_OAUTH_URL or "http://127.0.0.1:8765/oauth2/access_token"  # noqa: F405
CATALOG_CLIENT_ID = CATALOG_CLIENT_ID or "standin-client"  # noqa: F405
CATALOG_CLIENT_SECRET = CATALOG_CLIENT_SECRET or "standin-secret"  # noqa: F405
