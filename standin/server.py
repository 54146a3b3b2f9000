"""A faithful stand-in for the catalog (course-discovery) course-runs API, served over real HTTP.

Stdlib only. What the catalog answers (ordering, filters, pagination, the envelope, error bodies)
is stated once in ``standin.semantics``, which the test fakes use too; this module adds the HTTP
server, the state (runs, tokens, throttle windows, counters) and the faults. Routes:

- ``POST /oauth2/access_token`` (form: grant_type=client_credentials, client_id, client_secret,
  token_type=jwt);
- ``GET /api/v1/course_runs/`` and ``GET /api/v1/course_runs/<url-encoded key>/`` (``Authorization: JWT``);
- unauthenticated control routes, never subject to faults: ``GET|POST /_standin/faults`` (JSON body sets
  fields, answers the current faults), ``POST /_standin/faults/reset``, ``POST /_standin/tokens/expire``,
  ``GET /_standin/stats``, ``POST /_standin/stats/reset``, ``POST /_standin/runs`` (JSON
  ``{"upsert": [run, ...], "delete": [key, ...]}``), ``GET /_standin/runs`` (every run as stored,
  in list order, no tracking parameters: ``{"count": n, "runs": [...]}``), ``GET /_standin/health``.

Faults (``Faults``; set with ``set_faults(...)`` or ``POST /_standin/faults``; all off by default,
checked on the API routes only, never on the token or control routes):

- ``down``: every API request answers an nginx 503 page.
- ``error_rate``: that share of API requests answers 500/502/503 (``error_status`` picks one).
  With ``burst=N`` and ``error_rate=1``: the next N requests fail, then the catalog recovers.
- ``latency_ms``: sleep before answering (beyond a client's read timeout: a read timeout);
  ``latency_per_item_ms``: sleep per run served (a slow catalog, not a fault).
- ``drip_ms``: headers at once, then the body one byte every ``drip_ms`` (dodges a per-read timeout).
- ``oversize_bytes``: a 200 whose JSON body is this large, generated while it is sent (the
  stand-in never holds it); no ``Content-Length`` unless ``oversize_declared``.
- ``truncate_rate``: the full ``Content-Length`` announced, half the body sent, connection closed.
- ``garbage_rate``: a 200 whose body is not JSON; ``wrong_envelope``: the list as a bare array.
- ``drop_connection``: the connection closed without an answer.
- ``next_origin``: list answers' ``next`` links point at this origin (``http://host:port``).
- ``force_429_count`` (with ``retry_after_s``): the next N API requests answer 429;
  ``throttle_per_window``/``throttle_window_s``: course-discovery's per-user throttle.
- ``token_ttl``: lifetime of new tokens; ``expire_tokens_now``: expire every issued token now
  (one-shot), so the next API request is a 401 ``Token has expired.``; ``expire_tokens_after=N``:
  the same, done by the Nth API request from now (a token expiring mid-sweep); reads back the
  requests left.
- ``max_page_size``: page-number mode serves at most this many runs a page (a catalog deployed
  with a cap): a client asking for more must follow ``next``.
- ``hostile_keys``/``hostile_rate``: serve those runs with hostile values (``data.hostilize``).
- ``insert_between_pages``: runs sorting before every other are inserted between page requests
  (after a list page that has a next one, and after any ``keys``-filtered request): a page walk
  *repeats* runs (the ones shifted onto the next page). Stats: ``inserted``, ``inserted_keys``.
- ``delete_between_pages``: after a list page that has a next one (no ``keys`` filter), that many
  runs are deleted from the *front* of the list order (the keys sorting first, which the walk has
  already passed): a page walk *skips* runs (the ones shifted onto the page it has read). Deletes
  come before the inserts of the same step, so with both set the inserted runs of one step are the
  first deleted at the next; equal numbers cancel in the shift (no skip, no repeat), more deletes
  than inserts make a walk skip the difference per page. Stats: ``deleted``, ``deleted_keys``.
- ``burst``: when positive, the transport faults above (down, error_rate, latency_ms, drip_ms,
  oversize_bytes, truncate_rate, garbage_rate, wrong_envelope, drop_connection, next_origin)
  apply to the next ``burst`` API requests only, counted from the last ``set_faults``.

A stopped server refuses connections; ``start()`` again binds the same port (a restart).
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import dataclasses
import json
import logging
import random
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from . import semantics
from .data import early_key, hostilize, make_run

__all__ = ["CatalogState", "Faults", "StandinServer"]

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "standin-client"
DEFAULT_CLIENT_SECRET = "standin-secret"  # noqa: S105 - a public test credential
DEFAULT_PAGE_SIZE = semantics.DEFAULT_PAGE_SIZE

API_PREFIX = "/api/v1/"
RUNS_PATH = API_PREFIX + "course_runs/"
OAUTH_PATH = "/oauth2/access_token"
CONTROL_PREFIX = "/_standin/"


@dataclass
class Faults:
    """Switchable misbehaviour, all off by default. Checked on the API routes (list/detail) only.

    ``expire_tokens_now`` is one-shot: setting it true expires every issued token and it reads back
    false. ``seed`` reseeds the random generator behind the ``*_rate`` faults whenever faults are set.
    """

    latency_ms: float = 0.0
    latency_per_item_ms: float = 0.0
    error_rate: float = 0.0
    down: bool = False
    throttle_per_window: int = 0
    throttle_window_s: float = 3600.0
    force_429_count: int = 0
    retry_after_s: int = 1
    token_ttl: float = 36000.0
    expire_tokens_now: bool = False
    insert_between_pages: int = 0
    delete_between_pages: int = 0
    truncate_rate: float = 0.0
    garbage_rate: float = 0.0
    wrong_envelope: bool = False
    hostile_rate: float = 0.0
    hostile_keys: frozenset[str] = field(default_factory=frozenset)
    seed: int = 1
    error_status: int = 0
    drip_ms: float = 0.0
    oversize_bytes: int = 0
    oversize_declared: bool = False
    drop_connection: bool = False
    next_origin: str = ""
    burst: int = 0
    expire_tokens_after: int = 0
    max_page_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``hostile_keys`` as a sorted list)."""
        out = dataclasses.asdict(self)
        out["hostile_keys"] = sorted(self.hostile_keys)
        return out


