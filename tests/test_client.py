"""The catalog client against the wire: ``responses`` for the HTTP exchanges, a local socket server
for what only a real connection shows (a truncated body, a read timeout, a refused connection).

Runs without Django: ``python -m pytest -p no:django tests/test_client.py``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_client.client import CatalogClient, ClientConfig, parse_retry_after, redact_url
from catalog_client.errors import (
    CatalogConnectionError,
    CatalogError,
    CatalogMalformedResponse,
    CatalogPermanentError,
    CatalogResponseTooLarge,
    CatalogRetryableError,
    CatalogServerError,
    CatalogThrottled,
    CatalogTimeout,
    is_retryable,
)
from standin import semantics

API = "https://discovery.example.com/api/v1/"
OAUTH = "https://lms.example.com/oauth2/access_token"
SECRET = "s3cr3t-Client-Secret-4f9a"
TOKEN = "eyJ.token-value-77c1"
TOKEN_2 = "eyJ.token-value-second-0b2e"
LIST_URL = re.compile(re.escape(API + "course_runs/") + r"(\?.*)?$")
DEMO = "course-v1:edX+DemoX+Demo_Course"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(**overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "api_url": API,
        "oauth_url": OAUTH,
        "client_id": "lms-catalog-worker",
        "client_secret": SECRET,
    }
    values.update(overrides)
    return ClientConfig(**values)


def make_client(clock: FakeClock | None = None, **overrides: Any) -> CatalogClient:
    return CatalogClient(make_config(**overrides), clock=clock or FakeClock())


def run(key: str, **fields: Any) -> dict[str, Any]:
    """A catalog course run payload (the fields that matter here)."""
    data = {
        "key": key,
        "title": f"Title of {key}",
        "marketing_url": None,
        "content_language": "en-us",
        "eligible_for_financial_aid": True,
        "hidden": False,
    }
    data.update(fields)
    return data


def page(results: list[Any], count: int | None = None, next: str | None = None) -> dict[str, Any]:
    return {
        "count": len(results) if count is None else count,
        "next": next,
        "previous": None,
        "results": results,
    }


def add_token(
    rsps: responses.RequestsMock, token: str = TOKEN, expires_in: float = 36000
) -> responses.BaseResponse:
    return rsps.add(
        responses.POST, OAUTH, json={"access_token": token, "expires_in": expires_in, "token_type": "JWT"}
    )


def api_calls(rsps: responses.RequestsMock) -> list[Any]:
    return [call for call in rsps.calls if call.request.url.startswith(API)]


def query_of(url: str) -> dict[str, str]:
    """The query as Django's QueryDict reads it (``+`` becomes a space)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def raw_param(url: str, name: str) -> str:
    """A query parameter exactly as sent, before any decoding."""
    for part in urlsplit(url).query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    raise AssertionError(f"{name} not in {url}")


class FakeCatalog:
    """The list route as course-discovery answers it, from ``standin.semantics`` (the stand-in's
    own rules: ``keys`` filter, ordering by ``lower(key)``, page-number mode only when ``page`` is
    sent, else limit 20 with ``page_size`` ignored, absolute ``next`` links with sorted query
    keys), with an optional page-size cap. Records every URL asked."""

    def __init__(self, keys: Sequence[str] = (), max_page_size: int | None = None) -> None:
        self.runs = {key: run(key) for key in keys}
        self.max_page_size = max_page_size
        self.urls: list[str] = []

    def __call__(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.urls.append(request.url)
        try:
            body = semantics.list_body(
                request.url, self.runs, client="lms-catalog-worker", max_page_size=self.max_page_size or 0
            )
        except semantics.Answer as error:
            return error.to_responses()
        return semantics.json_answer(200, body).to_responses()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Overrides the suite's Django cache reset: the client has no Django and no cache."""


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> Iterator[CatalogClient]:
    with make_client() as catalog:
        yield catalog


# -- configuration ----------------------------------------------------------------------------------


def test_config_normalises_api_url_and_masks_the_secret() -> None:
    config = make_config(api_url="https://discovery.example.com/api/v1")

    assert config.api_url == API
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert "client_secret='***'" in repr(config)


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_url": "discovery.example.com/api/v1/"},
        {"oauth_url": "ftp://lms.example.com/token"},
        {"client_secret": ""},
        {"read_timeout": 0},
        {"max_url_length": 40},
    ],
)
def test_config_refuses_unusable_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as excinfo:
        make_config(**overrides)
    assert SECRET not in str(excinfo.value)


def test_session_is_pooled_verifies_tls_and_never_retries_by_itself() -> None:
    with make_client() as catalog:
        adapter = catalog.session.get_adapter(API)
        assert adapter.max_retries.total == 0
        assert adapter._pool_maxsize == 10
        assert catalog.session.verify is True


# -- token ------------------------------------------------------------------------------------------


