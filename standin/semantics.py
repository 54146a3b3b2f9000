"""How the catalog (course-discovery) course-runs API answers, as pure functions.

One statement of the catalog's behaviour, behind every imitation of it: the stand-in server
(``standin.server``) and the test fakes (``tests/wire.py``, the fakes in ``tests/test_client.py``)
build their answers from these functions, so they cannot drift apart. The client
(``catalog_client``) never imports this module: it is written against the catalog, and a bug
shared by the client and its imitation would be invisible to every test.

The behaviour imitated, read from course-discovery and Django REST framework:

- the list is ordered by ``lower(key)`` (ties, which the catalog cannot hold, by the key itself);
- ``keys=k1,k2`` filters to exactly those runs, unknown keys simply absent; an empty ``keys=``
  means no filter; ``hidden=0|false`` leaves hidden runs out (included by default);
- pagination, chosen per request: ``page`` present is page-number mode (``page_size``, default
  20, no maximum, 0 or non-numeric falls back to 20; ``page=last``; a page past the end or
  ``page=0`` is 404 ``Invalid page.``); otherwise limit/offset mode, and with neither ``page``
  nor ``limit`` that is limit 20 with ``page_size`` ignored;
- the envelope ``{"count", "next", "previous", "results"}`` whose links are absolute URLs with
  the query keys sorted (DRF's ``replace_query_param``);
- ``exclude_utm`` is cast with ``int()``: ``1`` strips the tracking parameters from
  ``marketing_url``, absent or ``0`` keeps them, anything else (``true``) is a 500;
- the error bodies: 401 with ``WWW-Authenticate: JWT realm="api"`` and one of four details, 404
  ``No CourseRun matches the given query.`` for an unknown key (an HTML page for a path that is
  not a key), 429 with ``Retry-After`` and ``Expected available in N seconds.``

Stdlib only; nothing here does I/O, keeps state or draws random numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "KEY_RE",
    "Answer",
    "Window",
    "detail_body",
    "detail_key",
    "envelope",
    "exclude_utm",
    "excludes_hidden",
    "invalid_page",
    "keys_filter",
    "list_body",
    "paginate",
    "query_params",
    "run_not_found",
    "select",
    "serialize",
    "server_error",
    "sort_key",
    "throttled",
    "token_body",
    "unauthorized",
    "with_query",
]

DEFAULT_PAGE_SIZE = 20
UTM_MEDIUM = "affiliate_partner"

# course-discovery's COURSE_RUN_ID_REGEX: what the detail route accepts as a key (else an HTML 404).
KEY_RE = re.compile(r"^[^/+]+(/|\+)[^/+]+(/|\+)[^/]+$")

RUN_NOT_FOUND = "No CourseRun matches the given query."
INVALID_PAGE = "Invalid page."
# The 401 details of the catalog's JWT authentication, by cause.
NO_CREDENTIALS = "Authentication credentials were not provided."
TOKEN_EXPIRED = "Token has expired."  # noqa: S105 - a 401 detail, not a credential
DECODE_ERROR = "Error decoding token."
INVALID_TOKEN = "Invalid token."  # noqa: S105 - a 401 detail, not a credential

NOT_FOUND_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
SERVER_ERROR_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n'
    "  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
}

Run = Mapping[str, Any]


# --- answers ----------------------------------------------------------------------------------------


class Answer(Exception):
    """One HTTP answer: status, body bytes, content type, extra headers. Raised by the functions
    below when the catalog answers with an error instead of what was asked, so a caller can
    ``except Answer`` around a whole request."""

    def __init__(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})

    def json(self) -> Any:
        return json.loads(self.body)

    def to_responses(self) -> tuple[int, dict[str, str], bytes]:
        """The ``(status, headers, body)`` a ``responses`` callback returns."""
        return self.status, {"Content-Type": self.content_type, **self.headers}, self.body


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as DRF renders it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_answer(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, json_bytes(obj), "application/json", headers)


def html_answer(status: int, html: str) -> Answer:
    return Answer(status, html.encode("utf-8"), "text/html; charset=utf-8")


def gateway_html(status: int) -> str:
    """The page nginx in front of the catalog answers with a 5xx of its own."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>"
        "\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def unauthorized(detail: str) -> Answer:
    """401 with the JWT challenge; ``detail`` is one of the four constants above."""
    return json_answer(401, {"detail": detail}, {"WWW-Authenticate": 'JWT realm="api"'})


