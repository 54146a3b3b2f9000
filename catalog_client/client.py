"""HTTP client of the catalog service (course-discovery): auth, timeouts, pagination, typed errors.

No Django here: the configuration is passed in (see ``catalog.connection``). The client never retries
by itself (no urllib3 retries either) except once after a 401, with a fresh token: retrying is the
caller's job, with ``catalog_client.errors.is_retryable`` as the rule.

Every catalog call is bounded in time and memory. requests' read timeout is per socket read, so a
catalog that sends a byte just inside it holds a caller for ever; here each call -- one API request
with the token request and the single 401 retry it may need -- has a wall-clock ``deadline``, and
each body is streamed and read under it, with ``max_body_bytes`` as its size cap.

A client holds a connection pool and a cached token; build one per process (not before a fork).
Its token cache and counters are thread-safe, but its requests session is not: two threads may
share a client only if they take turns (the in-process sweep's fetches hold a lock).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from catalog_client.errors import (
    DEFAULT_THROTTLE_RETRY_AFTER,
    CatalogConnectionError,
    CatalogError,
    CatalogMalformedResponse,
    CatalogPermanentError,
    CatalogResponseTooLarge,
    CatalogServerError,
    CatalogThrottled,
    CatalogTimeout,
)

__all__ = ["CatalogClient", "ClientConfig", "parse_retry_after", "redact_url"]

logger = logging.getLogger("catalog.client")

POOL_MAXSIZE = 10
# Query parameters whose value never goes into a message, a log line or an error's ``url``.
_SECRET_PARAMS = frozenset({"access_token", "client_secret", "jwt", "password", "secret", "token"})
# Page-number mode is chosen by sending ``page``; these would switch mode or fight our own paging.
_RESERVED_PARAMS = frozenset({"limit", "offset", "page", "page_size"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MESSAGE_URL_LENGTH = 160
_DETAIL_LENGTH = 200
# A list page of 2,000 full course runs (the admin's largest page size) is about 20 MB.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# The connection defaults, defined once: ``ClientConfig`` uses them and so do the field defaults
# of the admin's ``CatalogIntegration`` (catalog/models.py), so a client built without the admin's
# row behaves as a fresh install does. Connect: just over 3 s, TCP's first retransmission.
DEFAULT_CONNECT_TIMEOUT = 3.05
DEFAULT_READ_TIMEOUT = 15.0
DEFAULT_MAX_URL_LENGTH = 4096
# An error answer is read only for its detail message: its first bytes are enough.
_ERROR_BODY_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, repr=False)
class ClientConfig:
    """Where the catalog is and how to talk to it. ``api_url`` is normalised to a trailing slash."""

    api_url: str
    oauth_url: str
    client_id: str
    client_secret: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_url_length: int = DEFAULT_MAX_URL_LENGTH
    token_refresh_margin: float = 60.0
    verify_tls: bool = True
    user_agent: str = "catalog-sync/0.1"
    # Wall-clock seconds for one call (an API request with its token request and its one 401
    # retry, bodies included). None: connect_timeout + read_timeout, the time one request may
    # take under the per-read timeouts when the catalog answers at a normal pace.
    deadline: float | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for name in ("api_url", "oauth_url"):
            parts = urlsplit(getattr(self, name) or "")
            if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
                raise ValueError(f"ClientConfig.{name} must be an absolute http(s) URL")
        if not self.api_url.endswith("/"):
            object.__setattr__(self, "api_url", self.api_url + "/")
        if not self.client_id or not self.client_secret:
            raise ValueError("ClientConfig needs a client_id and a client_secret")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("ClientConfig timeouts must be positive")
        if self.token_refresh_margin < 0:
            raise ValueError("ClientConfig.token_refresh_margin must not be negative")
        if self.max_url_length <= len(self.api_url) + 64:
            raise ValueError("ClientConfig.max_url_length is too small for api_url")
        if self.deadline is None:
            object.__setattr__(self, "deadline", self.connect_timeout + self.read_timeout)
        elif not (
            isinstance(self.deadline, int | float) and math.isfinite(self.deadline) and self.deadline > 0
        ):
            raise ValueError("ClientConfig.deadline must be a positive number of seconds")
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int):
            raise ValueError("ClientConfig.max_body_bytes must be an integer")
        if self.max_body_bytes < 1024:
            raise ValueError("ClientConfig.max_body_bytes must be at least 1024")

    def __repr__(self) -> str:
        return (
            f"ClientConfig(api_url={redact_url(self.api_url)!r}, oauth_url={redact_url(self.oauth_url)!r}, "
            f"client_id={self.client_id!r}, client_secret='***', connect_timeout={self.connect_timeout!r}, "
            f"read_timeout={self.read_timeout!r}, max_url_length={self.max_url_length!r}, "
            f"token_refresh_margin={self.token_refresh_margin!r}, verify_tls={self.verify_tls!r}, "
            f"user_agent={self.user_agent!r}, deadline={self.deadline!r}, "
            f"max_body_bytes={self.max_body_bytes!r})"
        )

    __str__ = __repr__

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` pair passed on every request."""
        return (self.connect_timeout, self.read_timeout)