def test_token_is_fetched_once_cached_and_sent_as_jwt(rsps: responses.RequestsMock) -> None:
    token_call = add_token(rsps)
    rsps.add(responses.GET, API + "course_runs/course-v1%3AedX%2BDemoX%2BDemo_Course/", json=run(DEMO))

    with make_client() as catalog:
        catalog.get_course_run(DEMO)
        catalog.get_course_run(DEMO)

        assert token_call.call_count == 1
        assert catalog.tokens_fetched == 1
        assert catalog.requests_made == 3  # the token request counts: the catalog side saw it
    form = parse_qs(rsps.calls[0].request.body)
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["lms-catalog-worker"],
        "client_secret": [SECRET],
        "token_type": ["jwt"],
    }
    for call in api_calls(rsps):
        assert call.request.headers["Authorization"] == f"JWT {TOKEN}"
        assert call.request.headers["User-Agent"] == "catalog-sync/0.1"


def test_token_is_refreshed_margin_seconds_before_it_expires(rsps: responses.RequestsMock) -> None:
    add_token(rsps, TOKEN, expires_in=3600)
    add_token(rsps, TOKEN_2, expires_in=3600)
    rsps.add(responses.GET, LIST_URL, json=page([]))
    clock = FakeClock()
    catalog = make_client(clock)

    catalog.get_course_runs(["a"])
    clock.advance(3600 - 60 - 1)
    catalog.get_course_runs(["a"])
    assert catalog.tokens_fetched == 1
    clock.advance(2)
    catalog.get_course_runs(["a"])

    assert catalog.tokens_fetched == 2
    assert api_calls(rsps)[-1].request.headers["Authorization"] == f"JWT {TOKEN_2}"


def test_a_margin_longer_than_a_short_token_is_capped_to_half_its_life(rsps: responses.RequestsMock) -> None:
    add_token(rsps, TOKEN, expires_in=30)
    rsps.add(responses.GET, LIST_URL, json=page([]))
    clock = FakeClock()
    catalog = make_client(clock)

    catalog.get_course_runs(["a"])
    clock.advance(14)
    catalog.get_course_runs(["a"])

    assert catalog.tokens_fetched == 1


def test_401_fetches_a_new_token_and_retries_once(rsps: responses.RequestsMock) -> None:
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.add(responses.GET, LIST_URL, status=401, json={"detail": "Token has expired."})
    rsps.add(responses.GET, LIST_URL, json=page([run("a")]))
    catalog = make_client()

    assert list(catalog.get_course_runs(["a"])) == ["a"]

    calls = api_calls(rsps)
    assert [c.request.headers["Authorization"] for c in calls] == [f"JWT {TOKEN}", f"JWT {TOKEN_2}"]
    assert catalog.tokens_fetched == 2
    assert catalog.requests_made == 4  # token, 401, token, the retry


def test_a_second_401_is_permanent(rsps: responses.RequestsMock) -> None:
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.add(responses.GET, LIST_URL, status=401, json={"detail": "Invalid token."})
    catalog = make_client()

    with pytest.raises(CatalogPermanentError) as excinfo:
        catalog.get_course_runs(["a"])

    assert excinfo.value.status == 401
    assert not is_retryable(excinfo.value)
    assert "Invalid token." in str(excinfo.value)
    assert len(api_calls(rsps)) == 2


@pytest.mark.parametrize("status", [400, 401])
def test_refused_credentials_are_permanent(rsps: responses.RequestsMock, status: int) -> None:
    rsps.add(responses.POST, OAUTH, status=status, json={"error": "invalid_client"})
    catalog = make_client()

    with pytest.raises(CatalogPermanentError, match="credentials refused") as excinfo:
        catalog.get_course_run(DEMO)

    assert excinfo.value.status == status
    assert "invalid_client" in str(excinfo.value)
    assert catalog.requests_made == 1  # the refused token request; no API request followed


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"status": 503, "body": "upstream down"}, CatalogServerError),
        ({"body": requests.exceptions.ConnectTimeout("slow")}, CatalogTimeout),
        ({"body": requests.ConnectionError("refused")}, CatalogConnectionError),
        ({"json": {"token_type": "JWT"}}, CatalogMalformedResponse),
    ],
)
def test_token_endpoint_outages_are_retryable(
    rsps: responses.RequestsMock, answer: dict[str, Any], error: type[CatalogError]
) -> None:
    rsps.add(responses.POST, OAUTH, **answer)

    with pytest.raises(error) as excinfo:
        make_client().get_course_run(DEMO)
    assert is_retryable(excinfo.value)


def test_a_bearer_token_is_refused(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, OAUTH, json={"access_token": TOKEN, "expires_in": 60, "token_type": "Bearer"})

    with pytest.raises(CatalogPermanentError, match="not a JWT"):
        make_client().get_course_run(DEMO)


# -- timeouts and TLS on every call ---------------------------------------------------------------


