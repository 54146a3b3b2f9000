"""The catalog's behaviour as ``standin.semantics`` states it, and every imitation agreeing with it.

The first part pins each documented rule on the pure functions (course-discovery's ordering,
filters, both pagination modes, the envelope, ``exclude_utm`` and the error bodies). The second
sends the same requests to the stand-in over real HTTP, to ``tests.wire.WireCatalog`` and to
``tests.test_client.FakeCatalog`` and asks for the same answers: the stand-in keeps its own
cached list order (it must not sort 100k runs per page), so an agreement test is what shows that
cache matches the rule. No Django needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from standin import StandinServer, make_run, semantics

BASE = "https://catalog.test/api/v1/course_runs/"
KEYS = [
    "course-v1:b+1+x",
    "course-v1:A+1+x",
    "course-v1:a+2+x",
    "MITx/6.002x/2012_Fall",
    "course-v1:C+3+x",
    "edX/Old/2013",
]


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Overrides conftest's Django cache clearing: these tests need no Django at all."""


def runs(keys: list[str] = KEYS, **fields: Any) -> dict[str, dict[str, Any]]:
    return {key: {"key": key, "marketing_url": None, "hidden": False, **fields} for key in keys}


def listed(query: dict[str, Any], by_key: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    url = f"{BASE}?{urlencode(query)}" if query else BASE
    return semantics.list_body(url, runs() if by_key is None else by_key, client="cid")


def result_keys(body: dict[str, Any]) -> list[str]:
    return [run["key"] for run in body["results"]]


def answer_of(call: Any) -> tuple[int, Any]:
    """(status, JSON body) of an ``Answer`` raised by ``call``."""
    with pytest.raises(semantics.Answer) as info:
        call()
    return info.value.status, json.loads(info.value.body) if "json" in info.value.content_type else None


# --- the rules --------------------------------------------------------------------------------------


def test_the_list_is_ordered_by_lowercased_key() -> None:
    assert result_keys(listed({"page": 1})) == sorted(KEYS, key=str.lower)
    assert result_keys(listed({"page": 1}))[:3] == ["course-v1:A+1+x", "course-v1:a+2+x", "course-v1:b+1+x"]


def test_without_page_or_limit_the_list_serves_20_and_ignores_page_size() -> None:
    many = runs([f"course-v1:O+{i:03d}+r" for i in range(45)])
    body = listed({"page_size": 100}, many)
    assert len(body["results"]) == 20 and body["count"] == 45
    assert body["next"] == f"{BASE}?limit=20&offset=20&page_size=100"  # limit/offset mode
    assert body["previous"] is None


def test_page_mode_honours_page_size_without_a_maximum() -> None:
    many = runs([f"course-v1:O+{i:03d}+r" for i in range(45)])
    first = listed({"page": 1, "page_size": 40}, many)
    assert len(first["results"]) == 40 and first["next"] == f"{BASE}?page=2&page_size=40"
    second = listed({"page": 2, "page_size": 40}, many)
    assert result_keys(second) == [f"course-v1:O+{i:03d}+r" for i in range(40, 45)]
    assert second["next"] is None and second["previous"] == f"{BASE}?page_size=40"
    assert len(listed({"page": 1, "page_size": 1000}, many)["results"]) == 45


@pytest.mark.parametrize("page_size", ["0", "-3", "ten", ""])
def test_an_unusable_page_size_falls_back_to_20(page_size: str) -> None:
    many = runs([f"course-v1:O+{i:03d}+r" for i in range(25)])
    assert len(listed({"page": 1, "page_size": page_size}, many)["results"]) == 20


def test_limit_offset_mode_and_its_links() -> None:
    many = runs([f"course-v1:O+{i:03d}+r" for i in range(10)])
    body = listed({"limit": 3, "offset": 6}, many)
    assert result_keys(body) == [f"course-v1:O+{i:03d}+r" for i in (6, 7, 8)]
    assert body["next"] == f"{BASE}?limit=3&offset=9"
    assert body["previous"] == f"{BASE}?limit=3&offset=3"
    assert listed({"limit": 3, "offset": 2}, many)["previous"] == f"{BASE}?limit=3"


@pytest.mark.parametrize("page", ["0", "3", "-1", "x"])
def test_a_page_that_does_not_exist_is_404_invalid_page(page: str) -> None:
    status, body = answer_of(lambda: listed({"page": page, "page_size": 5}))
    assert (status, body) == (404, {"detail": "Invalid page."})


def test_the_first_page_of_nothing_exists_and_last_names_the_last_page() -> None:
    assert listed({"page": 1}, {}) == {"count": 0, "next": None, "previous": None, "results": []}
    assert result_keys(listed({"page": "last", "page_size": 4})) == sorted(KEYS, key=str.lower)[4:]


def test_links_are_absolute_with_the_query_keys_sorted() -> None:
    url = f"{BASE}?page_size=2&{urlencode({'keys': ','.join(KEYS)})}&exclude_utm=1&page=1"
    body = semantics.list_body(url, runs(), client="cid")
    parts = urlsplit(body["next"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BASE
    names = [name for name, _ in parse_qsl(parts.query)]
    assert names == sorted(names) == ["exclude_utm", "keys", "page", "page_size"]
    assert dict(parse_qsl(parts.query))["page"] == "2"


def test_keys_filter_to_exactly_those_runs_unknown_ones_absent_in_list_order() -> None:
    body = listed({"keys": "edX/Old/2013,course-v1:NOPE+1+x,course-v1:A+1+x,edX/Old/2013", "page": 1})
    assert result_keys(body) == ["course-v1:A+1+x", "edX/Old/2013"] and body["count"] == 2


def test_a_key_matches_exactly_not_case_insensitively() -> None:
    assert result_keys(listed({"keys": "course-v1:B+1+x", "page": 1})) == []


def test_an_empty_keys_filter_means_no_filter() -> None:
    assert listed({"keys": "", "page": 1})["count"] == len(KEYS)


def test_hidden_runs_are_listed_unless_hidden_0_or_false() -> None:
    by_key = runs()
    by_key["edX/Old/2013"]["hidden"] = True
    assert listed({"page": 1}, by_key)["count"] == 6
    for flag in ("0", "false", "False"):
        assert "edX/Old/2013" not in result_keys(listed({"page": 1, "hidden": flag}, by_key))
    assert listed({"page": 1, "hidden": "1"}, by_key)["count"] == 6


def test_exclude_utm_is_an_integer_flag_and_true_is_a_500() -> None:
    by_key = runs(["course-v1:A+1+x"], marketing_url="https://www.example.com/course/a")
    tracked = "https://www.example.com/course/a?utm_source=cid&utm_medium=affiliate_partner"
    assert listed({"page": 1}, by_key)["results"][0]["marketing_url"] == tracked
    assert listed({"page": 1, "exclude_utm": 0}, by_key)["results"][0]["marketing_url"] == tracked
    assert listed({"page": 1, "exclude_utm": 1}, by_key)["results"][0]["marketing_url"].endswith("/course/a")
    status, body = answer_of(lambda: listed({"page": 1, "exclude_utm": "true"}, by_key))
    assert status == 500 and body is None  # Django's HTML error page
    assert by_key["course-v1:A+1+x"]["marketing_url"] == "https://www.example.com/course/a"  # not mutated


def test_a_null_marketing_url_stays_null() -> None:
    assert listed({"page": 1})["results"][0]["marketing_url"] is None


def test_detail_exact_key_and_its_404s() -> None:
    by_key = runs()
    assert semantics.detail_body(by_key.get("edX/Old/2013"), {"exclude_utm": "1"}, client="c")["key"] == (
        "edX/Old/2013"
    )
    status, body = answer_of(lambda: semantics.detail_body(None, {}, client="c"))
    assert (status, body) == (404, {"detail": "No CourseRun matches the given query."})
    assert semantics.detail_key("course-v1%3AA%2B1%2Bx") == "course-v1:A+1+x"
    status, body = answer_of(lambda: semantics.detail_key("not-a-key"))
    assert status == 404 and body is None  # an HTML page, not JSON


def test_401_carries_the_jwt_challenge() -> None:
    answer = semantics.unauthorized(semantics.TOKEN_EXPIRED)
    assert answer.status == 401 and answer.json() == {"detail": "Token has expired."}
    assert answer.headers == {"WWW-Authenticate": 'JWT realm="api"'}


@pytest.mark.parametrize(
    ("wait", "seconds", "detail"),
    [(0.2, "1", "1 second"), (1.0, "1", "1 second"), (29.01, "30", "30 seconds")],
)
def test_429_rounds_the_wait_up_to_whole_seconds(wait: float, seconds: str, detail: str) -> None:
    answer = semantics.throttled(wait)
    assert answer.status == 429 and answer.headers == {"Retry-After": seconds}
    assert answer.json() == {"detail": f"Request was throttled. Expected available in {detail}."}


def test_the_query_reads_the_last_value_and_a_raw_plus_as_a_space() -> None:
    assert semantics.query_params("page=1&page=2&keys=a+b&x=") == {"page": "2", "keys": "a b", "x": ""}


# --- every imitation agrees -------------------------------------------------------------------------

CATALOG_KEYS = [
    *(f"course-v1:Org{i % 3}+N{i:02d}+R" for i in range(23)),
    *(f"course-v1:org{i % 3}+n{i:02d}+r" for i in range(5)),
    "MITx/6.00x/2013_Spring",
    "edX/Old/2013",
]
HIDDEN = {"course-v1:Org1+N04+R", "edX/Old/2013"}

queries = st.fixed_dictionaries(
    {},
    optional={
        "page": st.sampled_from(["1", "2", "3", "last", "0", "9", ""]),
        "page_size": st.sampled_from(["1", "7", "20", "100", "0", "x"]),
        "limit": st.sampled_from(["5", "30", "0"]),
        "offset": st.sampled_from(["0", "4", "25", "-1"]),
        "keys": st.lists(st.sampled_from([*CATALOG_KEYS, "course-v1:No+Such+Run"]), max_size=6).map(",".join),
        "hidden": st.sampled_from(["0", "false", "1"]),
        "exclude_utm": st.sampled_from(["0", "1", "true"]),
    },
)


def catalog_runs() -> list[dict[str, Any]]:
    return [make_run(key, seed=i, hidden=key in HIDDEN) for i, key in enumerate(CATALOG_KEYS)]


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[StandinServer, requests.Session]]:
    with StandinServer(catalog_runs()) as server, requests.Session() as session:
        # The cached list orders are built, then changed: an upsert of a hidden run, a delete.
        server.state.select(None, True)
        server.state.update("course-v1:Org2+N05+R", hidden=True)
        server.state.delete("course-v1:Org0+N00+R")
        server.state.upsert(make_run("course-v1:Org0+N00+R", seed=0))
        form = {
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "token_type": "jwt",
        }
        token = session.post(server.oauth_url, data=form, timeout=5).json()["access_token"]
        session.headers["Authorization"] = f"JWT {token}"
        session.trust_env = False
        yield server, session


def expected_answer(url: str, by_key: dict[str, dict[str, Any]], client: str) -> tuple[int, Any]:
    try:
        return 200, semantics.list_body(url, by_key, client=client)
    except semantics.Answer as error:
        return error.status, error.json() if "json" in error.content_type else None


def served_answer(resp: requests.Response) -> tuple[int, Any]:
    json_body = resp.headers["Content-Type"] == "application/json"
    return resp.status_code, resp.json() if json_body else None


@settings(max_examples=120)
@given(query=queries)
def test_the_standin_and_the_wire_fake_answer_every_list_query_as_the_semantics_say(
    standin: tuple[StandinServer, requests.Session], query: dict[str, str]
) -> None:
    from tests.conftest import API
    from tests.wire import WireCatalog

    server, session = standin
    by_key = {run["key"]: run for run in server.state.runs()}
    suffix = "course_runs/" + (f"?{urlencode(query)}" if query else "")

    url = server.api_url + suffix
    assert served_answer(session.get(url, timeout=5)) == expected_answer(url, by_key, server.client_id)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        wire = WireCatalog(rsps, by_key)
        resp = requests.get(API + suffix, timeout=5)
    assert served_answer(resp) == expected_answer(API + suffix, by_key, wire.client_id)
    assert wire.list_requests == 1


def test_the_client_tests_fake_catalog_is_the_same_list() -> None:
    from tests.test_client import FakeCatalog

    fake = FakeCatalog(KEYS, max_page_size=2)
    query = {"keys": ",".join(KEYS), "page": 1, "page_size": 5}
    request = requests.Request("GET", f"{BASE}?{urlencode(query)}").prepare()
    status, _, body = fake(request)
    expected = semantics.list_body(str(request.url), fake.runs, client="lms-catalog-worker", max_page_size=2)
    assert status == 200 and json.loads(body) == expected
    assert len(expected["results"]) == 2 and expected["next"] is not None
