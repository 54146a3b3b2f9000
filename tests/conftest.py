from __future__ import annotations

import pytest
from hypothesis import settings as hypothesis_settings

from catalog_client.client import CatalogClient, ClientConfig

# A shared 2-core machine: wall-clock deadlines would make property tests flaky, not stricter.
hypothesis_settings.register_profile("ci", deadline=None, max_examples=100)
hypothesis_settings.load_profile("ci")

API = "https://catalog.test/api/v1/"
OAUTH = "https://lms.test/oauth2/access_token"


@pytest.fixture
def client_config() -> ClientConfig:
    return ClientConfig(api_url=API, oauth_url=OAUTH, client_id="cid", client_secret="s3cr3t-value")


@pytest.fixture
def catalog_client(client_config):
    with CatalogClient(client_config) as client:
        yield client


@pytest.fixture
def catalog_settings(settings):
    """Django settings pointing the catalog connection at the mocked origin."""
    settings.CATALOG_API_URL = API
    settings.CATALOG_OAUTH_URL = OAUTH
    settings.CATALOG_CLIENT_ID = "cid"
    settings.CATALOG_CLIENT_SECRET = "s3cr3t-value"
    return settings


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Configuration rows are cached (config_models' TieredCache): no test sees another's."""
    from django.core.cache import cache
    from edx_django_utils.cache import RequestCache

    from catalog import connection as catalog_connection

    cache.clear()
    RequestCache.clear_all_namespaces()
    catalog_connection._shared.clear()  # the per-process client: no token carried between tests
    yield
    cache.clear()
    RequestCache.clear_all_namespaces()
    catalog_connection._shared.clear()


@pytest.fixture
def broker(monkeypatch):
    """Point the Celery app at a given broker URL for one test (the env variable wins in Celery)."""
    from tasks.app import app

    def use(url: str) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.delenv("CELERY_BROKER_WRITE_URL", raising=False)
        monkeypatch.setitem(app.conf, "broker_url", url)

    return use


@pytest.fixture
def embedded_broker(broker, tmp_path):
    """The default broker of settings.test (kombu's SQLAlchemy transport on a SQLite file)."""
    broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")


@pytest.fixture
def broker_presumed_up(monkeypatch):
    """A broker failure makes this process skip the broker for a while: not across tests."""
    import tasks.refresh

    monkeypatch.setattr(tasks.refresh, "_broker_down_until", 0.0)


@pytest.fixture
def queued():
    """The per-course task's ``apply_async``, mocked: what was queued; the task never runs here."""
    from unittest import mock

    from tasks.refresh import refresh_course

    with mock.patch.object(refresh_course, "apply_async") as apply_async:
        apply_async.return_value.id = "task-123"
        yield apply_async