def test_every_call_carries_the_configured_timeouts_and_no_redirects(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.add_callback(responses.GET, LIST_URL, callback=FakeCatalog(["a", "b", "c"], max_page_size=1))
    rsps.add(responses.GET, re.compile(re.escape(API) + "course_runs/.+/"), json=run("a"))
    catalog = make_client(connect_timeout=1.5, read_timeout=7.0, verify_tls=False)

    catalog.get_course_runs(["a", "b", "c"])
    catalog.get_course_run("a")
    list(catalog.iter_course_runs(page_size=2))

    assert len(rsps.calls) == 1 + 3 + 1 + 3  # token, 3 capped pages, detail, 3 capped pages
    for call in rsps.calls:
        assert call.request.req_kwargs["timeout"] == (1.5, 7.0)
        assert call.request.req_kwargs["verify"] is False


# -- detail route -----------------------------------------------------------------------------------


def test_detail_quotes_the_key_and_excludes_utm(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, status=500)  # never used: the detail route is its own path
    detail = rsps.add(responses.GET, re.compile(re.escape(API) + "course_runs/.+"), json=run(DEMO))

    assert client.get_course_run(DEMO) == run(DEMO)

    assert (
        detail.calls[0].request.url
        == API + "course_runs/course-v1%3AedX%2BDemoX%2BDemo_Course/?exclude_utm=1"
    )


@pytest.mark.parametrize("detail", ["No CourseRun matches the given query.", "Not found."])
def test_detail_json_404_is_none(rsps: responses.RequestsMock, client: CatalogClient, detail: str) -> None:
    add_token(rsps)
    rsps.add(
        responses.GET, re.compile(re.escape(API) + "course_runs/.+"), status=404, json={"detail": detail}
    )

    assert client.get_course_run("course-v1:edX+Gone+2020") is None


def test_detail_html_404_is_permanent(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    rsps.add(
        responses.GET,
        re.compile(re.escape(API) + "course_runs/.+"),
        status=404,
        body="<html><h1>Not Found</h1></html>",
        content_type="text/html",
    )

    with pytest.raises(CatalogPermanentError) as excinfo:
        client.get_course_run("not a key")
    assert excinfo.value.status == 404
    assert not is_retryable(excinfo.value)


def test_detail_without_a_key_is_malformed(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    rsps.add(responses.GET, re.compile(re.escape(API) + "course_runs/.+"), json=["not", "a", "run"])

    with pytest.raises(CatalogMalformedResponse):
        client.get_course_run(DEMO)


@pytest.mark.parametrize("key", ["", "  ", ".", ".."])
def test_detail_refuses_keys_that_would_change_the_url(client: CatalogClient, key: str) -> None:
    with pytest.raises(ValueError):
        client.get_course_run(key)


# -- bulk by keys -----------------------------------------------------------------------------------


def test_bulk_encodes_keys_and_sends_page_and_page_size(
    rsps: responses.RequestsMock, client: CatalogClient
) -> None:
    add_token(rsps)
    catalog = FakeCatalog([DEMO, "course-v1:edX+Other+2025", "edX/Old/2013"])
    rsps.add_callback(responses.GET, LIST_URL, callback=catalog)

    runs = client.get_course_runs([DEMO, "edX/Old/2013", DEMO, "course-v1:edX+Missing+2025"])

    assert set(runs) == {DEMO, "edX/Old/2013"}
    assert runs[DEMO]["key"] == DEMO
    [url] = catalog.urls
    assert raw_param(url, "keys") == (
        "course-v1%3AedX%2BDemoX%2BDemo_Course,edX%2FOld%2F2013,course-v1%3AedX%2BMissing%2B2025"
    )
    assert url.endswith("&exclude_utm=1&page=1&page_size=3")
    assert client.requests_made == 2  # the token request, then the one list request


def test_bulk_with_no_keys_sends_nothing(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    assert client.get_course_runs([]) == {}
    assert len(rsps.calls) == 0
    assert client.tokens_fetched == 0


@pytest.mark.parametrize(
    ("keys", "error"), [(["a", ""], ValueError), (["a,b"], ValueError), ("a", TypeError)]
)
def test_bulk_refuses_keys_the_catalog_would_misread(client: CatalogClient, keys: Any, error: type) -> None:
    with pytest.raises(error):
        client.get_course_runs(keys)


def test_bulk_refuses_a_key_longer_than_any_url_allows(client: CatalogClient) -> None:
    with pytest.raises(ValueError, match="too long"):
        client.get_course_runs(["x" * 5000])


def test_bulk_follows_next_when_the_catalog_caps_page_size(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    keys = [f"course-v1:Org+N{i}+R" for i in range(5)]
    catalog = FakeCatalog(keys, max_page_size=2)
    rsps.add_callback(responses.GET, LIST_URL, callback=catalog)
    client = make_client()

    assert set(client.get_course_runs(keys)) == set(keys)

    assert [query_of(url)["page"] for url in catalog.urls] == ["1", "2", "3"]
    assert all(query_of(url)["page_size"] == "5" for url in catalog.urls)


@pytest.mark.parametrize(
    ("keys", "max_url_length"), [([f"course-v1:Org+Course{i:04d}+2025_T1" for i in range(400)], 1024)]
)
def test_bulk_chunks_keep_every_url_short(
    rsps: responses.RequestsMock, keys: list[str], max_url_length: int
) -> None:
    add_token(rsps)
    catalog = FakeCatalog(keys[::2])
    rsps.add_callback(responses.GET, LIST_URL, callback=catalog)
    client = make_client(max_url_length=max_url_length)

    runs = client.get_course_runs(keys)

    assert set(runs) == set(keys[::2])
    assert len(catalog.urls) > 1
    assert all(len(url) < max_url_length for url in catalog.urls)
    sent = Counter(key for url in catalog.urls for key in query_of(url)["keys"].split(","))
    assert sent == Counter(keys)


course_keys = st.one_of(
    st.builds(
        "course-v1:{}+{}+{}".format,
        st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
    ),
    st.text(
        alphabet=st.characters(exclude_characters=",", exclude_categories=("Cs",)), min_size=1, max_size=30
    ).filter(lambda key: key.strip() != "" and key not in {".", ".."}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.lists(course_keys, max_size=80), max_url_length=st.integers(600, 3000), data=st.data())
def test_bulk_chunking_covers_every_key_exactly_once(keys: list[str], max_url_length: int, data: Any) -> None:
    known = data.draw(st.sets(st.sampled_from(keys)) if keys else st.just(set()))
    catalog = FakeCatalog(sorted(known))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        add_token(mock)
        mock.add_callback(responses.GET, LIST_URL, callback=catalog)
        client = make_client(max_url_length=max_url_length)

        runs = client.get_course_runs(keys)
        sent_requests = len(mock.calls)

    assert set(runs) == known
    assert all(len(url) < max_url_length for url in catalog.urls)
    sent = [key for url in catalog.urls for key in query_of(url)["keys"].split(",")]
    assert Counter(sent) == Counter(set(keys))
    for url in catalog.urls:
        params = query_of(url)
        assert params["page"] == "1"
        assert params["page_size"] == str(len(params["keys"].split(",")))
        assert params["exclude_utm"] == "1"
    assert client.requests_made == sent_requests == len(catalog.urls) + (1 if catalog.urls else 0)


def test_results_without_a_string_key_are_skipped_counted_and_logged_once(
    rsps: responses.RequestsMock, client: CatalogClient, caplog: pytest.LogCaptureFixture
) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, json=page([run("a"), 42, {"title": "no key"}, {"key": 7}]))

    with caplog.at_level(logging.WARNING, logger="catalog.client"):
        runs = client.get_course_runs(["a", "b", "c", "d"])

    assert list(runs) == ["a"]
    assert client.refused_records == 3
    [record] = caplog.records
    assert record.getMessage().startswith("catalog client: skipped 3 of 4 results")


# -- malformed answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"body": ""}, id="empty body"),
        pytest.param(
            {"body": '{"count": 1, "next": null, "previous": null, "results": [{"ke'}, id="truncated"
        ),
        pytest.param({"body": "<html>Service maintenance</html>", "content_type": "text/html"}, id="garbage"),
        pytest.param({"json": [run("a")]}, id="a list"),
        pytest.param({"json": {"results": [run("a")], "next": None, "previous": None}}, id="no count"),
        pytest.param({"json": {"count": "1", "results": [], "next": None, "previous": None}}, id="count str"),
        pytest.param(
            {"json": {"count": True, "results": [], "next": None, "previous": None}}, id="count bool"
        ),
        pytest.param(
            {"json": {"count": 1, "results": {"a": 1}, "next": None, "previous": None}}, id="results"
        ),
        pytest.param({"json": {"count": 0, "results": [], "next": 2, "previous": None}}, id="next int"),
        pytest.param({"json": {"count": 0, "results": []}}, id="no next/previous"),
        pytest.param({"json": page([run("a")], count=2)}, id="count mismatch"),
        pytest.param({"json": page([run("a"), run("b")], count=1)}, id="more than count"),
        pytest.param({"json": page([run("a"), run("a")])}, id="duplicate key"),
        pytest.param({"json": page([], count=40)}, id="filter ignored"),
        pytest.param({"body": requests.exceptions.ChunkedEncodingError("IncompleteRead")}, id="chunked"),
        pytest.param({"body": requests.exceptions.ContentDecodingError("gzip")}, id="decoding"),
    ],
)
def test_malformed_answers_are_typed_and_retryable(
    rsps: responses.RequestsMock, client: CatalogClient, answer: dict[str, Any]
) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, **answer)

    with pytest.raises(CatalogMalformedResponse) as excinfo:
        client.get_course_runs(["a", "b"])
    assert is_retryable(excinfo.value)
    assert excinfo.value.url and excinfo.value.url.startswith(API)


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example.net/api/v1/course_runs/?keys=a,b&page=2&page_size=2",
        "http://discovery.example.com/api/v1/course_runs/?keys=a,b&page=2&page_size=2",
        "https://discovery.example.com:8443/api/v1/course_runs/?keys=a,b&page=2&page_size=2",
    ],
)
def test_next_link_off_the_catalog_origin_is_not_followed(
    rsps: responses.RequestsMock, client: CatalogClient, next_url: str
) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, json=page([run("a")], count=2, next=next_url))

    with pytest.raises(CatalogMalformedResponse, match="origin"):
        client.get_course_runs(["a", "b"])
    assert len(rsps.calls) == 2  # token, page 1: nothing sent off origin


