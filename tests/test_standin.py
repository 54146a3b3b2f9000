"""The stand-in catalog behaves like the real one (the rules in ``standin.semantics``), over real HTTP,
with its faults and control routes. No Django needed."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import requests

from standin import (
    HOSTILE_VARIANTS,
    StandinServer,
    generate_runs,
    hostile_variant,
    lms_course_records,
    make_run,
)

N_RUNS = 300


def _token(server: StandinServer, **overrides: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "token_type": "jwt",
        **overrides,
    }
    resp = requests.post(server.oauth_url, data=form, timeout=5)
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def _session(server: StandinServer) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"JWT {_token(server)}"
    return session


def _runs_url(server: StandinServer, **params: object) -> str:
    url = server.api_url + "course_runs/"
    return f"{url}?{urlencode(params)}" if params else url


def _detail_url(server: StandinServer, key: str) -> str:
    return server.api_url + "course_runs/" + quote(key, safe="") + "/"


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with StandinServer(generate_runs(N_RUNS, seed=7)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Overrides conftest's Django cache clearing: these tests need no Django at all."""


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        srv.reset_faults()
        srv.reset_stats()


@pytest.fixture
def api(server: StandinServer) -> Iterator[requests.Session]:
    with _session(server) as session:
        yield session


# --- authentication -----------------------------------------------------------------------------


def test_token_flow(server: StandinServer) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "standin-client",
        "client_secret": "standin-secret",
        "token_type": "jwt",
    }
    resp = requests.post(server.oauth_url, data=form, timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert body["expires_in"] == 36000 and body["token_type"] == "JWT" and body["scope"] == "read write"
    assert body["access_token"].count(".") == 2

    bad = requests.post(server.oauth_url, data={**form, "client_secret": "nope"}, timeout=5)
    assert (bad.status_code, bad.json()) == (401, {"error": "invalid_client"})
    bad_grant = requests.post(server.oauth_url, data={**form, "grant_type": "password"}, timeout=5)
    assert bad_grant.status_code == 401

    server.set_faults(token_ttl=50)
    assert requests.post(server.oauth_url, data=form, timeout=5).json()["expires_in"] == 50


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Authentication credentials were not provided."),
        ("Bearer {token}", "Error decoding token."),
        ("garbage", "Error decoding token."),
        ("JWT not-a-token-we-issued", "Invalid token."),
    ],
)
def test_401_bodies_and_header(server: StandinServer, header: str | None, detail: str) -> None:
    headers = {"Authorization": header.format(token=_token(server))} if header else {}
    resp = requests.get(_runs_url(server), headers=headers, timeout=5)
    assert resp.status_code == 401
    assert resp.json() == {"detail": detail}
    assert resp.headers["WWW-Authenticate"] == 'JWT realm="api"'


def test_expired_token(server: StandinServer, api: requests.Session) -> None:
    assert api.get(_runs_url(server)).status_code == 200
    server.set_faults(expire_tokens_now=True)
    assert server.faults.expire_tokens_now is False  # one-shot
    resp = api.get(_runs_url(server))
    assert (resp.status_code, resp.json()) == (401, {"detail": "Token has expired."})
    assert server.stats()["status_401"] == 1


# --- detail -------------------------------------------------------------------------------------


def test_detail(server: StandinServer, api: requests.Session) -> None:
    keys = server.state.keys()
    new_key = next(k for k in keys if k.startswith("course-v1:"))
    old_key = next(k for k in keys if "/" in k)
    for key in (new_key, old_key):
        resp = api.get(_detail_url(server, key))
        assert resp.status_code == 200
        assert resp.json()["key"] == key
    # Old-style keys also resolve with raw slashes, as Django decodes the path anyway.
    assert api.get(server.api_url + "course_runs/" + old_key + "/").status_code == 200

    missing = api.get(_detail_url(server, "course-v1:NoOrg+Nope+1T2020"))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No CourseRun matches the given query."}
    assert api.get(_detail_url(server, "a/b/c")).json()["detail"].startswith("No CourseRun")

    not_a_key = api.get(server.api_url + "course_runs/not-a-key/")
    assert not_a_key.status_code == 404
    assert not_a_key.headers["Content-Type"].startswith("text/html")
    no_slash = api.get(_detail_url(server, new_key).rstrip("/"))
    assert no_slash.status_code == 404 and "<h1>Not Found</h1>" in no_slash.text
    stats = server.stats()
    assert stats["detail_by_key"][new_key] == 1 and stats["detail_by_key"][old_key] == 2
    assert stats["detail_by_key"]["course-v1:NoOrg+Nope+1T2020"] == 1 and stats["status_404"] == 4


