"""Property-based tests (hypothesis, the conftest profile's 100 examples each) for what the edge
must survive: any JSON as a catalog record, any text as a course key, any key list to split into
request URLs."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import responses
from hypothesis import assume, given
from hypothesis import strategies as st
from opaque_keys import InvalidKeyError
from opaque_keys.edx.keys import CourseKey

from catalog.mapping import MAX_URL_LENGTH, RefusedRecord, map_course_run
from catalog_client.client import CatalogClient, ClientConfig, split_keys_for_urls
from overviews.keys import parse_course_key
from tests.conftest import API, OAUTH

# -- the mapping ---------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# Characters a hostile URL or language code would use: bidirectional and zero-width controls,
# Unicode whitespace, C0/C1 controls, quotes, credentials and port separators.
_HOSTILE_CHARS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u200b\ufeff"
_HOSTILE_CHARS += "\u00a0\u2028\u3000\t\n\r\x00\x1b\x85 \"'<>\\@:`"
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(_HOSTILE_CHARS), st.characters(codec="utf-8")), max_size=12
)
_url_parts = st.builds(
    lambda scheme, user, host, port, path: f"{scheme}{user}{host}{port}/{path}",
    st.sampled_from(["https://", "http://", "HTTP://", "javascript:", "ftp://", "//", "https:///", ""]),
    st.sampled_from(["", "user@", "user:pass@", ":@"]),
    st.one_of(st.sampled_from(["x.example", "[::1]", "[::1", "exämple.example", ""]), hostile_text),
    st.sampled_from(["", ":443", ":0", ":", ":99999", ":http", ":-1"]),
    st.one_of(st.from_regex(r"[a-z0-9/%-]{0,20}", fullmatch=True), hostile_text, st.just("a" * 490)),
)


def _insert(text: str, char: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + char + text[at:]


def _one_hostile_char(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value that would be acceptable but for one hostile character, anywhere in it."""
    return st.builds(_insert, valid, st.sampled_from(_HOSTILE_CHARS), st.integers(0, 600))


_valid_urls = st.builds(
    lambda scheme, host, path: f"{scheme}{host}/{path}",
    st.sampled_from(["https://", "http://"]),
    st.sampled_from(["x.example", "www.example.com:8443", "exämple.example"]),
    st.from_regex(r"[a-z0-9/%-]{0,30}", fullmatch=True),
)
url_like = st.one_of(_url_parts, _valid_urls, _one_hostile_char(_valid_urls))
_valid_languages = st.from_regex(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,4}){0,2}", fullmatch=True)
language_like = st.one_of(
    st.from_regex(r"[A-Za-z]{1,4}([-_][A-Za-z0-9]{0,9}){0,3}", fullmatch=True),
    _one_hostile_char(_valid_languages),
    st.builds(lambda a, b: a + b, _valid_languages, hostile_text),
    hostile_text,
)
# Records with every mapped field present, so that each example reaches every validator.
catalog_records = st.fixed_dictionaries(
    {
        "marketing_url": st.one_of(url_like, url_like, json_values),
        "eligible_for_financial_aid": st.one_of(st.booleans(), json_values),
        "content_language": st.one_of(language_like, language_like, json_values),
    },
    optional={"key": json_values, "title": json_values},
)

_ASCII_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*", re.ASCII)


def _acceptable_url(url: str) -> bool:
    """What a stored marketing URL must be, written independently of catalog.mapping."""
    if len(url) > MAX_URL_LENGTH or url != url.strip():
        return False
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Cs", "Co") for c in url):
        return False
    if any(c in url for c in " \"'<>\\`"):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    ip_literal = "[" in parts.netloc and all(c in "0123456789abcdef:." for c in host)
    return (
        parts.scheme in ("http", "https")
        and bool(host)
        and (ip_literal or all(c.isalnum() or c in "-._" for c in host))
        and "@" not in parts.netloc
        and port != 0
        and not parts.netloc.endswith(":")
    )


@given(st.one_of(json_values, catalog_records, catalog_records))
def test_any_json_record_maps_to_acceptable_values_or_is_refused(record):
    try:
        values = map_course_run(record)
    except RefusedRecord as exc:
        assert len(str(exc)) < 300  # a reason, never a huge value echoed back
        return
    assert set(values) == {"marketing_url", "eligible_for_financial_aid", "language"}
    assert values["marketing_url"] is None or _acceptable_url(values["marketing_url"])
    assert values["eligible_for_financial_aid"] is record["eligible_for_financial_aid"]  # True/False as given
    language = values["language"]
    assert language is None or (len(language) <= 16 and _ASCII_LANGUAGE.fullmatch(language))