@pytest.mark.parametrize("next_page", ["1", "3"])
def test_next_link_must_point_at_the_following_page(
    rsps: responses.RequestsMock, client: CatalogClient, next_page: str
) -> None:
    add_token(rsps)
    next_url = API + f"course_runs/?exclude_utm=1&keys=a%2Cb&page={next_page}&page_size=2"
    rsps.add(responses.GET, LIST_URL, json=page([run("a")], count=2, next=next_url))

    with pytest.raises(CatalogMalformedResponse, match="page 2"):
        client.get_course_runs(["a", "b"])


def test_count_changing_between_pages_is_malformed(
    rsps: responses.RequestsMock, client: CatalogClient
) -> None:
    add_token(rsps)
    next_url = API + "course_runs/?exclude_utm=1&keys=a%2Cb%2Cc&page=2&page_size=3"
    rsps.add(responses.GET, LIST_URL, json=page([run("a")], count=2, next=next_url))
    rsps.add(responses.GET, LIST_URL, json=page([run("b"), run("c")], count=3))

    with pytest.raises(CatalogMalformedResponse, match="changed during the walk"):
        client.get_course_runs(["a", "b", "c"])


# -- HTTP statuses and transport failures -----------------------------------------------------------


def test_429_carries_retry_after_seconds(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    detail = {"detail": "Request was throttled. Expected available in 120 seconds."}
    rsps.add(responses.GET, LIST_URL, status=429, json=detail, headers={"Retry-After": "120"})

    with pytest.raises(CatalogThrottled) as excinfo:
        client.get_course_runs(["a"])

    assert excinfo.value.retry_after == 120.0
    assert excinfo.value.status == 429
    assert is_retryable(excinfo.value)
    assert "throttled" in str(excinfo.value)


@pytest.mark.parametrize(("header", "expected"), [(None, 60.0), ("soon", 60.0), ("-5", 60.0), ("0", 0.0)])
def test_retry_after_defaults_to_sixty(header: str | None, expected: float) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_reads_an_http_date() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)

    assert parse_retry_after(header, now=now.timestamp()) == 90.0
    assert parse_retry_after(header, now=now.timestamp() + 1000) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_a_retryable_server_error(
    rsps: responses.RequestsMock, client: CatalogClient, status: int
) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, status=status, body="<html>Bad gateway</html>")

    with pytest.raises(CatalogServerError) as excinfo:
        client.get_course_runs(["a"])
    assert excinfo.value.status == status
    assert is_retryable(excinfo.value)
    assert excinfo.value.retry_after is None