def throttled(wait_s: float) -> Answer:
    """429 from DRF's throttle: whole seconds, at least 1, in the header and the detail."""
    seconds = max(1, math.ceil(wait_s))
    unit = "second" if seconds == 1 else "seconds"
    return json_answer(
        429,
        {"detail": f"Request was throttled. Expected available in {seconds} {unit}."},
        {"Retry-After": str(seconds)},
    )


def run_not_found() -> Answer:
    """404 for a key-shaped path naming no run."""
    return json_answer(404, {"detail": RUN_NOT_FOUND})


def invalid_page() -> Answer:
    """404 for ``page=0``, a non-numeric page or a page past the end."""
    return json_answer(404, {"detail": INVALID_PAGE})


def not_found_page() -> Answer:
    """Django's HTML 404, for a path no route matches (a detail path that is not a key)."""
    return html_answer(404, NOT_FOUND_HTML)


def server_error() -> Answer:
    """Django's HTML 500 (what ``exclude_utm=true`` gets)."""
    return html_answer(500, SERVER_ERROR_HTML)


def method_not_allowed(method: str) -> Answer:
    return json_answer(405, {"detail": f'Method "{method}" not allowed.'})


def token_body(token: str, expires_in: int, *, token_type: str = "JWT") -> dict[str, Any]:  # noqa: S107 - a token type, not a secret
    """The OAuth2 client-credentials answer (``token_type=jwt`` asked: a JWT)."""
    return {"access_token": token, "expires_in": expires_in, "token_type": token_type, "scope": "read write"}


# --- reading a request ------------------------------------------------------------------------------


def query_params(query: str) -> dict[str, str]:
    """The query as Django's ``QueryDict`` reads one value: the last one wins, blanks are kept,
    ``+`` is a space (so a raw ``+`` in a key matches nothing)."""
    return {name: values[-1] for name, values in parse_qs(query, keep_blank_values=True).items()}


def keys_filter(params: Mapping[str, str]) -> list[str] | None:
    """The keys asked for, or None for no filter (``keys`` absent or empty)."""
    raw = params.get("keys")
    return raw.split(",") if raw else None


def excludes_hidden(params: Mapping[str, str]) -> bool:
    """``hidden=0`` or ``hidden=false`` leaves hidden runs out; by default they are included."""
    return params.get("hidden", "").lower() in ("0", "false")


def exclude_utm(params: Mapping[str, str]) -> bool:
    """course-discovery casts ``exclude_utm`` with ``int()``: anything else raises a 500."""
    if "exclude_utm" not in params:
        return False
    try:
        return bool(int(params["exclude_utm"]))
    except ValueError:
        raise server_error() from None


def detail_key(segment: str) -> str:
    """The key in a detail path's last segment (URL-decoded); an HTML 404 if it is not key-shaped."""
    key = unquote(segment)
    if not KEY_RE.match(key):
        raise not_found_page()
    return key


# --- the list ---------------------------------------------------------------------------------------


def sort_key(key: str) -> tuple[str, str]:
    """The list's order: ``lower(key)``."""
    return (key.lower(), key)


def select(runs: Mapping[str, Run], keys: list[str] | None, exclude_hidden: bool) -> list[Run]:
    """The runs a list request covers, in list order: ``runs`` by key, filtered to ``keys`` (None:
    every run; unknown keys absent; duplicates once), hidden ones left out if asked."""
    if keys is None:
        chosen: Iterable[Run] = runs.values()
    else:
        chosen = (runs[k] for k in set(keys) if k in runs)
    if exclude_hidden:
        chosen = (run for run in chosen if not run.get("hidden"))
    return sorted(chosen, key=lambda run: sort_key(str(run["key"])))


@dataclass(frozen=True)
class Window:
    """The slice of the selected runs one list request answers, and its links."""

    start: int
    stop: int
    next_url: str | None
    previous_url: str | None


def _positive_int(value: str, *, strict: bool) -> int:
    """DRF's ``_positive_int``: ValueError when not an integer, negative, or zero and strict."""
    number = int(value)
    if number < 0 or (strict and number == 0):
        raise ValueError(value)
    return number