_FAULT_FIELDS = {f.name: f for f in dataclasses.fields(Faults)}
# The faults ``burst`` limits to the next N API requests: how a request is answered, not the data.
_TRANSPORT_FAULTS = {
    "down": False,
    "error_rate": 0.0,
    "latency_ms": 0.0,
    "drip_ms": 0.0,
    "oversize_bytes": 0,
    "truncate_rate": 0.0,
    "garbage_rate": 0.0,
    "wrong_envelope": False,
    "drop_connection": False,
    "next_origin": "",
}


def _coerce_fault(name: str, value: Any) -> Any:
    if name not in _FAULT_FIELDS:
        raise ValueError(f"unknown fault: {name!r}")
    if name == "hostile_keys":
        if isinstance(value, str):
            raise ValueError("hostile_keys must be a list of keys")
        return frozenset(str(k) for k in (value or ()))
    if name == "error_status" and value and not 500 <= int(value) <= 599:
        raise ValueError("error_status must be a 5xx status")
    kind = _FAULT_FIELDS[name].type
    if kind == "bool":
        if not isinstance(value, bool | int):
            raise ValueError(f"{name} must be a boolean")
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if name == "next_origin":
        value = str(value or "").rstrip("/")
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
            raise ValueError("next_origin must be an origin like http://127.0.0.1:8766")
        return value
    return value


def _empty_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "token": 0,
        "list": 0,
        "detail": 0,
        "other": 0,
        "status_200": 0,
        "status_401": 0,
        "status_404": 0,
        "status_429": 0,
        "status_5xx": 0,
        "detail_by_key": {},
        "keys_requested": {},
        "answers": [],  # [arrival unix time, route, status] per request, for ordering assertions
        "list_items": [],
        "list_items_total": 0,
        "inserted": 0,
        "inserted_keys": [],
        "deleted": 0,
        "deleted_keys": [],
        "injected": {
            "down": 0,
            "error": 0,
            "forced_429": 0,
            "throttled": 0,
            "truncated": 0,
            "garbage": 0,
            "wrong_envelope": 0,
            "hostile": 0,
            "drip": 0,
            "oversize": 0,
            "dropped": 0,
            "off_origin": 0,
        },
    }