class RequestGate(Protocol):
    """Shared quota across clients (``catalog.throttle.FleetThrottle``)."""

    def before_request(self) -> None:
        """Called before every API request; may wait, or raise ``CatalogThrottled``."""

    def on_throttled(self, retry_after: float | None) -> None:
        """Called when the catalog answered 429."""


# Called once per HTTP request sent (token requests included), after its answer or its failure:
# ``(method, status, outcome, seconds)``; ``status`` is None when no answer came (a timeout, a
# refused connection), ``outcome`` a short word (``ok``, ``throttled``, ``server_error``,
# ``not_found``, ``timeout``, ``connection_error``, ...). Metrics hang here (catalog.connection
# passes observability's), so that this package needs nothing of the project.
RequestObserver = Callable[[str, int | None, str, float], None]


class _Counts(threading.local):
    """Per-thread tallies (see ``CatalogClient.thread_requests_made``)."""

    requests = 0
    throttled = 0


@dataclass(frozen=True)
class ListPage:
    """One page of the catalog's list: its ``count`` now (None past the end), the usable runs
    (dicts with a string key), whether a next page exists, and how many results it held in all
    (``answered``, refused ones included: the walk's position moves by it)."""

    count: int | None
    results: list[dict[str, Any]]
    has_next: bool
    past_end: bool = False
    answered: int = 0


