"""Local development: embedded defaults (SQLite, the SQLAlchemy broker), the stand-in catalog."""

from settings.base import *  # noqa: F403
from settings.env import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