class CatalogState:
    """Thread-safe in-memory catalog: runs (by key, and in ``lower(key)`` order), tokens, faults, stats."""

    def __init__(
        self,
        runs: Iterable[Mapping[str, Any]] = (),
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        faults: Faults | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.client_id = client_id
        self.client_secret = client_secret
        self._runs: dict[str, dict[str, Any]] = {}
        self._order: list[tuple[str, str]] = []
        self._visible: list[tuple[str, str]] | None = None
        for run in runs:
            self._runs[str(run["key"])] = dict(run)
        self._order = sorted(semantics.sort_key(k) for k in self._runs)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._faults = faults or Faults()
        self._rng = random.Random(self._faults.seed)
        self._burst_used = 0
        self._windows: dict[str, collections.deque[float]] = {}
        self._stats = _empty_stats()
        self._insert_seq = 0

    # --- runs -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self.lock:
            return len(self._runs)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored run for ``key`` (exact match), or None."""
        with self.lock:
            return self._runs.get(key)

    def keys(self) -> list[str]:
        """All keys, in list order."""
        with self.lock:
            return [k for _, k in self._order]

    def runs(self) -> list[dict[str, Any]]:
        """All runs, in list order."""
        with self.lock:
            return [self._runs[k] for _, k in self._order]

    def upsert(self, run: Mapping[str, Any]) -> bool:
        """Insert or replace a run (stored as a copy); True when it was new."""
        key = str(run["key"])
        stored = dict(run)
        with self.lock:
            old = self._runs.get(key)
            self._runs[key] = stored
            if old is None:
                bisect.insort(self._order, semantics.sort_key(key))
            self._sync_visible(key, old is not None and not old.get("hidden"), not stored.get("hidden"))
            return old is None

    def _sync_visible(self, key: str, was_visible: bool, is_visible: bool) -> None:
        """Keep the cached not-hidden list in step with one run's change (lock held)."""
        if self._visible is None or was_visible == is_visible:
            return
        sk = semantics.sort_key(key)
        if is_visible:
            bisect.insort(self._visible, sk)
            return
        i = bisect.bisect_left(self._visible, sk)
        if i < len(self._visible) and self._visible[i] == sk:
            del self._visible[i]

    def upsert_many(self, runs: Iterable[Mapping[str, Any]]) -> int:
        """Upsert each run; returns how many were new."""
        with self.lock:
            return sum(self.upsert(r) for r in runs)

    def update(self, key: str, **fields: Any) -> dict[str, Any]:
        """Change some fields of an existing run (KeyError if unknown); returns the new run."""
        with self.lock:
            run = {**self._runs[key], **fields, "key": key}
            self.upsert(run)
            return run

    def delete(self, key: str) -> bool:
        """Remove a run; True when it existed."""
        with self.lock:
            old = self._runs.pop(key, None)
            if old is None:
                return False
            sk = semantics.sort_key(key)
            i = bisect.bisect_left(self._order, sk)
            if i < len(self._order) and self._order[i] == sk:
                del self._order[i]
            self._sync_visible(key, not old.get("hidden"), False)
            return True

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete each key; returns how many existed."""
        with self.lock:
            return sum(self.delete(k) for k in keys)

    def insert_early(self, n: int) -> list[str]:
        """Insert ``n`` new runs whose keys sort before every other key; returns their keys."""
        added: list[str] = []
        with self.lock:
            while len(added) < n:
                self._insert_seq += 1
                key = early_key(self._insert_seq)
                if key in self._runs:
                    continue
                self.upsert(make_run(key, seed=self._insert_seq))
                added.append(key)
            self._stats["inserted"] += len(added)
            self._stats["inserted_keys"].extend(added)
        return added

    def delete_front(self, n: int) -> list[str]:
        """Delete the ``n`` runs first in list order (hidden ones included); returns their keys."""
        with self.lock:
            doomed = [k for _, k in self._order[: max(0, n)]]
            for key in doomed:
                self.delete(key)
            self._stats["deleted"] += len(doomed)
            self._stats["deleted_keys"].extend(doomed)
        return doomed

    def select(self, keys: list[str] | None, exclude_hidden: bool) -> list[tuple[str, str]]:
        """The (sort key, key) entries a list request covers, in list order."""
        with self.lock:
            if keys is not None:
                chosen = semantics.select(self._runs, keys, exclude_hidden)
                return [semantics.sort_key(run["key"]) for run in chosen]
            if not exclude_hidden:
                return self._order
            if self._visible is None:
                self._visible = [e for e in self._order if not self._runs[e[1]].get("hidden")]
            return self._visible

    def page(self, entries: list[tuple[str, str]], start: int, stop: int) -> list[dict[str, Any]]:
        """The runs for ``entries[start:stop]`` (runs are replaced, never mutated, so no copy needed)."""
        with self.lock:
            return [self._runs[k] for _, k in entries[start:stop] if k in self._runs]

    # --- tokens -----------------------------------------------------------------------------------

    def check_client(self, client_id: str, client_secret: str) -> bool:
        """Whether the OAuth client credentials are the configured ones."""
        return secrets.compare_digest(client_id, self.client_id) and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def issue_token(self, client_id: str) -> tuple[str, int]:
        """A new JWT-looking access token for ``client_id`` and its lifetime in seconds."""
        with self.lock:
            ttl = self._faults.token_ttl
        now = time.time()

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64(
            json.dumps(
                {
                    "iss": "http://127.0.0.1/oauth2",
                    "sub": client_id,
                    "scopes": ["read", "write"],
                    "iat": int(now),
                    "exp": int(now + ttl),
                    "jti": secrets.token_hex(8),
                }
            ).encode()
        )
        token = f"{header}.{payload}.{b64(secrets.token_bytes(32))}"
        with self.lock:
            self._tokens[token] = (client_id, time.monotonic() + ttl)
        return token, int(ttl)

    def token_status(self, token: str) -> tuple[str, str | None]:
        """``("ok", client)``, ``("expired", client)`` or ``("invalid", None)``."""
        with self.lock:
            entry = self._tokens.get(token)
        if entry is None:
            return "invalid", None
        client, expires = entry
        return ("ok" if time.monotonic() < expires else "expired"), client

    def expire_all_tokens(self) -> int:
        """Make every issued token expired (not unknown); returns how many."""
        with self.lock:
            past = time.monotonic() - 1
            for token, (client, _) in self._tokens.items():
                self._tokens[token] = (client, past)
            return len(self._tokens)

    # --- faults -----------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """A copy of the current fault configuration."""
        with self.lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Change the given fault fields (ValueError on unknown ones); returns the new configuration."""
        coerced = {name: _coerce_fault(name, value) for name, value in changes.items()}
        expire = coerced.pop("expire_tokens_now", False)
        with self.lock:
            self._faults = dataclasses.replace(self._faults, **coerced)
            self._rng = random.Random(self._faults.seed)
            self._burst_used = 0
            if "throttle_per_window" in coerced or "throttle_window_s" in coerced:
                self._windows.clear()
            if expire:
                self.expire_all_tokens()
            return dataclasses.replace(self._faults)

    def reset_faults(self) -> Faults:
        """Back to no faults at all."""
        with self.lock:
            self._faults = Faults()
            self._rng = random.Random(self._faults.seed)
            self._burst_used = 0
            self._windows.clear()
            return dataclasses.replace(self._faults)

    def request_faults(self) -> Faults:
        """The faults one API request meets: all of them, or, past a ``burst``, none of the
        transport ones (the data faults -- hostile runs, inserts, throttles, tokens -- stay)."""
        with self.lock:
            faults = dataclasses.replace(self._faults)
            if faults.burst <= 0:
                return faults
            self._burst_used += 1
            if self._burst_used <= faults.burst:
                return faults
        return dataclasses.replace(faults, **_TRANSPORT_FAULTS)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate``, from the seeded generator."""
        if rate <= 0:
            return False
        with self.lock:
            return self._rng.random() < rate

    def choose(self, options: tuple[Any, ...]) -> Any:
        """A seeded choice among ``options``."""
        with self.lock:
            return options[int(self._rng.random() * len(options))]

    def tick_token_expiry(self) -> None:
        """Count one API request towards ``expire_tokens_after``; the Nth expires every token."""
        with self.lock:
            if self._faults.expire_tokens_after <= 0:
                return
            self._faults.expire_tokens_after -= 1
            if self._faults.expire_tokens_after == 0:
                self.expire_all_tokens()

    def take_forced_429(self) -> bool:
        """Consume one of ``force_429_count``; True if this request must get a 429."""
        with self.lock:
            if self._faults.force_429_count <= 0:
                return False
            self._faults.force_429_count -= 1
            return True

    def throttle_wait(self, client: str) -> float | None:
        """Sliding-window throttle: None if allowed (and recorded), else seconds until a slot frees."""
        with self.lock:
            limit = self._faults.throttle_per_window
            if limit <= 0:
                return None
            window = self._faults.throttle_window_s
            now = time.monotonic()
            history = self._windows.setdefault(client, collections.deque())
            while history and history[0] <= now - window:
                history.popleft()
            if len(history) >= limit:
                return max(0.0, history[0] + window - now)
            history.append(now)
            return None

    def is_hostile(self, key: str) -> bool:
        """Whether ``key`` is served hostile: in ``hostile_keys``, or a stable hash under ``hostile_rate``."""
        with self.lock:
            faults = self._faults
        if key in faults.hostile_keys:
            return True
        if faults.hostile_rate <= 0:
            return False
        return (zlib.crc32(f"hostile:{key}".encode()) % 10_000) < faults.hostile_rate * 10_000

    # --- stats ------------------------------------------------------------------------------------

    def count_keys_requested(self, keys: list[str]) -> None:
        """Count how often each key was asked for with the list's ``keys`` filter."""
        with self.lock:
            counts = self._stats["keys_requested"]
            for key in keys:
                counts[key] = counts.get(key, 0) + 1

    def record(
        self,
        route: str,
        status: int,
        *,
        key: str | None = None,
        items: int | None = None,
        arrived: float | None = None,
    ) -> None:
        """Count one non-control request."""
        with self.lock:
            s = self._stats
            s["requests"] += 1
            s[route] += 1
            s["answers"].append([round(arrived or time.time(), 3), route, status])
            if status == 200:
                s["status_200"] += 1
            elif status in (401, 404, 429):
                s[f"status_{status}"] += 1
            elif status >= 500:
                s["status_5xx"] += 1
            if key is not None:
                s["detail_by_key"][key] = s["detail_by_key"].get(key, 0) + 1
            if items is not None:
                s["list_items"].append(items)
                s["list_items_total"] += items

    def injected(self, kind: str, n: int = 1) -> None:
        """Count an injected fault."""
        with self.lock:
            self._stats["injected"][kind] += n

    def stats(self) -> dict[str, Any]:
        """A deep copy of the counters."""
        with self.lock:
            return json.loads(json.dumps(self._stats))

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self.lock:
            self._stats = _empty_stats()


class _Reply(semantics.Answer):
    """An answer and how its body goes out (``delivery``): ``""`` at once, ``"drip"`` a byte
    every ``drip_s``, ``"truncate"`` half of it then the connection closed, ``"oversize"``
    ``oversize`` generated bytes, ``"drop"`` no answer at all."""

    def __init__(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, body, content_type, headers)
        self.delivery = ""
        self.drip_s = 0.0
        self.oversize = 0
        self.declared = False


def _reply(answer: semantics.Answer) -> _Reply:
    """``answer`` to be sent at once."""
    if isinstance(answer, _Reply):
        return answer
    return _Reply(answer.status, answer.body, answer.content_type, answer.headers)


def _json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _reply(semantics.json_answer(status, obj, headers))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin-catalog/1.0"
    timeout = 120  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Request logging is off."""

    def version_string(self) -> str:
        return self.server_version

    # --- plumbing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def state(self) -> CatalogState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: _Reply) -> None:
        if reply.delivery == "drop":
            self.close_connection = True
            return
        if reply.delivery == "oversize":
            self._send_oversize(reply)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.delivery == "drip":
            self.end_headers()
            stopping = self.server.stopping
            for i in range(len(reply.body)):
                if stopping.wait(reply.drip_s):
                    break
                self.wfile.write(reply.body[i : i + 1])
            self.close_connection = True
            return
        if reply.delivery == "truncate":
            self.end_headers()
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.close_connection = True  # short of its Content-Length: the client sees the cut
            return
        # Headers and body in one write: separate small writes would meet delayed ACKs (~40 ms each).
        self._headers_buffer.append(b"\r\n" + reply.body)
        self.flush_headers()

    def _send_oversize(self, reply: _Reply) -> None:
        """A valid JSON page of ``reply.oversize`` bytes, written a block at a time."""
        head = b'{"count":0,"next":null,"previous":null,"results":[],"padding":"'
        tail = b'"}'
        padding = max(0, reply.oversize - len(head) - len(tail))
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        if reply.declared:
            self.send_header("Content-Length", str(len(head) + padding + len(tail)))
        else:
            self.send_header("Connection", "close")  # the body ends when the connection does
        self.end_headers()
        self.close_connection = True
        self.wfile.write(head)
        block = b"x" * 65536
        stopping = self.server.stopping
        while padding > 0 and not stopping.is_set():
            piece = block if padding >= len(block) else block[:padding]
            self.wfile.write(piece)
            padding -= len(piece)
        self.wfile.write(tail)

    def _dispatch(self, method: str) -> None:
        arrived = time.time()
        split = urlsplit(self.path)
        path, query = split.path, split.query
        route = "other"
        key: str | None = None
        items: int | None = None
        try:
            # The body must be read even when unused, or it would corrupt the next keep-alive request.
            body = self._body()
            if path.startswith(CONTROL_PREFIX):
                route = "control"
                reply = self._control(method, path, body)
            elif path.rstrip("/") == OAUTH_PATH:
                route = "token"
                reply = self._token(method, body)
            elif path.startswith(RUNS_PATH) and path.endswith("/"):
                raw = path[len(RUNS_PATH) : -1]
                route = "list" if raw == "" else "detail"
                if route == "detail":
                    try:
                        key = semantics.detail_key(raw)
                    except semantics.Answer:
                        route = "other"
                        raise
                reply, items = self._api(method, route, key, query)
            else:
                raise semantics.not_found_page()
        except semantics.Answer as early:
            reply = _reply(early)
        except Exception:
            log.exception("stand-in catalog failed on %s %s", method, self.path)
            reply = _reply(semantics.server_error())
        if route != "control":
            self.state.record(
                route, reply.status, key=key, items=items if reply.status == 200 else None, arrived=arrived
            )
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- routes -----------------------------------------------------------------------------------

    def _token(self, method: str, body: bytes) -> _Reply:
        if method != "POST":
            return _reply(semantics.method_not_allowed(method))
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id = form.get("client_id", "")
        client_secret = form.get("client_secret", "")
        basic = self.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip()).decode("utf-8")
                client_id, _, client_secret = decoded.partition(":")
            except ValueError:
                pass
        if form.get("grant_type") != "client_credentials" or not self.state.check_client(
            client_id, client_secret
        ):
            return _json_reply(401, {"error": "invalid_client"})
        if form.get("token_type", "").lower() != "jwt":
            # An opaque Bearer token: the catalog's JWT authentication will not accept it.
            return _json_reply(
                200,
                semantics.token_body(secrets.token_urlsafe(24), 36000, token_type="Bearer"),  # noqa: S106
            )
        token, ttl = self.state.issue_token(client_id)
        return _json_reply(200, semantics.token_body(token, ttl))

    def _authenticate(self) -> str:
        """The client behind the request's JWT; raises a 401 reply otherwise."""
        header = self.headers.get("Authorization", "").strip()
        if not header:
            raise semantics.unauthorized(semantics.NO_CREDENTIALS)
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "jwt":
            raise semantics.unauthorized(semantics.DECODE_ERROR)
        status, client = self.state.token_status(parts[1])
        if status == "expired":
            raise semantics.unauthorized(semantics.TOKEN_EXPIRED)
        if status != "ok" or client is None:
            raise semantics.unauthorized(semantics.INVALID_TOKEN)
        return client

    def _api(self, method: str, route: str, key: str | None, query: str) -> tuple[_Reply, int | None]:
        state = self.state
        faults = state.request_faults()
        if faults.drop_connection:
            state.injected("dropped")
            reply = _Reply(0, b"", "")
            reply.delivery = "drop"
            raise reply
        if faults.down:
            state.injected("down")
            raise semantics.html_answer(503, semantics.gateway_html(503))
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)
        if state.roll(faults.error_rate):
            state.injected("error")
            status = faults.error_status or state.choose((500, 502, 503))
            raise (
                semantics.server_error()
                if status == 500
                else semantics.html_answer(status, semantics.gateway_html(status))
            )
        if state.take_forced_429():
            state.injected("forced_429")
            raise semantics.throttled(faults.retry_after_s)
        state.tick_token_expiry()
        client = self._authenticate()
        wait = state.throttle_wait(client)
        if wait is not None:
            state.injected("throttled")
            raise semantics.throttled(wait)
        if method != "GET":
            raise semantics.method_not_allowed(method)

        params = semantics.query_params(query)
        if route == "detail":
            assert key is not None
            body: Any = self._hostile(semantics.detail_body(state.get(key), params, client=client))
            items = 1
        else:
            body, has_next = self._list(params, client)
            items = len(body["results"])
            if faults.next_origin and body["next"]:
                state.injected("off_origin")
                parts = urlsplit(body["next"])
                origin = urlsplit(faults.next_origin)
                body["next"] = urlunsplit((origin.scheme, origin.netloc, *parts[2:]))
            if faults.wrong_envelope:
                state.injected("wrong_envelope")
                body = body["results"]
            if keys_asked := params.get("keys"):
                state.count_keys_requested(keys_asked.split(","))
            # Between page requests the live table changes: after a page that has a next one, or
            # after any keys-filtered request (a client that walks pages of its own keys). Deletes
            # (from the front, runs a walk has passed) only after a page of the unfiltered list.
            if has_next and not params.get("keys") and faults.delete_between_pages > 0:
                state.delete_front(faults.delete_between_pages)
            if (has_next or params.get("keys")) and faults.insert_between_pages > 0:
                state.insert_early(faults.insert_between_pages)
        if faults.latency_per_item_ms > 0 and items:
            time.sleep(faults.latency_per_item_ms * items / 1000)
        if faults.oversize_bytes > 0:
            state.injected("oversize")
            reply = _Reply(200, b"", "application/json")
            reply.delivery, reply.oversize, reply.declared = (
                "oversize",
                faults.oversize_bytes,
                faults.oversize_declared,
            )
            return reply, items
        raw = semantics.json_bytes(body)
        delivery = ""
        if state.roll(faults.truncate_rate):
            state.injected("truncated")
            delivery = "truncate"
        elif state.roll(faults.garbage_rate):
            state.injected("garbage")
            raw = state.choose((b"", b"<html><body>Upstream garbage</body></html>", b"\x00\xff not json"))
        if not delivery and faults.drip_ms > 0:
            state.injected("drip")
            delivery = "drip"
        reply = _Reply(200, raw, "application/json")
        reply.delivery, reply.drip_s = delivery, faults.drip_ms / 1000
        return reply, items

    def _hostile(self, run: Mapping[str, Any]) -> Mapping[str, Any]:
        """``run`` as served under the ``hostile_*`` faults."""
        if not self.state.is_hostile(str(run.get("key"))):
            return run
        self.state.injected("hostile")
        return hostilize(run)

    def _absolute_url(self) -> str:
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        return f"http://{host}{self.path}"

    def _list(self, params: Mapping[str, str], client: str) -> tuple[dict[str, Any], bool]:
        """``semantics.list_body`` over the state's cached list order (a sweep of 100k runs must
        not sort the catalog for every page), with the ``max_page_size`` fault."""
        state = self.state
        entries = state.select(semantics.keys_filter(params), semantics.excludes_hidden(params))
        count = len(entries)
        window = semantics.paginate(
            self._absolute_url(), params, count, max_page_size=state.faults.max_page_size
        )
        strip = semantics.exclude_utm(params)
        results = [
            self._hostile(semantics.serialize(run, exclude_utm=strip, client=client))
            for run in state.page(entries, window.start, window.stop)
        ]
        return semantics.envelope(count, window, results), window.next_url is not None

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        state = self.state
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return _json_reply(400, {"error": "body is not JSON"})
        if not isinstance(data, dict):
            return _json_reply(400, {"error": "body must be a JSON object"})
        try:
            if path == CONTROL_PREFIX + "faults":
                if method == "POST":
                    state.set_faults(**data)
                return _json_reply(200, state.faults.to_dict())
            if path == CONTROL_PREFIX + "faults/reset" and method == "POST":
                return _json_reply(200, state.reset_faults().to_dict())
            if path == CONTROL_PREFIX + "tokens/expire" and method == "POST":
                return _json_reply(200, {"expired": state.expire_all_tokens()})
            if path == CONTROL_PREFIX + "stats" and method == "GET":
                return _json_reply(200, state.stats())
            if path == CONTROL_PREFIX + "stats/reset" and method == "POST":
                state.reset_stats()
                return _json_reply(200, state.stats())
            if path == CONTROL_PREFIX + "runs" and method == "POST":
                upserts = data.get("upsert") or []
                deletes = data.get("delete") or []
                with state.lock:
                    created = state.upsert_many(upserts)
                    deleted = state.delete_many(str(k) for k in deletes)
                    total = len(state)
                return _json_reply(
                    200,
                    {
                        "created": created,
                        "updated": len(upserts) - created,
                        "deleted": deleted,
                        "count": total,
                    },
                )
            if path == CONTROL_PREFIX + "runs" and method == "GET":
                with state.lock:
                    runs = state.runs()
                return _json_reply(200, {"count": len(runs), "runs": runs})
            if path == CONTROL_PREFIX + "health" and method == "GET":
                return _json_reply(200, {"ok": True, "count": len(state)})
        except (ValueError, TypeError, KeyError) as exc:
            return _json_reply(400, {"error": str(exc)})
        return _json_reply(404, {"error": f"no control route {method} {path}"})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive connections must not block stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: CatalogState) -> None:
        self.state = state
        self.stopping = threading.Event()  # ends drips and oversize bodies when the server stops
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("stand-in connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Drop every open (keep-alive) connection, so a stopped server really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class StandinServer:
    """The stand-in catalog on ``127.0.0.1`` (ephemeral port by default), served from a daemon thread.

    Use ``with StandinServer(generate_runs(300)) as srv: ...`` or ``start()``/``stop()``.
    """

    def __init__(
        self,
        runs: Iterable[Mapping[str, Any]] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.state = CatalogState(runs, client_id=client_id, client_secret=client_secret, faults=faults)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bound_port = 0  # kept across stop(): start() again serves on the same port

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> StandinServer:
        """Bind and start serving (idempotent). After ``stop()``, binds the port it had before."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self._bound_port or self.requested_port), self.state)
            self._bound_port = int(self._httpd.server_address[1])
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"standin-{self.port}",
                daemon=True,
            )
            self._thread.start()
            log.info("stand-in catalog serving %d runs at %s", len(self.state), self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and release the port (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the stand-in catalog is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/``"""
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v1/`` (the CATALOG_API_URL)."""
        return self.base_url + API_PREFIX.lstrip("/")

    @property
    def oauth_url(self) -> str:
        """``http://127.0.0.1:PORT/oauth2/access_token`` (the CATALOG_OAUTH_URL)."""
        return self.base_url + OAUTH_PATH.lstrip("/")

    # --- conveniences -----------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault fields (see ``Faults``); the others keep their values."""
        return self.state.set_faults(**changes)

    def reset_faults(self) -> Faults:
        return self.state.reset_faults()

    def expire_all_tokens(self) -> int:
        return self.state.expire_all_tokens()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset_stats(self) -> None:
        self.state.reset_stats()