# --- list: filters ------------------------------------------------------------------------------


def test_keys_filter_order_and_plus_pitfall(server: StandinServer, api: requests.Session) -> None:
    keys = server.state.keys()
    wanted = [keys[250], keys[3], keys[120], keys[42]]
    asked = [*wanted, "course-v1:Unknown+X1x+1T2020"]
    resp = api.get(_runs_url(server, keys=",".join(asked), page_size=100))
    body = resp.json()
    assert body["count"] == 4
    assert [r["key"] for r in body["results"]] == sorted(wanted, key=str.lower)  # list order

    new_style = [k for k in wanted if "+" in k]
    raw = server.api_url + "course_runs/?keys=" + ",".join(new_style)  # raw "+" decodes to " "
    assert api.get(raw).json()["count"] == 0

    everything = api.get(_runs_url(server, keys="")).json()
    assert everything["count"] == N_RUNS


def test_hidden_filter(server: StandinServer, api: requests.Session) -> None:
    hidden = [r["key"] for r in server.state.runs() if r["hidden"]]
    assert hidden
    for value in ("0", "false"):
        assert api.get(_runs_url(server, hidden=value)).json()["count"] == N_RUNS - len(hidden)
    assert api.get(_runs_url(server)).json()["count"] == N_RUNS


def test_exclude_utm(server: StandinServer, api: requests.Session) -> None:
    key = next(r["key"] for r in server.state.runs() if r["marketing_url"])
    stored = server.state.get(key)
    assert stored is not None
    with_utm = api.get(_runs_url(server, keys=key)).json()["results"][0]["marketing_url"]
    assert with_utm.startswith(stored["marketing_url"] + "?utm_source=")
    assert "utm_medium=" in with_utm
    plain = api.get(_runs_url(server, keys=key, exclude_utm=1)).json()["results"][0]["marketing_url"]
    assert plain == stored["marketing_url"]
    assert api.get(_detail_url(server, key) + "?exclude_utm=1").json()["marketing_url"] == plain

    bad = api.get(_runs_url(server, keys=key, exclude_utm="true"))
    assert bad.status_code == 500 and bad.headers["Content-Type"].startswith("text/html")


# --- list: pagination ---------------------------------------------------------------------------


def test_first_page_ignores_page_size(server: StandinServer, api: requests.Session) -> None:
    keys = server.state.keys()
    first = api.get(_runs_url(server, page_size=100)).json()
    assert len(first["results"]) == 20  # limit/offset mode: page_size ignored
    assert first["count"] == N_RUNS and first["previous"] is None
    query = dict(parse_qsl(urlsplit(first["next"]).query))
    assert query == {"limit": "20", "offset": "20", "page_size": "100"}
    # The LMS's bug: asking next for page=2&page_size=100 silently skips items 21-100.
    second = api.get(_runs_url(server, page=2, page_size=100)).json()
    assert [r["key"] for r in second["results"]] == keys[100:200]


def test_page_number_mode_and_links(server: StandinServer, api: requests.Session) -> None:
    keys = server.state.keys()
    page2 = api.get(_runs_url(server, page_size=50, exclude_utm=1, page=2)).json()
    assert [r["key"] for r in page2["results"]] == keys[50:100]
    for link in (page2["next"], page2["previous"]):
        assert link.startswith(server.api_url + "course_runs/?")
        names = [name for name, _ in parse_qsl(urlsplit(link).query)]
        assert names == sorted(names)
    assert dict(parse_qsl(urlsplit(page2["next"]).query)) == {
        "exclude_utm": "1",
        "page": "3",
        "page_size": "50",
    }
    assert "page=" not in page2["previous"]  # DRF drops page=1 from the previous link

    last = api.get(_runs_url(server, page_size=50, page=6)).json()
    assert last["next"] is None and len(last["results"]) == 50
    limit_mode = api.get(_runs_url(server, limit=7, offset=14)).json()
    assert [r["key"] for r in limit_mode["results"]] == keys[14:21]

    for page in (7, 0, "abc"):
        resp = api.get(_runs_url(server, page_size=50, page=page))
        assert (resp.status_code, resp.json()) == (404, {"detail": "Invalid page."})
    empty = api.get(_runs_url(server, keys="course-v1:Unknown+X1x+1T2020", page=1))
    assert empty.status_code == 200 and empty.json()["results"] == []
    assert len(api.get(_runs_url(server, page=1, page_size=0)).json()["results"]) == 20
    assert api.get(_runs_url(server, page="last", page_size=50)).json()["next"] is None
    blank_page = api.get(_runs_url(server, page="", page_size=50)).json()  # blank page: limit/offset
    assert len(blank_page["results"]) == 20 and "offset=20" in blank_page["next"]