class CatalogClient:
    """Reads course runs from the catalog.

    Counters, for the records (a run's ``catalog_requests`` must be what the catalog saw):

    - ``requests_made``: every HTTP request sent -- token requests, API requests, the ones that
      failed (5xx, 429, 401, a timeout, a refused or reset connection) and the ones that succeeded.
      A request the fleet gate holds back (``CatalogThrottled`` without a status) is not sent and
      not counted.
    - ``throttled_responses``: 429 answers among them.
    - ``tokens_fetched``: tokens obtained; ``refused_records``: results skipped for lacking a
      string key.
    - ``thread_requests_made`` / ``thread_throttled_responses``: the same two, counted for the
      calling thread only, so that a before/after difference around one fetch stays truthful
      while another thread uses the client (the in-process sweep fetches the next chunk in a
      second thread).
    """

    def __init__(
        self,
        config: ClientConfig,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        gate: RequestGate | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.observer = observer
        self._clock = clock
        self._owns_session = session is None
        self.session = session if session is not None else self._build_session(config)
        self._origin = _origin(config.api_url)
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._dropped_token: str | None = None  # kept only to scrub it from error details
        self._token_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._thread_counts = _Counts()
        self._requests_made = 0
        self._throttled_responses = 0
        self.tokens_fetched = 0
        self.refused_records = 0

    @property
    def requests_made(self) -> int:
        """Every HTTP request sent by this client, from every thread (see the class docstring)."""
        return self._requests_made

    @property
    def throttled_responses(self) -> int:
        """429 answers received by this client, from every thread."""
        return self._throttled_responses

    @property
    def thread_requests_made(self) -> int:
        """Every HTTP request sent by this client from the calling thread."""
        return self._thread_counts.requests

    @property
    def thread_throttled_responses(self) -> int:
        """429 answers received by this client in the calling thread."""
        return self._thread_counts.throttled

    def _count_request(self) -> None:
        with self._counts_lock:
            self._requests_made += 1
        self._thread_counts.requests += 1

    def _count_throttled(self) -> None:
        with self._counts_lock:
            self._throttled_responses += 1
        self._thread_counts.throttled += 1

    def __repr__(self) -> str:
        return f"CatalogClient(api_url={redact_url(self.config.api_url)!r})"

    def __enter__(self) -> CatalogClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (a session passed in belongs to the caller and stays open)."""
        if self._owns_session:
            self.session.close()

    @staticmethod
    def _build_session(config: ClientConfig) -> requests.Session:
        session = requests.Session()
        # max_retries=0: urllib3 never retries on its own; the caller decides, with backoff.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_MAXSIZE, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = config.verify_tls
        session.headers["User-Agent"] = config.user_agent
        session.headers["Accept"] = "application/json"
        return session

    # -- public API -------------------------------------------------------------------------------

    def get_course_run(self, key: str) -> dict[str, Any] | None:
        """One run by key, or None when the catalog does not know it (its JSON 404)."""
        _check_key(key)
        url = f"{self.config.api_url}course_runs/{quote(key, safe='')}/?exclude_utm=1"
        response = self._api_get(url)
        if response.status_code == 404:
            body = _try_json(response)
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                return None
            raise CatalogPermanentError(
                f"catalog answered a non-JSON 404 for GET {_short(url)}: the key is not key-like "
                "or api_url is wrong",
                url=redact_url(url),
                status=404,
            )
        self._raise_for_status(response, "GET", url)
        run = self._json(response, url)
        if not isinstance(run, dict) or not isinstance(run.get("key"), str):
            raise CatalogMalformedResponse(
                f"catalog sent a course run without a string key for GET {_short(url)}",
                url=redact_url(url),
                status=response.status_code,
            )
        return run

    def get_course_runs(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The runs the catalog has among ``keys``, by their key; unknown keys are simply absent.

        Keys are deduplicated and sent in chunks that keep every URL under ``max_url_length``; each
        chunk asks for one page the size of the chunk (``page=1`` sent explicitly: without it the
        catalog returns 20 items and ignores ``page_size``).
        """
        if isinstance(keys, str):
            raise TypeError("get_course_runs takes a sequence of keys, not one key")
        unique = list(dict.fromkeys(keys))
        for key in unique:
            _check_key(key, listed=True)
        runs: dict[str, dict[str, Any]] = {}
        for chunk in self.chunk_keys(unique):
            runs.update(self._fetch_chunk(chunk))
        return runs

    def iter_course_runs(
        self, page_size: int = 100, **filters: str | int | bool
    ) -> Iterator[list[dict[str, Any]]]:
        """Walk the whole list page by page (``page`` from 1, explicit ``page_size``), yielding each
        page's runs. Raises CatalogMalformedResponse if ``count`` changes during the walk.

        The catalog pages with OFFSET over a live table: a walk can still skip or repeat a run when
        one is added and another removed between pages. Callers that need to be exact about their own
        runs use ``get_course_runs``.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError("page_size must be a positive integer")
        params = {"exclude_utm": "1"}
        for name, value in filters.items():
            if name in _RESERVED_PARAMS:
                raise ValueError(f"iter_course_runs pages by itself: do not pass {name!r}")
            params[name] = _param_value(name, value)
        query = "&".join(f"{quote(name, safe='')}={quote(value, safe=',')}" for name, value in params.items())
        return self._iter_pages(query, page_size)

    def _iter_pages(self, query: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        seen = 0
        count = 0
        for page_count, results in self._walk(query, page_size):
            count = page_count
            seen += len(results)
            yield self._usable(results, query)
        if seen != count:
            raise CatalogMalformedResponse(
                f"catalog walk returned {seen} runs but its count said {count}",
                url=redact_url(self._list_url(query, 1, page_size)),
            )

    def list_page(self, page: int, page_size: int) -> ListPage:
        """One page of the whole list, in page-number mode (``page`` and ``page_size`` always sent,
        ``exclude_utm=1``): the sweep's walk asks for each page itself, with a page size it
        chooses per page, so it never follows ``next`` (a link off the catalog's origin is never
        requested). A page past the end (the catalog's 404 ``Invalid page.``, after runs were
        deleted behind the walk) is an empty page with ``past_end``. Raises ``CatalogError``."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValueError("page must be a positive integer")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError("page_size must be a positive integer")
        query = "exclude_utm=1"
        url = self._list_url(query, page, page_size)
        response = self._api_get(url)
        if response.status_code == 404:
            body = _try_json(response)
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                return ListPage(count=None, results=[], has_next=False, past_end=True)
        self._raise_for_status(response, "GET", url)
        count, next_url, results = _envelope(self._json(response, url), url)
        if len(results) > page_size:
            raise CatalogMalformedResponse(
                f"catalog returned {len(results)} runs for a page of {page_size}", url=redact_url(url)
            )
        return ListPage(
            count=count,
            results=self._usable(results, query),
            has_next=next_url is not None,
            past_end=False,
            answered=len(results),
        )

    def count_runs(self) -> int:
        """The catalog's number of course runs (hidden ones included): one request for a page of one."""
        listed = self.list_page(1, 1)
        return listed.count or 0

    def chunk_keys(self, keys: Sequence[str]) -> list[list[str]]:
        """Split ``keys`` in order so that each bulk request URL stays under ``max_url_length``."""
        return split_keys_for_urls(self.config.api_url, keys, self.config.max_url_length)

    # -- paging -----------------------------------------------------------------------------------

    def _fetch_chunk(self, chunk: list[str]) -> dict[str, dict[str, Any]]:
        query = _bulk_query(chunk)
        runs: dict[str, dict[str, Any]] = {}
        seen = 0
        count = 0
        for page_count, results in self._walk(query, len(chunk)):
            count = page_count
            url = self._list_url(query, 1, len(chunk))
            if count > len(chunk):
                raise CatalogMalformedResponse(
                    f"catalog counted {count} runs for {len(chunk)} keys: the keys filter was not applied",
                    url=redact_url(url),
                )
            seen += len(results)
            for run in self._usable(results, query):
                if run["key"] in runs:
                    raise CatalogMalformedResponse(
                        f"catalog changed during the walk: run {run['key']!r} came back twice",
                        url=redact_url(url),
                    )
                runs[run["key"]] = run
        if seen != count:
            raise CatalogMalformedResponse(
                f"catalog returned {seen} runs but its count said {count}",
                url=redact_url(self._list_url(query, 1, len(chunk))),
            )
        return runs

    def _walk(self, query: str, page_size: int) -> Iterator[tuple[int, list[Any]]]:
        """Yield ``(count, results)`` per page, in page-number mode, until ``next`` is null.

        Each request URL is built here (our encoding, our length bound); ``next`` is only checked:
        same origin as api_url, pointing at the following page. ``count`` must not change.
        """
        page = 1
        first_count: int | None = None
        total = 0
        while True:
            url = self._list_url(query, page, page_size)
            response = self._api_get(url)
            self._raise_for_status(response, "GET", url)
            count, next_url, results = _envelope(self._json(response, url), url)
            if first_count is None:
                first_count = count
            elif count != first_count:
                raise CatalogMalformedResponse(
                    f"catalog changed during the walk: count went from {first_count} to {count} "
                    f"at page {page}",
                    url=redact_url(url),
                )
            total += len(results)
            if total > count:
                raise CatalogMalformedResponse(
                    f"catalog returned more runs ({total}) than its count ({count})", url=redact_url(url)
                )
            yield count, results
            if next_url is None:
                return
            if not results:
                raise CatalogMalformedResponse(
                    f"catalog sent an empty page {page} with a next link", url=redact_url(url)
                )
            page = self._next_page(next_url, page, url)

    def _next_page(self, next_url: str, page: int, url: str) -> int:
        target = urljoin(url, next_url)
        try:
            same_origin = _origin(target) == self._origin
        except ValueError:
            same_origin = False
        if not same_origin:
            raise CatalogMalformedResponse(
                f"catalog next link {_short(target)} leaves the catalog's origin; not followed",
                url=redact_url(url),
            )
        values = [
            value
            for name, _, value in (part.partition("=") for part in urlsplit(target).query.split("&"))
            if unquote(name) == "page"
        ]
        if len(values) != 1 or values[0] != str(page + 1):
            raise CatalogMalformedResponse(
                f"catalog next link after page {page} does not point at page {page + 1}: {_short(target)}",
                url=redact_url(url),
            )
        return page + 1

    def _list_url(self, query: str, page: int, page_size: int) -> str:
        return f"{self.config.api_url}course_runs/?{query}&page={page}&page_size={page_size}"

    def _usable(self, results: list[Any], query: str) -> list[dict[str, Any]]:
        """The results that are dicts with a string key; the others are counted and logged once."""
        usable = [run for run in results if isinstance(run, dict) and isinstance(run.get("key"), str)]
        refused = len(results) - len(usable)
        if refused:
            self.refused_records += refused
            logger.warning(
                "catalog client: skipped %d of %d results without a string key (query %s)",
                refused,
                len(results),
                _short(query),
            )
        return usable

    # -- HTTP -------------------------------------------------------------------------------------

    def _api_get(self, url: str) -> requests.Response:
        """GET an API URL with the token; on a 401, drop the token, fetch a new one, retry once.

        One call, one deadline: the token request, the GET and the retry after a 401 all share
        ``config.deadline``, counted from the moment the fleet gate let the call through (a wait
        for a rate slot is ours, not the catalog's, and the gate bounds it itself).
        """
        if self.gate is not None:
            self.gate.before_request()  # may wait for a rate slot or raise CatalogThrottled
        deadline = self._clock() + float(self.config.deadline or 0)
        response = self._get_with_token(url, deadline)
        if response.status_code != 401:
            return response
        logger.warning(
            "catalog client: 401 on GET %s (%s); fetching a new token and retrying once",
            _short(url),
            self._detail(response) or "no detail",
        )
        if self.gate is not None:
            self.gate.before_request()
        response = self._get_with_token(url, deadline)
        if response.status_code != 401:
            return response
        raise CatalogPermanentError(
            f"catalog refused a freshly fetched token (HTTP 401 twice) on GET {_short(url)}: "
            f"{self._detail(response) or 'no detail'}",
            url=redact_url(url),
            status=401,
        )

    def _get_with_token(self, url: str, deadline: float) -> requests.Response:
        token = self._get_token(deadline)
        response = self._send("GET", url, deadline, headers={"Authorization": f"JWT {token}"})
        if response.status_code == 401:
            self._drop_token(token)
        return response

    def _send(self, method: str, url: str, deadline: float, **kwargs: Any) -> requests.Response:
        """One request, counted, with the configured timeouts cut to what is left before
        ``deadline``, no redirects, its body read under the deadline and the size cap, and
        requests' errors mapped to ours. The response comes back with its body read."""
        headers = {"User-Agent": self.config.user_agent, "Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        where = f"{method} {_short(url)}"
        left = deadline - self._clock()
        if left <= 0:
            raise CatalogTimeout(
                f"catalog call deadline ({self.config.deadline:g}s) spent before {where}", url=redact_url(url)
            )
        self._count_request()  # counted before it is sent: a refused connection was an attempt too
        started = time.monotonic()  # the observer's latency: wall time, whatever self._clock is
        status: int | None = None
        outcome = "error"
        try:
            response = self._request(method, url, headers, left, deadline, where, **kwargs)
            status = response.status_code
            outcome = _status_outcome(status)
            return response
        except CatalogError as exc:
            status, outcome = exc.status, _error_outcome(exc)
            raise
        finally:
            self._observe(method, status, outcome, time.monotonic() - started)

    def _observe(self, method: str, status: int | None, outcome: str, seconds: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(method, status, outcome, seconds)
        except Exception:  # a metrics failure must never fail a catalog call
            logger.debug("catalog client: request observer failed", exc_info=True)

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        left: float,
        deadline: float,
        where: str,
        **kwargs: Any,
    ) -> requests.Response:
        """``_send``'s request and body read, requests' errors mapped to ours."""
        try:
            # stream=True: the body is read by _read_body, a chunk at a time, under the deadline.
            response = self.session.request(
                method,
                url,
                headers=headers,
                timeout=(min(self.config.connect_timeout, left), min(self.config.read_timeout, left)),
                allow_redirects=False,
                verify=self.config.verify_tls,
                stream=True,
                **kwargs,
            )
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise self._timeout(where, url, deadline) from exc
        except requests.ConnectionError as exc:
            raise CatalogConnectionError(
                f"catalog connection failed on {where}: {type(exc).__name__}", url=redact_url(url)
            ) from exc
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            http.client.IncompleteRead,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.DecodeError,
        ) as exc:
            raise CatalogMalformedResponse(
                f"catalog sent a truncated or undecodable body on {where}: {type(exc).__name__}",
                url=redact_url(url),
            ) from exc
        except requests.RequestException as exc:  # InvalidURL, InvalidHeader...: not transient
            raise CatalogPermanentError(
                f"catalog request failed on {where}: {type(exc).__name__}", url=redact_url(url)
            ) from exc
        try:
            response._content = self._read_body(response, where, url, deadline)
        except BaseException:
            response.close()  # a partly read body: the connection cannot be reused
            raise
        return response

    def _read_body(self, response: requests.Response, where: str, url: str, deadline: float) -> bytes:
        """The body, read with ``read1`` (whatever has arrived, never waiting to fill a buffer) so
        that the deadline is checked between reads, and each read waits at most until it.

        A success's body is capped at ``max_body_bytes`` (``CatalogResponseTooLarge``, refused
        from ``Content-Length`` before reading when it says so); an error answer is read only
        for its detail, its first ``_ERROR_BODY_BYTES`` kept, the rest dropped with the
        connection.
        """
        success = 200 <= response.status_code < 300
        cap = self.config.max_body_bytes if success else _ERROR_BODY_BYTES
        declared = (response.headers.get("Content-Length") or "").strip()
        if success and declared.isdigit() and int(declared) > cap:
            raise self._too_large(where, url, response.status_code, f"announced {int(declared)} bytes")
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            _set_read_timeout(raw, max(0.001, min(self.config.read_timeout, deadline - self._clock())))
            try:
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
            except (TimeoutError, urllib3.exceptions.TimeoutError) as exc:
                raise self._timeout(where, url, deadline) from exc
            except (
                http.client.HTTPException,
                urllib3.exceptions.ProtocolError,
                urllib3.exceptions.DecodeError,
                ConnectionError,
            ) as exc:
                raise CatalogMalformedResponse(
                    f"catalog sent a truncated or undecodable body on {where}: {type(exc).__name__}",
                    url=redact_url(url),
                    status=response.status_code,
                ) from exc
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                raise CatalogConnectionError(
                    f"catalog connection failed while reading the body on {where}: {type(exc).__name__}",
                    url=redact_url(url),
                ) from exc
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > cap:
                if success:
                    raise self._too_large(where, url, response.status_code, f"more than {cap} bytes")
                chunks.append(chunk[: len(chunk) - (size - cap)])
                response.close()
                return b"".join(chunks)
            chunks.append(chunk)
            if self._clock() >= deadline:
                raise self._timeout(where, url, deadline)

    def _timeout(self, where: str, url: str, deadline: float) -> CatalogTimeout:
        if self._clock() >= deadline:
            reason = f"its {self.config.deadline:g}s deadline passed"
        else:
            reason = f"connect {self.config.connect_timeout:g}s, read {self.config.read_timeout:g}s"
        return CatalogTimeout(f"catalog timed out on {where} ({reason})", url=redact_url(url))

    def _too_large(self, where: str, url: str, status: int, what: str) -> CatalogResponseTooLarge:
        cap = self.config.max_body_bytes
        return CatalogResponseTooLarge(
            f"catalog answer to {where} is too large ({what}; the cap is {cap} bytes): "
            "lower the page size or raise max_body_bytes",
            url=redact_url(url),
            status=status,
            limit=cap,
        )

    def _raise_for_status(self, response: requests.Response, method: str, url: str) -> None:
        """Map a non-2xx answer to its typed error; 401 and the detail 404 are handled by callers."""
        status = response.status_code
        if 200 <= status < 300:
            return
        where = f"{method} {_short(url)}"
        safe_url = redact_url(url)
        if 300 <= status < 400:
            location = _short(response.headers.get("Location", "") or "nowhere")
            raise CatalogPermanentError(
                f"catalog answered HTTP {status} to {location} on {where}; redirects are not followed",
                url=safe_url,
                status=status,
            )
        detail = self._detail(response)
        suffix = f": {detail}" if detail else ""
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._count_throttled()
            if self.gate is not None:
                self.gate.on_throttled(retry_after)
            raise CatalogThrottled(
                f"catalog throttled {where}; retry after {retry_after:g}s{suffix}",
                url=safe_url,
                status=status,
                retry_after=retry_after,
            )
        if 400 <= status < 500:
            raise CatalogPermanentError(
                f"catalog answered HTTP {status} on {where}{suffix}", url=safe_url, status=status
            )
        if status >= 500:
            header = response.headers.get("Retry-After")
            raise CatalogServerError(
                f"catalog answered HTTP {status} on {where}{suffix}",
                url=safe_url,
                status=status,
                retry_after=parse_retry_after(header) if header else None,
            )
        raise CatalogMalformedResponse(
            f"catalog answered HTTP {status} on {where}", url=safe_url, status=status
        )

    def _json(self, response: requests.Response, url: str) -> Any:
        """The decoded body; an empty or non-JSON body is a CatalogMalformedResponse."""
        content = response.content or b""
        if not content.strip():
            raise CatalogMalformedResponse(
                f"catalog sent an empty body (HTTP {response.status_code}) for {_short(url)}",
                url=redact_url(url),
                status=response.status_code,
            )
        try:
            return json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise CatalogMalformedResponse(
                f"catalog sent a body that is not JSON ({len(content)} bytes, "
                f"{response.headers.get('Content-Type', 'no content type')}) for {_short(url)}",
                url=redact_url(url),
                status=response.status_code,
            ) from exc

    def _detail(self, response: requests.Response) -> str:
        """The error text of a JSON answer (DRF ``detail`` or OAuth ``error``), scrubbed and short."""
        body = _try_json(response)
        if not isinstance(body, dict):
            return ""
        parts = [body.get(name) for name in ("detail", "error", "error_description")]
        text = " ".join(" ".join(part.split()) for part in parts if isinstance(part, str))
        for secret in (self.config.client_secret, self._token, self._dropped_token):
            if secret:
                text = text.replace(secret, "***")
        return text[:_DETAIL_LENGTH]

    # -- token ------------------------------------------------------------------------------------

    def _get_token(self, deadline: float) -> str:
        with self._token_lock:
            if self._token is not None and self._clock() < self._token_expires_at:
                return self._token
            return self._fetch_token(deadline)

    def _drop_token(self, token: str) -> None:
        with self._token_lock:
            self._dropped_token = token
            if self._token == token:
                self._token = None

    def _fetch_token(self, deadline: float) -> str:
        """OAuth2 client credentials, asking for a JWT; cached until expiry minus the margin."""
        url = self.config.oauth_url
        started = self._clock()
        data = {
            "grant_type": "client_credentials",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "token_type": "jwt",
        }
        response = self._send("POST", url, deadline, data=data)
        if response.status_code in (400, 401):
            detail = self._detail(response)
            raise CatalogPermanentError(
                f"catalog credentials refused by the token endpoint {_short(url)} "
                f"(HTTP {response.status_code}{': ' + detail if detail else ''})",
                url=redact_url(url),
                status=response.status_code,
            )
        self._raise_for_status(response, "POST", url)
        body = self._json(response, url)
        token = body.get("access_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        token_type = body.get("token_type", "JWT") if isinstance(body, dict) else None
        if (
            not isinstance(token, str)
            or not token
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not math.isfinite(expires_in)
            or expires_in <= 0
        ):
            raise CatalogMalformedResponse(
                f"token endpoint {_short(url)} answered without access_token/expires_in",
                url=redact_url(url),
                status=response.status_code,
            )
        if not isinstance(token_type, str) or token_type.lower() != "jwt":
            raise CatalogPermanentError(
                f"token endpoint {_short(url)} issued a {str(token_type)[:20]!r} token, not a JWT",
                url=redact_url(url),
                status=response.status_code,
            )
        # A margin larger than half the lifetime would refetch on every call: cap it.
        margin = min(self.config.token_refresh_margin, expires_in / 2)
        self._token = token
        self._token_expires_at = started + expires_in - margin
        self.tokens_fetched += 1
        logger.info("catalog client: fetched a token valid for %ss", expires_in)
        return token


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds from a Retry-After header (integer seconds or an HTTP-date, against wall-clock
    ``now``); the 429 default (60) when missing or unreadable, 0 for a date already past."""
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        return float(text)
    if text:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_THROTTLE_RETRY_AFTER
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return DEFAULT_THROTTLE_RETRY_AFTER


def redact_url(url: str) -> str:
    """``url`` without user:password and with secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparseable url>"
    pairs = []
    for part in parts.query.split("&") if parts.query else []:
        name, sep, _ = part.partition("=")
        secret = sep and unquote(name).lower() in _SECRET_PARAMS
        pairs.append(f"{name}=***" if secret else part)
    query = "&".join(pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _short(url: str) -> str:
    """A redacted URL cut to a readable length for messages (a bulk URL can be 4 kB of keys)."""
    url = redact_url(url) if "://" in url else url
    if len(url) <= _MESSAGE_URL_LENGTH:
        return url
    return f"{url[:_MESSAGE_URL_LENGTH]}...({len(url)} chars)"


def split_keys_for_urls(api_url: str, keys: Sequence[str], max_url_length: int) -> list[list[str]]:
    """Split ``keys`` in order into groups whose bulk request URL stays under ``max_url_length``.

    The sweep plans its chunks with it too, so that a chunk is one request: a chunk of several
    requests would be retried all or nothing.
    """
    limit = max_url_length
    # The page_size value is at most len(keys): reserve that many digits for every chunk.
    fixed = bulk_url_overhead(api_url, len(keys))
    chunks: list[list[str]] = []
    chunk: list[str] = []
    length = fixed
    for key in keys:
        size = len(quote(key, safe=""))
        if fixed + size >= limit:
            raise ValueError(f"course key too long for max_url_length={limit}: {key[:80]!r}")
        extra = size + (1 if chunk else 0)
        if chunk and length + extra >= limit:
            chunks.append(chunk)
            chunk, length, extra = [], fixed, size
        chunk.append(key)
        length += extra
    if chunk:
        chunks.append(chunk)
    return chunks


def bulk_url_overhead(api_url: str, page_size: int) -> int:
    """The length of a ``keys=`` request URL without its keys: what ``split_keys_for_urls``
    reserves in every URL (the sweep's request estimate uses it too)."""
    return len(f"{api_url}course_runs/?{_bulk_query([])}&page=1&page_size={page_size}")


def _bulk_query(chunk: Sequence[str]) -> str:
    """``keys=`` with each key percent-encoded (``+`` would read as a space) and raw commas."""
    return "keys=" + ",".join(quote(key, safe="") for key in chunk) + "&exclude_utm=1"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return scheme, (parts.hostname or "").lower(), port


def _check_key(key: object, *, listed: bool = False) -> None:
    """Refuse keys the catalog would misread: an empty key (``keys=`` means *every* run), a comma
    (the list separator), a dot segment (would change the detail URL's path)."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"course keys must be non-empty strings, got {key!r}")
    if listed and "," in key:
        raise ValueError(f"course key {key!r} contains a comma, the catalog's keys separator")
    if key in {".", ".."}:
        raise ValueError(f"{key!r} is not a course key")


def _param_value(name: str, value: object) -> str:
    """A filter value as the catalog wants it: booleans as 1/0 (``true`` is a 500 on some flags)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"filter {name}={value!r}: use a non-empty string, an int or a bool")


def _set_read_timeout(raw: Any, seconds: float) -> None:
    """Make the next socket read of a streamed body wait at most ``seconds`` (urllib3 sets the
    read timeout once per request; a body read under a deadline needs it shorter as time runs)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _try_json(response: requests.Response) -> Any:
    try:
        return json.loads(response.content or b"")
    except (ValueError, RecursionError):
        return None


def _envelope(body: Any, url: str) -> tuple[int, str | None, list[Any]]:
    """``(count, next, results)`` of a list answer, or CatalogMalformedResponse."""
    problem = ""
    if not isinstance(body, Mapping):
        problem = f"a {type(body).__name__} instead of a page object"
    elif isinstance(body.get("count"), bool) or not isinstance(body.get("count"), int) or body["count"] < 0:
        problem = "no integer count"
    elif not isinstance(body.get("results"), list):
        problem = "no results list"
    elif any(link not in body or not isinstance(body[link], str | None) for link in ("next", "previous")):
        problem = "next/previous that are not URLs"
    if problem:
        raise CatalogMalformedResponse(f"catalog sent {problem} for GET {_short(url)}", url=redact_url(url))
    assert isinstance(body, Mapping)
    return body["count"], body.get("next"), body["results"]


def _status_outcome(status: int) -> str:
    """The observer's outcome word for an HTTP status."""
    if 200 <= status < 300:
        return "ok"
    named = {401: "unauthorized", 404: "not_found", 429: "throttled"}
    if status in named:
        return named[status]
    if 300 <= status < 400:
        return "redirect"
    return "client_error" if status < 500 else "server_error"


def _error_outcome(exc: CatalogError) -> str:
    """The observer's outcome word for a failure: the error's class in snake case without
    ``Catalog`` (``CatalogTimeout`` -> ``timeout``, ``CatalogConnectionError`` -> ``connection_error``)."""
    name = type(exc).__name__.removeprefix("Catalog") or "error"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
