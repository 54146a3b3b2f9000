"""Production: every secret from the environment, no defaults; refuses to start without them."""

from settings.base import *  # noqa: F403
from settings.env import env_bool, env_list, env_required

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

SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