def test_insert_between_pages_breaks_naive_walk() -> None:
    with StandinServer(generate_runs(100, seed=3)) as srv, _session(srv) as api:
        before = set(srv.state.keys())
        srv.set_faults(insert_between_pages=5)
        seen: list[str] = []
        url: str | None = _runs_url(srv, page=1, page_size=20)
        while url:
            body = api.get(url).json()
            seen.extend(r["key"] for r in body["results"])
            url = body["next"]
        stats = srv.stats()
        assert stats["inserted"] == 5 * (stats["list"] - 1) > 0
        assert len(seen) > len(set(seen))  # repeats: inserted runs shifted later pages
        assert set(stats["inserted_keys"]) - set(seen)  # skips: runs added mid-walk never seen
        assert before <= set(seen)


def _walk(srv: StandinServer, api: requests.Session, page_size: int) -> tuple[list[str], int]:
    """Every key a page-number walk of the whole list sees, in order (repeats kept), following
    ``next``; and the last status: 404 ``Invalid page.`` when the list shrank under the walk so
    that the page ``next`` named no longer exists (as the catalog answers)."""
    seen: list[str] = []
    url: str | None = _runs_url(srv, page=1, page_size=page_size)
    status = 200
    while url:
        resp = api.get(url)
        status = resp.status_code
        if status != 200:
            break
        body = resp.json()
        seen.extend(r["key"] for r in body["results"])
        url = body["next"]
    return seen, status


def test_delete_between_pages_makes_a_walk_skip() -> None:
    with StandinServer(generate_runs(100, seed=3)) as srv, _session(srv) as api:
        control = srv.base_url + "_standin/"
        before = srv.state.keys()
        set_to = requests.post(control + "faults", json={"delete_between_pages": 5}, timeout=5).json()
        assert set_to["delete_between_pages"] == 5
        seen, last = _walk(srv, api, 20)
        stats = srv.stats()
        # 100, 95, 90, 85 runs at pages 1-4 (5 pages each), then 80: page 5 is gone (404).
        assert (stats["list"], len(stats["list_items"]), stats["status_404"], last) == (5, 4, 1, 404)
        assert stats["deleted"] == 5 * 4 == len(stats["deleted_keys"])
        seen_set = set(seen)
        assert len(seen) == len(seen_set) == 80  # no repeats
        # Each delete took the front of the list order: runs the walk had already passed.
        assert stats["deleted_keys"] == before[:20]
        assert set(stats["deleted_keys"]) <= seen_set
        # Each later page starts 5 runs further on per delete so far: those runs are never served
        # to the walk, though they stay in the catalog.
        skipped = [k for k in before if k not in seen_set]
        assert skipped == before[20:25] + before[45:50] + before[70:75] + before[95:100]
        assert not set(skipped) & set(stats["deleted_keys"])
        assert set(srv.state.keys()) == set(before) - set(stats["deleted_keys"])
        # The control route serves the state as it now is.
        runs = requests.get(control + "runs", timeout=5).json()
        assert runs["count"] == len(runs["runs"]) == len(before) - stats["deleted"]
        assert [r["key"] for r in runs["runs"]] == srv.state.keys()

        # A keys-filtered request (pages of a client's own keys) deletes nothing, even with a next page.
        srv.reset_stats()
        some = ",".join(srv.state.keys()[:30])
        assert api.get(_runs_url(srv, keys=some, page=1, page_size=10)).json()["next"]
        assert srv.stats()["deleted"] == 0


