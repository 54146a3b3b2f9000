"""A catalog at the wire for unit tests: ``responses`` callbacks that answer like course-discovery.

The answers come from ``standin.semantics``, the one statement of the catalog's behaviour that
the stand-in server uses too: the list's order, the ``keys`` filter, both pagination modes, the
envelope, ``exclude_utm`` and the error bodies are the stand-in's, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import responses

from standin import semantics
from tests.conftest import API, OAUTH

# What a ``before_list`` hook may answer instead of the catalog: a ``responses`` tuple or an answer
# built with ``standin.semantics`` (``semantics.throttled(30)``, ``semantics.server_error()``).
Override = tuple[int, dict, str] | semantics.Answer


class WireCatalog:
    """Holds runs by key and answers the token, list and detail routes.

    ``requested_keys`` counts every key asked for with ``keys=``; ``list_requests`` counts list
    requests; ``before_list``, when set, may answer a list request in the catalog's place.
    """

    def __init__(
        self, rsps: responses.RequestsMock, runs: dict[str, dict] | None = None, *, client_id: str = "cid"
    ) -> None:
        self.runs: dict[str, dict] = dict(runs or {})
        self.client_id = client_id  # the utm_source of marketing URLs served without exclude_utm
        self.requested_keys: Counter[str] = Counter()
        self.list_requests = 0
        self.before_list: Callable[[WireCatalog], Override | None] | None = None
        self.max_page_size = 0  # a deployment that caps its pages (0: none, as course-discovery)
        rsps.add(responses.POST, OAUTH, json=semantics.token_body("tok", 36000))
        rsps.add_callback(
            responses.GET, re.compile(re.escape(API) + r"course_runs/(\?.*)?$"), callback=self._list
        )
        rsps.add_callback(
            responses.GET, re.compile(re.escape(API) + r"course_runs/[^?]+/.*"), callback=self._detail
        )

    def add(self, *runs: dict) -> None:
        for run in runs:
            self.runs[run["key"]] = run

    def _list(self, request: Any) -> tuple[int, dict, Any]:
        self.list_requests += 1
        if self.before_list and (answer := self.before_list(self)):
            return answer.to_responses() if isinstance(answer, semantics.Answer) else answer
        params = semantics.query_params(urlsplit(request.url).query)
        self.requested_keys.update(semantics.keys_filter(params) or ())
        try:
            body = semantics.list_body(
                request.url, self.runs, client=self.client_id, max_page_size=self.max_page_size
            )
        except semantics.Answer as error:
            return error.to_responses()
        return semantics.json_answer(200, body).to_responses()

    def _detail(self, request: Any) -> tuple[int, dict, Any]:
        url = urlsplit(request.url)
        try:
            key = semantics.detail_key(url.path.rstrip("/").rsplit("/", 1)[-1])
            body = semantics.detail_body(
                self.runs.get(key), semantics.query_params(url.query), client=self.client_id
            )
        except semantics.Answer as error:
            return error.to_responses()
        return semantics.json_answer(200, body).to_responses()
