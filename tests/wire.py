"""A catalog at the wire for unit tests: ``responses`` callbacks that answer like course-discovery."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from tests.conftest import API, OAUTH


class WireCatalog:
    """Holds runs by key and answers the token, list (``keys=`` filter) and detail routes."""

    def __init__(self, rsps: responses.RequestsMock, runs: dict[str, dict] | None = None) -> None:
        self.runs: dict[str, dict] = dict(runs or {})
        self.requested_keys: Counter[str] = Counter()
        self.list_requests = 0
        self.before_list: Callable[[WireCatalog], tuple[int, dict, str] | None] | None = None
        rsps.add(
            responses.POST, OAUTH, json={"access_token": "tok", "expires_in": 36000, "token_type": "JWT"}
        )
        rsps.add_callback(
            responses.GET, re.compile(re.escape(API) + r"course_runs/\?.*"), callback=self._list
        )
        rsps.add_callback(
            responses.GET, re.compile(re.escape(API) + r"course_runs/[^?]+/.*"), callback=self._detail
        )

    def add(self, *runs: dict) -> None:
        for run in runs:
            self.runs[run["key"]] = run

    def _list(self, request: Any) -> tuple[int, dict, str]:
        self.list_requests += 1
        if self.before_list and (answer := self.before_list(self)):
            return answer
        query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
        keys = [k for k in query.get("keys", [""])[0].split(",") if k]
        self.requested_keys.update(keys)
        found = sorted((self.runs[k] for k in keys if k in self.runs), key=lambda r: r["key"].lower())
        body = {"count": len(found), "next": None, "previous": None, "results": found}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def _detail(self, request: Any) -> tuple[int, dict, str]:
        from urllib.parse import unquote

        key = unquote(urlsplit(request.url).path.rstrip("/").rsplit("/", 1)[-1])
        if key in self.runs:
            return 200, {"Content-Type": "application/json"}, json.dumps(self.runs[key])
        return (
            404,
            {"Content-Type": "application/json"},
            json.dumps({"detail": "No CourseRun matches the given query."}),
        )