def test_equal_inserts_and_deletes_between_pages_cancel_in_the_shift() -> None:
    with StandinServer(generate_runs(100, seed=3)) as srv, _session(srv) as api:
        before = srv.state.keys()
        srv.set_faults(insert_between_pages=3, delete_between_pages=3)
        seen, last = _walk(srv, api, 20)
        stats = srv.stats()
        assert last == 200
        assert stats["inserted"] == stats["deleted"] == 3 * (stats["list"] - 1) > 0
        # Deletes come first: the first step takes 3 original runs (seen on page 1), later steps
        # the runs the step before inserted; nothing shifts, so every run is seen exactly once.
        assert stats["deleted_keys"][:3] == before[:3]
        assert stats["deleted_keys"][3:] == stats["inserted_keys"][:-3]
        assert seen == before


def test_throttle_is_per_user_not_per_token(server: StandinServer) -> None:
    """course-discovery's UserRateThrottle counts per user: two tokens of one client share a window."""
    server.set_faults(throttle_per_window=3, throttle_window_s=60)
    with _session(server) as first, _session(server) as second:
        assert first.headers["Authorization"] != second.headers["Authorization"]
        codes = [s.get(_runs_url(server)).status_code for s in (first, second, first, second)]
    assert codes == [200, 200, 200, 429]
    assert server.stats()["injected"]["throttled"] == 1