@pytest.mark.parametrize("status", [400, 403, 405, 410])
def test_other_4xx_is_permanent(rsps: responses.RequestsMock, client: CatalogClient, status: int) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, status=status, json={"detail": "You do not have permission."})

    with pytest.raises(CatalogPermanentError) as excinfo:
        client.get_course_runs(["a"])
    assert excinfo.value.status == status
    assert not is_retryable(excinfo.value)
    assert "You do not have permission." in str(excinfo.value)


def test_redirects_are_not_followed(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, status=302, headers={"Location": "https://elsewhere.example.org/"})

    with pytest.raises(CatalogPermanentError, match="redirects are not followed") as excinfo:
        client.get_course_runs(["a"])
    assert excinfo.value.status == 302
    assert len(api_calls(rsps)) == 1


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), CatalogTimeout),
        (requests.exceptions.ReadTimeout("read timed out"), CatalogTimeout),
        (requests.ConnectionError("Connection refused"), CatalogConnectionError),
        (requests.exceptions.SSLError("handshake"), CatalogConnectionError),
        (requests.exceptions.InvalidHeader("bad header"), CatalogPermanentError),
    ],
)
def test_transport_failures_are_mapped(
    rsps: responses.RequestsMock, client: CatalogClient, exc: Exception, error: type[CatalogError]
) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, body=exc)

    with pytest.raises(error) as excinfo:
        client.get_course_runs(["a"])
    assert excinfo.value.__cause__ is exc


