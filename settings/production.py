"""Production: every secret from the environment, no defaults; refuses to start without them.

``manage.py check --deploy`` is clean under these settings (``tests/test_security.py`` runs it).
The HTTPS settings assume TLS ends at a reverse proxy or load balancer in front of the web
process, the usual Open edX deployment (Tutor's Caddy, a Kubernetes ingress).
"""

from settings.base import *  # noqa: F403
from settings.env import env_bool, env_int, env_list, env_required, env_str

DEBUG = False
SECRET_KEY = env_required("DJANGO_SECRET_KEY", forbidden=("dev-only-insecure-secret-key",))
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
env_required("DATABASE_URL")
CELERY_BROKER_URL = env_required("CELERY_BROKER_URL")
# The coalescing markers, the sweep lease and the fleet throttle need a shared, atomic cache.
CACHE_URL = env_required("CACHE_URL")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
CATALOG_API_URL = env_required("CATALOG_API_URL")
CATALOG_OAUTH_URL = env_required("CATALOG_OAUTH_URL")
CATALOG_CLIENT_ID = env_required("CATALOG_CLIENT_ID")
CATALOG_CLIENT_SECRET = env_required("CATALOG_CLIENT_SECRET", forbidden=("standin-secret",))
# A default would send learners' apps to a localhost about page: no default here.
LMS_ROOT_URL = env_required("LMS_ROOT_URL").rstrip("/")

# --- HTTPS (https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
# HSTS: start short, as cookiecutter-django does; once the site is known to work over HTTPS only,
# raise it to a year (31536000). Browsers remember it: a long value cannot be taken back.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
# The proxy that terminates TLS redirects plain HTTP, so Django does not by default: its redirect
# would also answer a load balancer's plain-HTTP health probe with 301. Set
# DJANGO_SECURE_SSL_REDIRECT=1 when nothing in front redirects.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
if not SECURE_SSL_REDIRECT:
    # security.W008 says "SECURE_SSL_REDIRECT is off"; that is the documented choice above.
    SILENCED_SYSTEM_CHECKS = ["security.W008"]
# How the proxy tells Django the client used HTTPS: "X-Forwarded-Proto=https" (a header name, or
# Django's META form HTTP_X_FORWARDED_PROTO; the value defaults to https). Set it only when the
# proxy always sets or strips that header: otherwise a client could forge it.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
_PROXY_SSL_HEADER = env_str("DJANGO_SECURE_PROXY_SSL_HEADER")
if _PROXY_SSL_HEADER:
    _header, _, _value = _PROXY_SSL_HEADER.partition("=")
    _header = _header.strip().upper().replace("-", "_")
    SECURE_PROXY_SSL_HEADER = (
        _header if _header.startswith("HTTP_") else f"HTTP_{_header}",
        _value.strip() or "https",
    )

# The event bus: a URL that is not Redis fails here, at start, not in the consumer's first read.
if EVENT_BUS_REDIS_CONNECTION_URL and not EVENT_BUS_REDIS_CONNECTION_URL.startswith(  # noqa: F405
    ("redis://", "rediss://", "unix://")
):
    raise ValueError("EVENT_BUS_REDIS_CONNECTION_URL must be a redis://, rediss:// or unix:// URL")

# /metrics: a bearer token short enough to guess is refused at start (unset: /metrics is off).
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:  # noqa: F405 (settings.base)
    raise ValueError("METRICS_TOKEN must be at least 24 characters (e.g. `openssl rand -hex 24`)")