@given(language_like)
def test_a_language_is_stored_exactly_as_given_or_the_record_is_refused(language):
    record = {"marketing_url": None, "eligible_for_financial_aid": True, "content_language": language}
    acceptable = len(language) <= 16 and bool(_ASCII_LANGUAGE.fullmatch(language))
    try:
        values = map_course_run(record)
    except RefusedRecord:
        assert not acceptable
        return
    assert values["language"] == (language or None) and (acceptable or language == "")


@given(url_like)
def test_a_url_is_stored_exactly_as_given_or_the_record_is_refused(url):
    record = {"marketing_url": url, "eligible_for_financial_aid": True, "content_language": None}
    try:
        values = map_course_run(record)
    except RefusedRecord:
        assert url == "" or not _acceptable_url(url)  # nothing acceptable is refused (but "")
        return
    assert values["marketing_url"] == url and _acceptable_url(url)


# -- course keys ---------------------------------------------------------------------------------

key_like = st.one_of(
    st.text(max_size=300),
    st.from_regex(r"(course-v1|ccx-v1|library-v1|block-v1):[\w.+@:%~\- ]{0,60}", fullmatch=True),
    st.from_regex(r"[\w.%~\-]{0,20}/[\w.%~\-]{0,20}/[\w.%:~\-]{0,20}", fullmatch=True),
    st.builds(lambda s: "course-v1:" + s, st.text(max_size=300)),
    st.none(),
    st.integers(),
)


@given(key_like)
def test_key_parsing_yields_a_key_or_invalid_key_error_only(raw):
    try:
        key = parse_course_key(raw)
    except InvalidKeyError:
        return
    assert isinstance(key, CourseKey)
    assert len(str(key)) <= 255  # fits the column
    assert parse_course_key(str(key)) == key  # the stored form parses back to the same key


# -- splitting keys into request URLs ------------------------------------------------------------

keys_lists = st.lists(
    st.one_of(
        st.from_regex(r"course-v1:[A-Za-z0-9]{1,8}\+[A-Za-z0-9.]{1,12}\+[A-Za-z0-9_]{1,10}", fullmatch=True),
        st.text(min_size=1, max_size=60),  # commas, '+', '&', '#', non-ASCII: all percent-encoded
    ),
    unique=True,
    max_size=60,
)


def _first_page_url(chunk: list[str]) -> str:
    query = "keys=" + ",".join(quote(k, safe="") for k in chunk) + "&exclude_utm=1"
    return f"{API}course_runs/?{query}&page=1&page_size={len(chunk)}"


@given(keys_lists, st.integers(min_value=len(API) + 65, max_value=2000))
def test_every_key_is_sent_once_in_order_and_no_url_exceeds_the_limit(keys, limit):
    # A key fits when a URL of it alone, with page_size given as many digits as len(keys) has,
    # stays under the limit.
    fixed = len(f"{API}course_runs/?keys=&exclude_utm=1&page=1&page_size={len(keys)}")
    fits = all(fixed + len(quote(k, safe="")) < limit for k in keys)
    if not fits:
        # Defined behaviour: a key that cannot fit in any URL is refused up front, naming it;
        # nothing is split (no request is sent without it, none with a URL over the limit).
        with pytest.raises(ValueError, match="too long for max_url_length"):
            split_keys_for_urls(API, keys, limit)
        return
    chunks = split_keys_for_urls(API, keys, limit)
    assert [k for chunk in chunks for k in chunk] == keys  # each once, order kept
    assert all(chunks)  # no empty request
    for chunk in chunks:
        assert len(_first_page_url(chunk)) <= limit


@given(
    st.lists(
        st.from_regex(
            r"course-v1:[A-Za-z0-9]{1,6}\+[A-Za-z0-9&#+% ]{1,10}\+[A-Za-z0-9]{1,6}", fullmatch=True
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=len(API) + 100, max_value=700),
)
def test_the_client_sends_each_distinct_key_once_within_the_url_limit(keys, limit):
    """At the wire: duplicates asked for are sent once; every request URL is within the limit.
    (A key with a comma, the catalog's separator, is refused by the client before any request.)"""
    assume(all(len(_first_page_url([k])) + 2 < limit for k in keys))
    sent: list[str] = []
    urls: list[str] = []

    def answer(request):
        urls.append(request.url)
        query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        sent.extend(k for k in query["keys"][0].split(",") if k)  # parse_qs has decoded them
        return 200, {}, '{"count": 0, "next": null, "previous": null, "results": []}'

    config = ClientConfig(
        api_url=API, oauth_url=OAUTH, client_id="cid", client_secret="s", max_url_length=limit
    )
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, OAUTH, json={"access_token": "t", "expires_in": 3600, "token_type": "JWT"})
        rsps.add_callback(responses.GET, re.compile(re.escape(API) + r"course_runs/\?.*"), callback=answer)
        with CatalogClient(config) as client:
            assert client.get_course_runs(keys) == {}
    assert sorted(sent) == sorted(set(keys)) and len(sent) == len(set(keys))
    assert all(len(url) <= limit for url in urls)