def paginate(url: str, params: Mapping[str, str], count: int, *, max_page_size: int = 0) -> Window:
    """Which of ``count`` selected runs the request at ``url`` gets, and its ``next``/``previous``.

    ``page`` sent and not blank chooses page-number mode, else limit/offset.
    ``max_page_size`` (0: none, as deployed) caps ``page_size`` in page-number mode. Raises the
    404 ``invalid_page()`` for a page that does not exist.
    """
    if params.get("page"):
        try:
            page_size = _positive_int(params.get("page_size", ""), strict=True)
        except ValueError:
            page_size = DEFAULT_PAGE_SIZE
        if max_page_size > 0:
            page_size = min(page_size, max_page_size)
        num_pages = max(1, math.ceil(count / page_size))
        raw_page = params["page"]
        try:
            number = num_pages if raw_page == "last" else int(raw_page)
        except ValueError:
            number = 0
        if number < 1 or number > num_pages:
            raise invalid_page()
        start = (number - 1) * page_size
        next_url = with_query(url, {"page": number + 1}) if number < num_pages else None
        if number == 1:
            previous_url = None
        elif number == 2:
            previous_url = with_query(url, {}, remove=("page",))
        else:
            previous_url = with_query(url, {"page": number - 1})
        return Window(start, min(start + page_size, count), next_url, previous_url)

    try:
        limit = _positive_int(params.get("limit", ""), strict=True)
    except ValueError:
        limit = DEFAULT_PAGE_SIZE  # no limit sent: 20, whatever page_size says
    try:
        offset = _positive_int(params.get("offset", ""), strict=False)
    except ValueError:
        offset = 0
    next_url = with_query(url, {"limit": limit, "offset": offset + limit}) if offset + limit < count else None
    if offset <= 0:
        previous_url = None
    elif offset - limit <= 0:
        previous_url = with_query(url, {"limit": limit}, remove=("offset",))
    else:
        previous_url = with_query(url, {"limit": limit, "offset": offset - limit})
    return Window(offset, min(offset + limit, count), next_url, previous_url)


def with_query(url: str, set_params: Mapping[str, Any], remove: Iterable[str] = ()) -> str:
    """DRF's ``replace_query_param``/``remove_query_param``: query keys sorted, blank values kept."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    params = parse_qs(query, keep_blank_values=True)
    for name in remove:
        params.pop(name, None)
    for name, value in set_params.items():
        params[name] = [str(value)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(params.items()), doseq=True), fragment))


def envelope(count: int, window: Window, results: list[Any]) -> dict[str, Any]:
    return {"count": count, "next": window.next_url, "previous": window.previous_url, "results": results}


def serialize(run: Run, *, exclude_utm: bool, client: str) -> Run:
    """A run as served: ``marketing_url`` with the tracking parameters unless ``exclude_utm``
    (``utm_source`` is the requesting client). Never mutates ``run``; returns it as is when there
    is nothing to change."""
    url = run.get("marketing_url")
    if not url or exclude_utm:
        return run
    return {**run, "marketing_url": f"{url}?{urlencode({'utm_source': client, 'utm_medium': UTM_MEDIUM})}"}


def list_body(url: str, runs: Mapping[str, Run], *, client: str, max_page_size: int = 0) -> dict[str, Any]:
    """The whole list answer for the absolute request ``url`` over ``runs`` (by key). Raises an
    ``Answer`` when the catalog answers with an error (an invalid page, ``exclude_utm=true``)."""
    params = query_params(urlsplit(url).query)
    selected = select(runs, keys_filter(params), excludes_hidden(params))
    window = paginate(url, params, len(selected), max_page_size=max_page_size)
    strip = exclude_utm(params)
    results = [
        serialize(run, exclude_utm=strip, client=client) for run in selected[window.start : window.stop]
    ]
    return envelope(len(selected), window, results)


def detail_body(run: Run | None, params: Mapping[str, str], *, client: str) -> Run:
    """The detail answer for the run the key names (exact match: None when there is none, which
    is the JSON 404)."""
    if run is None:
        raise run_not_found()
    return serialize(run, exclude_utm=exclude_utm(params), client=client)