# -- the retry rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (CatalogTimeout("t"), True),
        (CatalogConnectionError("c"), True),
        (CatalogServerError("s", status=503), True),
        (CatalogThrottled("429"), True),
        (CatalogMalformedResponse("m"), True),
        (CatalogRetryableError("r"), True),
        (CatalogPermanentError("p", status=403), False),
        (CatalogError("base"), False),
        (ValueError("a bug"), False),
        (requests.ConnectionError("raw, unmapped"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_is_retryable(exc: BaseException, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_throttled_defaults_to_sixty_seconds() -> None:
    assert CatalogThrottled("slow down").retry_after == 60.0


@pytest.mark.parametrize(
    "exc",
    [
        CatalogThrottled("slow down", url=API, retry_after=12.0),
        CatalogServerError("down", url=API, status=502),
        CatalogPermanentError("no", url=API, status=403),
    ],
)
def test_errors_survive_pickling_for_celery(exc: CatalogError) -> None:
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, as Celery would

    assert type(copy) is type(exc)
    assert (str(copy), copy.url, copy.status) == (str(exc), exc.url, exc.status)
    assert getattr(copy, "retry_after", None) == getattr(exc, "retry_after", None)


# -- no secret anywhere -----------------------------------------------------------------------------


def test_secret_and_token_never_reach_messages_or_logs(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    echo = {"detail": f"Invalid token {TOKEN} for client secret {SECRET}"}
    rsps.add(responses.GET, LIST_URL, status=401, json=echo)
    rsps.add(responses.GET, LIST_URL, status=401, json={"detail": f"still {TOKEN_2}"})
    client = make_client()
    errors: list[BaseException] = []

    with caplog.at_level(logging.DEBUG):
        try:
            client.get_course_runs(["a"])
        except CatalogError as exc:
            errors.append(exc)
        rsps.replace(responses.POST, OAUTH, status=401, json={"error": "invalid_client", "detail": SECRET})
        try:
            client.get_course_run(DEMO)
        except CatalogError as exc:
            errors.append(exc)

    assert [type(e) for e in errors] == [CatalogPermanentError, CatalogPermanentError]
    assert "credentials refused" in str(errors[1])
    texts = [r.getMessage() for r in caplog.records] + [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [repr(client), repr(client.config), str(client.config), str([e.url for e in errors])]
    assert caplog.records
    for text in texts:
        for secret in (SECRET, TOKEN, TOKEN_2):
            assert secret not in text


def test_redact_url_drops_credentials_and_secret_parameters() -> None:
    url = "https://user:pw@lms.example.com/oauth2/?client_secret=abc&token=xyz&keys=a"

    assert redact_url(url) == "https://lms.example.com/oauth2/?client_secret=***&token=***&keys=a"


# -- iter_course_runs -------------------------------------------------------------------------------


def test_iter_walks_with_explicit_page_numbers(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    keys = [f"course-v1:Org+C{i}+R" for i in range(7)]
    catalog = FakeCatalog(keys)
    rsps.add_callback(responses.GET, LIST_URL, callback=catalog)

    pages = list(client.iter_course_runs(page_size=3, hidden=False))

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [r["key"] for p in pages for r in p] == sorted(keys, key=str.lower)
    assert [query_of(url) for url in catalog.urls] == [
        {"hidden": "0", "exclude_utm": "1", "page": str(n), "page_size": "3"} for n in (1, 2, 3)
    ]


def test_iter_raises_when_the_count_drifts(rsps: responses.RequestsMock, client: CatalogClient) -> None:
    add_token(rsps)
    catalog = FakeCatalog([f"k{i}" for i in range(4)])
    rsps.add_callback(responses.GET, LIST_URL, callback=catalog)
    walk = client.iter_course_runs(page_size=2)

    assert len(next(walk)) == 2
    catalog.runs["k9"] = run("k9")  # a run is added between two page requests
    with pytest.raises(CatalogMalformedResponse, match="catalog changed during the walk"):
        next(walk)


def test_iter_never_follows_a_next_link_off_origin(
    rsps: responses.RequestsMock, client: CatalogClient
) -> None:
    add_token(rsps)
    rsps.add(
        responses.GET,
        LIST_URL,
        json=page([run("a")], count=2, next="https://evil.example.net/api/v1/course_runs/?page=2"),
    )

    with pytest.raises(CatalogMalformedResponse, match="origin"):
        list(client.iter_course_runs(page_size=1))
    assert len(api_calls(rsps)) == 1


@pytest.mark.parametrize("filters", [{"page": 2}, {"offset": 5}, {"limit": 10}, {"keys": ""}])
def test_iter_refuses_paging_parameters_and_empty_filters(
    client: CatalogClient, filters: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        client.iter_course_runs(**filters)


# -- over a real socket -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    release = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = semantics.json_bytes(semantics.token_body(TOKEN, 36000))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.mode == "hang":
            self.release.wait(5)
            return
        url = f"http://{self.headers['Host']}{self.path}"
        body = semantics.json_bytes(semantics.list_body(url, {"a": run("a")}, client="lms-catalog-worker"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.mode == "truncate" else body)
        self.close_connection = True


@pytest.fixture
def local_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"mode": "ok", "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def _local_client(base: str, **overrides: Any) -> CatalogClient:
    config = make_config(api_url=f"{base}/api/v1/", oauth_url=f"{base}/oauth2/access_token", **overrides)
    client = CatalogClient(config)
    client.session.trust_env = False  # no environment proxy between us and 127.0.0.1
    return client


def test_real_socket_happy_path(local_server: tuple[str, type[_Handler]]) -> None:
    base, _ = local_server
    with _local_client(base) as client:
        assert list(client.get_course_runs(["a"])) == ["a"]


def test_real_socket_truncated_body_is_malformed(local_server: tuple[str, type[_Handler]]) -> None:
    base, handler = local_server
    handler.mode = "truncate"
    with _local_client(base) as client, pytest.raises(CatalogMalformedResponse) as excinfo:
        client.get_course_runs(["a"])
    assert is_retryable(excinfo.value)


def test_real_socket_read_timeout(local_server: tuple[str, type[_Handler]]) -> None:
    base, handler = local_server
    handler.mode = "hang"
    started = time.monotonic()
    with _local_client(base, read_timeout=0.3) as client, pytest.raises(CatalogTimeout):
        client.get_course_runs(["a"])
    assert time.monotonic() - started < 3


def test_real_socket_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with _local_client(f"http://127.0.0.1:{port}") as client, pytest.raises(CatalogConnectionError):
        client.get_course_run(DEMO)


# -- every call bounded: the deadline ---------------------------------------------------------------


def test_the_deadline_defaults_to_connect_plus_read_and_refuses_nonsense() -> None:
    assert make_config(connect_timeout=2.0, read_timeout=5.0).deadline == 7.0
    assert make_config(deadline=1.5).deadline == 1.5
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="deadline"):
            make_config(deadline=bad)
    with pytest.raises(ValueError, match="max_body_bytes"):
        make_config(max_body_bytes=10)


def test_one_deadline_covers_the_token_request_and_the_api_request(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()

    def slow_token(request: Any) -> tuple[int, dict[str, str], str]:
        clock.advance(9.5)  # the token endpoint took 9.5 s of the call's 10
        return 200, {}, json.dumps({"access_token": TOKEN, "expires_in": 36000, "token_type": "JWT"})

    rsps.add_callback(responses.POST, OAUTH, callback=slow_token)
    rsps.add(responses.GET, LIST_URL, json=page([run("a")]))
    catalog = make_client(clock, connect_timeout=3.0, read_timeout=8.0, deadline=10.0)

    assert list(catalog.get_course_runs(["a"])) == ["a"]

    token_call, list_call = rsps.calls
    assert token_call.request.req_kwargs["timeout"] == (3.0, 8.0)
    assert list_call.request.req_kwargs["timeout"] == (0.5, 0.5)  # what was left of the deadline
    assert list_call.request.req_kwargs["stream"] is True


def test_a_call_that_overruns_its_deadline_is_a_retryable_timeout(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()
    add_token(rsps)

    def slow_page(request: Any) -> tuple[int, dict[str, str], str]:
        clock.advance(11)
        return 200, {}, json.dumps(page([run("a")]))

    rsps.add_callback(responses.GET, LIST_URL, callback=slow_page)
    catalog = make_client(clock, deadline=10.0)

    with pytest.raises(CatalogTimeout, match="10s deadline passed") as excinfo:
        catalog.get_course_runs(["a"])
    assert is_retryable(excinfo.value)
    assert catalog.requests_made == 2


def test_the_retry_after_a_401_is_not_sent_once_the_deadline_is_spent(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)

    rsps.add(responses.GET, LIST_URL, status=401, json={"detail": "Token has expired."})

    class SlowGate:  # the gate's wait before the retry eats the rest of the call's 10 s
        calls = 0

        def before_request(self) -> None:
            self.calls += 1
            clock.advance(0 if self.calls == 1 else 10)

        def on_throttled(self, retry_after: float | None) -> None:
            raise AssertionError("no 429 here")

    catalog = CatalogClient(make_config(deadline=10.0), clock=clock, gate=SlowGate())

    with pytest.raises(CatalogTimeout, match=r"deadline \(10s\) spent before POST"):
        catalog.get_course_runs(["a"])
    assert len(rsps.calls) == 2 and catalog.requests_made == 2  # token, the 401; nothing after


def test_each_call_gets_its_own_deadline(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()
    add_token(rsps)

    def page_taking_6s(request: Any) -> tuple[int, dict[str, str], str]:
        clock.advance(6)
        keys = query_of(request.url)["keys"].split(",")
        return 200, {}, json.dumps(page([run(k) for k in keys]))

    rsps.add_callback(responses.GET, LIST_URL, callback=page_taking_6s)
    catalog = make_client(clock, deadline=10.0)

    for _ in range(3):  # 18 s in all, 6 s per call: every call within its own 10 s
        assert list(catalog.get_course_runs(["a"])) == ["a"]
    assert catalog.requests_made == 4


# -- every body capped ------------------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_typed_and_not_retryable(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    runs = [run(f"k{i}", title="x" * 500) for i in range(10)]  # ~6 kB of JSON
    rsps.add(responses.GET, LIST_URL, body=json.dumps(page(runs)), content_type="application/json")
    catalog = make_client(max_body_bytes=4096)

    with pytest.raises(CatalogResponseTooLarge) as excinfo:
        catalog.get_course_runs([f"k{i}" for i in range(10)])

    exc = excinfo.value
    assert not is_retryable(exc) and isinstance(exc, CatalogPermanentError)
    assert exc.limit == 4096 and exc.status == 200
    assert "4096 bytes" in str(exc) and "page size" in str(exc)
    assert catalog.requests_made == 2


def test_a_body_under_the_cap_is_read_whole(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    runs = [run(f"k{i}", title="x" * 500) for i in range(10)]
    rsps.add(responses.GET, LIST_URL, body=json.dumps(page(runs)), content_type="application/json")

    got = make_client(max_body_bytes=64 * 1024).get_course_runs([f"k{i}" for i in range(10)])

    assert got == {r["key"]: r for r in runs}


def test_a_large_error_page_is_still_the_error_it_announces(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, status=503, body="<html>" + "x" * 2_000_000 + "</html>")

    with pytest.raises(CatalogServerError) as excinfo:
        make_client(max_body_bytes=4096).get_course_runs(["a"])
    assert excinfo.value.status == 503


# -- every attempt counted --------------------------------------------------------------------------


def test_requests_made_counts_every_request_sent_and_throttled_answers_apart(
    rsps: responses.RequestsMock,
) -> None:
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.add(responses.GET, LIST_URL, status=429, headers={"Retry-After": "1"})
    rsps.add(responses.GET, LIST_URL, status=503)
    rsps.add(responses.GET, LIST_URL, body=requests.exceptions.ReadTimeout("slow"))
    rsps.add(responses.GET, LIST_URL, body=requests.ConnectionError("reset"))
    rsps.add(responses.GET, LIST_URL, status=401, json={"detail": "Token has expired."})
    rsps.add(responses.GET, LIST_URL, json=page([run("a")]))
    catalog = make_client()
    failures = []

    for _ in range(4):
        with pytest.raises(CatalogRetryableError) as excinfo:
            catalog.get_course_runs(["a"])
        failures.append(type(excinfo.value))
    assert list(catalog.get_course_runs(["a"])) == ["a"]  # 401, a new token, then the page

    assert failures == [CatalogThrottled, CatalogServerError, CatalogTimeout, CatalogConnectionError]
    assert catalog.requests_made == len(rsps.calls) == 8  # 2 tokens, 429, 503, timeout, reset, 401, 200
    assert catalog.throttled_responses == 1
    assert catalog.tokens_fetched == 2


def test_a_request_the_fleet_gate_holds_back_is_not_counted(rsps: responses.RequestsMock) -> None:
    class PausedGate:
        def before_request(self) -> None:
            raise CatalogThrottled("fleet paused", status=None, retry_after=5)

        def on_throttled(self, retry_after: float | None) -> None:
            raise AssertionError("no answer was received")

    catalog = CatalogClient(make_config(), clock=FakeClock(), gate=PausedGate())

    with pytest.raises(CatalogThrottled):
        catalog.get_course_runs(["a"])
    assert catalog.requests_made == 0 and len(rsps.calls) == 0


def test_thread_counts_leave_out_what_other_threads_sent(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.add(responses.GET, LIST_URL, json=page([]))
    rsps.add(responses.GET, re.compile(re.escape(API) + "course_runs/.+/"), status=429)
    catalog = make_client()
    catalog.get_course_runs(["a"])  # this thread: token + one page
    before = catalog.thread_requests_made

    def elsewhere() -> None:
        for _ in range(3):
            with pytest.raises(CatalogThrottled):
                catalog.get_course_run(DEMO)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    catalog.get_course_runs(["a"])

    assert catalog.thread_requests_made - before == 1
    assert catalog.thread_throttled_responses == 0
    assert (catalog.requests_made, catalog.throttled_responses) == (6, 3)


# -- the deadline and the cap over a real socket (the stand-in) -------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    from standin import StandinServer, generate_runs

    with StandinServer(generate_runs(30, seed=4)) as server:
        yield server


def _standin_client(server: Any, **overrides: Any) -> CatalogClient:
    config = make_config(
        api_url=server.api_url, oauth_url=server.oauth_url, client_secret=server.client_secret
    )
    config = ClientConfig(**{**config.__dict__, "client_id": server.client_id, **overrides})
    client = CatalogClient(config)
    client.session.trust_env = False
    return client


def test_a_dripped_body_is_cut_at_the_deadline_though_every_read_beats_the_read_timeout(standin: Any) -> None:
    standin.reset_faults()
    keys = standin.state.keys()[:5]
    try:
        with _standin_client(standin, read_timeout=5.0, deadline=0.8) as client:
            assert len(client.get_course_runs(keys)) == 5  # the token is cached: only the page drips
            standin.set_faults(drip_ms=50)  # a byte every 50 ms: the 5 s read timeout never fires
            started = time.monotonic()
            with pytest.raises(CatalogTimeout, match=r"0\.8s deadline passed"):
                client.get_course_runs(keys)
            elapsed = time.monotonic() - started
    finally:
        standin.reset_faults()
    assert standin.stats()["injected"]["drip"] == 1
    assert 0.8 <= elapsed < 0.8 + 0.5


def test_a_dripped_detail_answer_is_cut_too(standin: Any) -> None:
    standin.reset_faults()
    standin.set_faults(drip_ms=50)
    try:
        with _standin_client(standin, read_timeout=5.0, deadline=0.6) as client:
            started = time.monotonic()
            with pytest.raises(CatalogTimeout):
                client.get_course_run(standin.state.keys()[0])
            assert time.monotonic() - started < 0.6 + 0.5
    finally:
        standin.reset_faults()


@pytest.mark.parametrize("declared", [False, True], ids=["until-close", "content-length"])
def test_an_oversize_body_stops_at_the_cap(standin: Any, declared: bool) -> None:
    standin.reset_faults()
    standin.set_faults(oversize_bytes=400_000_000, oversize_declared=declared)
    try:
        with _standin_client(standin, max_body_bytes=1024 * 1024) as client:
            started = time.monotonic()
            with pytest.raises(CatalogResponseTooLarge, match="1048576 bytes"):
                client.get_course_runs(standin.state.keys()[:3])
            elapsed = time.monotonic() - started
        # 400 MB would take far longer than this to read, even over loopback
        assert elapsed < 3
    finally:
        standin.reset_faults()