def test_latency_per_item_applies_to_list_pages(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(latency_per_item_ms=5)
    started = time.monotonic()
    body = api.get(_runs_url(server, page=1, page_size=60)).json()
    assert len(body["results"]) == 60
    assert time.monotonic() - started >= 60 * 0.005


def test_cli_fault_flags() -> None:
    from standin.__main__ import _parser

    args = _parser().parse_args(["--insert-between-pages", "3", "--delete-between-pages", "4"])
    assert (args.insert_between_pages, args.delete_between_pages) == (3, 4)


# --- faults -------------------------------------------------------------------------------------


def test_throttle_and_forced_429(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(throttle_per_window=3, throttle_window_s=60)
    assert [api.get(_runs_url(server)).status_code for _ in range(3)] == [200, 200, 200]
    resp = api.get(_runs_url(server))
    assert resp.status_code == 429
    wait = int(resp.headers["Retry-After"])
    assert 0 < wait <= 60
    assert resp.json() == {"detail": f"Request was throttled. Expected available in {wait} seconds."}

    server.reset_faults()
    server.set_faults(force_429_count=2, retry_after_s=1)
    codes = [api.get(_runs_url(server)) for _ in range(3)]
    assert [r.status_code for r in codes] == [429, 429, 200]
    assert codes[0].headers["Retry-After"] == "1"
    assert server.stats()["status_429"] == 3


def test_truncated_garbage_and_wrong_envelope(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(truncate_rate=1.0)
    resp = api.get(_runs_url(server), stream=True)
    assert resp.status_code == 200
    announced = int(resp.headers["Content-Length"])
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        resp.content  # noqa: B018 - reading the body is the point: it stops short of its length
    assert server.stats()["injected"]["truncated"] == 1 and announced > 0
    server.set_faults(truncate_rate=0.0, garbage_rate=1.0)
    for _ in range(3):
        resp = api.get(_runs_url(server))
        assert resp.status_code == 200
        with pytest.raises(ValueError):
            json.loads(resp.content)
    server.set_faults(garbage_rate=0.0, wrong_envelope=True)
    bare = api.get(_runs_url(server)).json()
    server.set_faults(wrong_envelope=False)
    # the same runs, as a bare array instead of the {"count", "next", "results"} envelope
    assert bare and bare == api.get(_runs_url(server)).json()["results"]


def test_errors_down_and_latency_config(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(error_rate=1.0)
    statuses = {api.get(_runs_url(server)).status_code for _ in range(10)}
    assert statuses <= {500, 502, 503} and statuses
    server.set_faults(error_rate=0.0, down=True)
    resp = api.get(_detail_url(server, server.state.keys()[0]))
    assert resp.status_code == 503 and "<html>" in resp.text
    assert server.stats()["status_5xx"] == 11
    # Faults never apply to the token route or the control routes.
    assert requests.get(server.base_url + "_standin/stats", timeout=5).status_code == 200
    assert _token(server)


def test_burst_limits_transport_faults_to_the_next_requests(
    server: StandinServer, api: requests.Session
) -> None:
    server.set_faults(error_rate=1.0, error_status=502, burst=3)
    assert [api.get(_runs_url(server)).status_code for _ in range(5)] == [502, 502, 502, 200, 200]
    server.set_faults(burst=1)  # setting faults starts a new burst
    assert [api.get(_runs_url(server)).status_code for _ in range(2)] == [502, 200]
    stats = server.stats()
    assert stats["injected"]["error"] == 4 and stats["status_5xx"] == 4
    with pytest.raises(ValueError):
        server.set_faults(error_status=404)


def test_drip_sends_headers_then_one_byte_at_a_time(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(drip_ms=20)
    started = time.monotonic()
    resp = api.get(_runs_url(server, page=1, page_size=1), stream=True)
    headers_after = time.monotonic() - started
    first = resp.raw.read1(1024)
    resp.close()
    assert resp.status_code == 200 and int(resp.headers["Content-Length"]) > 100
    assert headers_after < 0.5 and len(first) <= 2  # the headers at once, then a byte per 20 ms
    assert server.stats()["injected"]["drip"] == 1


@pytest.mark.parametrize("declared", [False, True])
def test_oversize_body_is_valid_json_of_the_asked_size(
    server: StandinServer, api: requests.Session, declared: bool
) -> None:
    server.set_faults(oversize_bytes=300_000, oversize_declared=declared)
    resp = api.get(_runs_url(server))
    assert resp.status_code == 200 and len(resp.content) == 300_000
    assert ("Content-Length" in resp.headers) is declared
    assert resp.json()["results"] == []
    assert server.stats()["injected"]["oversize"] == 1


def test_next_origin_and_dropped_connections(server: StandinServer, api: requests.Session) -> None:
    server.set_faults(next_origin="http://127.0.0.1:9")
    body = api.get(_runs_url(server, page=1, page_size=10)).json()
    assert body["next"].startswith("http://127.0.0.1:9/api/v1/course_runs/?") and "page=2" in body["next"]
    with pytest.raises(ValueError):
        server.set_faults(next_origin="http://127.0.0.1:9/path")
    server.reset_faults()
    server.set_faults(drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        api.get(_runs_url(server))
    assert server.stats()["injected"]["dropped"] == 1


def test_tokens_expire_after_n_requests_and_pages_can_be_capped(
    server: StandinServer, api: requests.Session
) -> None:
    server.set_faults(expire_tokens_after=3, max_page_size=7)
    first = api.get(_runs_url(server, page=1, page_size=50))
    assert first.status_code == 200 and len(first.json()["results"]) == 7
    assert "page=2" in first.json()["next"] and "page_size=50" in first.json()["next"]
    assert server.faults.expire_tokens_after == 2
    assert api.get(_runs_url(server, page=2, page_size=50)).status_code == 200
    expired = api.get(_runs_url(server, page=3, page_size=50))
    assert expired.status_code == 401 and expired.json() == {"detail": "Token has expired."}
    assert server.faults.expire_tokens_after == 0
    with _session(server) as fresh:  # a new token works: the fault was one-shot
        assert fresh.get(_runs_url(server, page=3, page_size=50)).status_code == 200


def test_a_stopped_server_refuses_and_restarts_on_its_port() -> None:
    with StandinServer(generate_runs(5, seed=2)) as srv:
        port = srv.port
        srv.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/_standin/health", timeout=2)
        srv.start()
        assert srv.port == port
        assert requests.get(srv.base_url + "_standin/health", timeout=2).json()["count"] == 5


def test_hostile_values(server: StandinServer, api: requests.Session) -> None:
    keys = server.state.keys()[:40]
    server.set_faults(hostile_keys=keys[:10])
    results = api.get(_runs_url(server, limit=40, exclude_utm=1)).json()["results"]
    variants = set()
    for run in results[:10]:
        variant = hostile_variant(run["key"])
        variants.add(variant)
        if variant == "marketing_url_javascript":
            assert run["marketing_url"] == "javascript:alert(1)"
        elif variant == "marketing_url_huge":
            assert len(run["marketing_url"]) == 5000
        elif variant == "marketing_url_int":
            assert run["marketing_url"] == 12345
        elif variant == "financial_aid_string":
            assert run["eligible_for_financial_aid"] == "yes"
        else:
            assert run["content_language"] == ["en", "fr"]
    assert len(variants) > 1 and variants <= set(HOSTILE_VARIANTS)
    assert results[10:] == [server.state.get(k) for k in keys[10:]]  # stored without UTM, served so

    server.set_faults(hostile_keys=[], hostile_rate=0.5)
    served = api.get(_runs_url(server, limit=N_RUNS, exclude_utm=1)).json()["results"]
    changed = sum(run != server.state.get(run["key"]) for run in served)
    assert 0.3 * N_RUNS < changed < 0.7 * N_RUNS


def test_control_routes() -> None:
    with StandinServer(generate_runs(30, seed=5)) as srv, _session(srv) as api:
        control = srv.base_url + "_standin/"
        faults = requests.post(control + "faults", json={"latency_ms": 1, "hostile_keys": ["x"]}, timeout=5)
        assert faults.json()["latency_ms"] == 1 and faults.json()["hostile_keys"] == ["x"]
        assert requests.post(control + "faults", json={"nope": 1}, timeout=5).status_code == 400
        assert requests.post(control + "faults/reset", timeout=5).json()["latency_ms"] == 0

        doomed = srv.state.keys()[0]
        new = make_run("course-v1:edX+NEW1x+1T2026")
        body = {"upsert": [new], "delete": [doomed]}
        result = requests.post(control + "runs", json=body, timeout=5).json()
        assert result == {"created": 1, "updated": 0, "deleted": 1, "count": 30}
        assert api.get(_detail_url(srv, new["key"])).json()["title"] == new["title"]
        assert api.get(_detail_url(srv, doomed)).status_code == 404

        stats = requests.get(control + "stats", timeout=5).json()
        assert (stats["detail"], stats["status_404"], stats["token"]) == (2, 1, 1)
        assert requests.post(control + "stats/reset", timeout=5).json()["requests"] == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(control + "stats", timeout=2)  # a stopped server is gone


# --- data ---------------------------------------------------------------------------------------


def test_generator_determinism_uniqueness_and_lengths() -> None:
    runs = generate_runs(2000, seed=11)
    assert runs == generate_runs(2000, seed=11)
    assert runs[:500] == generate_runs(500, seed=11)
    assert runs != generate_runs(2000, seed=12)
    keys = [r["key"] for r in runs]
    assert len({k.lower() for k in keys}) == len(keys)
    assert sum(map(len, keys)) / len(keys) <= 30 and max(map(len, keys)) <= 40
    old = sum("/" in k for k in keys) / len(keys)
    assert 0.06 < old < 0.18
    assert 0.05 < sum(r["marketing_url"] is None for r in runs) / len(runs) < 0.15
    assert 0.005 < sum(r["hidden"] for r in runs) / len(runs) < 0.06
    assert all(r["modified"].endswith("Z") and "." in r["modified"] for r in runs)
    assert {r["pacing_type"] for r in runs} == {"instructor_paced", "self_paced"}


def test_lms_course_records() -> None:
    runs = generate_runs(500, seed=2)
    records = lms_course_records(runs, ccx_every=50, ccx_per_master=2, lms_only=7)
    run_keys = {r["key"] for r in runs}
    ccx = [r for r in records if r["id"].startswith("ccx-v1:")]
    new_style = sum(k.startswith("course-v1:") for k in run_keys)
    assert len(ccx) == 2 * -(-new_style // 50)
    extra = [r for r in records if r["id"] not in run_keys and not r["id"].startswith("ccx-v1:")]
    assert len(extra) == 7
    assert len(records) == len(runs) + len(ccx) + 7
    assert len({r["id"] for r in records}) == len(records)
    master_key = ccx[0]["id"].split("+ccx@")[0].replace("ccx-v1:", "course-v1:")
    master = next(r for r in runs if r["key"] == master_key)
    assert (ccx[0]["org"], ccx[0]["number"]) == tuple(master["course"].split("+"))
    assert set(records[0]) == {"id", "display_name", "org", "number", "run", "start", "end", "self_paced"}


def test_keys_filter_on_100k_runs() -> None:
    runs = generate_runs(100_000, seed=1)
    with StandinServer(runs) as srv, _session(srv) as api:
        wanted = random.Random(0).sample([r["key"] for r in runs], 100)
        url = _runs_url(srv, keys=",".join(wanted), page_size=100, page=1, exclude_utm=1)
        assert len(url) < 4096
        body = api.get(url).json()
        assert body["count"] == 100 and len(body["results"]) == 100
        assert api.get(_runs_url(srv, limit=100, offset=99_950)).json()["count"] == 100_000
