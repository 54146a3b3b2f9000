"""A worker host's own scrape endpoint, for deployments where workers do not share a host (and so
the metrics directory) with a web process: Kubernetes pods, separate machines.

Opt-in: ``CELERY_METRICS_ADDRESS=0.0.0.0:9808`` makes each Celery worker's main process serve the
summed samples of its directory (every pool process) on that address, once the worker is ready
(``observability.celery``). The same bearer token as the web's ``/metrics`` (``METRICS_TOKEN``);
without a token nothing is served. Only the process counters: the database gauges come from the
web's ``/metrics``.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from observability.metrics import MULTIPROC_DIR

log = logging.getLogger("observability.exporter")


def metrics_app(token: str) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: the multiprocess samples for a request with ``Authorization: Bearer <token>``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if not (
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"a bearer token is required\n"]
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(MULTIPROC_DIR))
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [encoder(registry)]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s would flood the worker's log; failures still surface to the scraper."""


def serve(address: str, token: str) -> WSGIServer:
    """Serve on ``host:port`` from a daemon thread; returns the server (``shutdown()`` stops it)."""
    host, _, port = address.rpartition(":")
    server = make_server(host or "0.0.0.0", int(port), metrics_app(token), handler_class=_QuietHandler)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    log.info("metrics: worker samples served on %s:%s/metrics", *server.server_address[:2])
    return server
