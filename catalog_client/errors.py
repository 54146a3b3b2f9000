"""Typed errors of the catalog client, and the one rule that says which of them are worth a retry.

Every error carries ``url`` (credentials and secret query parameters removed) and, where an HTTP
answer was received, ``status``. ``str(exc)`` is a one-line message that never holds a secret or
a token. The errors pickle (``args`` is the message alone), so Celery can carry them.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_THROTTLE_RETRY_AFTER",
    "CatalogConnectionError",
    "CatalogError",
    "CatalogMalformedResponse",
    "CatalogPermanentError",
    "CatalogResponseTooLarge",
    "CatalogRetryableError",
    "CatalogServerError",
    "CatalogThrottled",
    "CatalogTimeout",
    "is_retryable",
]

# Seconds to wait after a 429 whose Retry-After header is missing or unreadable.
DEFAULT_THROTTLE_RETRY_AFTER = 60.0


class CatalogError(Exception):
    """Base of every catalog failure. ``retryable`` says whether trying again later may succeed."""

    retryable: bool = False

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        message = " ".join(str(message).split())  # one line, whatever the server sent
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class CatalogRetryableError(CatalogError):
    """A failure that may go away: timeouts, resets, 5xx, throttling, a truncated body."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url, status=status)
        self.retry_after = retry_after


class CatalogTimeout(CatalogRetryableError):
    """The connect or read timeout elapsed, or the call's overall deadline (a catalog that sends
    its body slowly enough to dodge the per-read timeout)."""


class CatalogConnectionError(CatalogRetryableError):
    """No connection: refused, DNS failure, reset, TLS handshake failure."""


class CatalogServerError(CatalogRetryableError):
    """The catalog answered 5xx; ``retry_after`` is set when it sent a Retry-After header."""


class CatalogThrottled(CatalogRetryableError):
    """The catalog answered 429; ``retry_after`` (seconds) is never None."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        if retry_after is None:
            retry_after = DEFAULT_THROTTLE_RETRY_AFTER
        super().__init__(message, url=url, status=status, retry_after=retry_after)


class CatalogPermanentError(CatalogError):
    """Retrying will not help: 4xx other than 429, refused credentials, a redirect, a bad request."""


class CatalogResponseTooLarge(CatalogPermanentError):
    """The answer's body is larger than the client's cap (``ClientConfig.max_body_bytes``).

    Not retryable: the same request brings the same body back (its size follows from the page
    size and the records), so a retry would only download the cap again. The fix is a smaller
    page size or a larger cap; the error says which limit was hit.
    """

    def __init__(
        self, message: str, *, url: str | None = None, status: int | None = None, limit: int = 0
    ) -> None:
        super().__init__(message, url=url, status=status)
        self.limit = limit


class CatalogMalformedResponse(CatalogRetryableError):
    """The answer cannot be trusted: not JSON, wrong envelope, truncated, counts that do not add up,
    a link off the catalog's origin. Retryable, since a truncated body is usually transient."""


def is_retryable(exc: BaseException) -> bool:
    """True when trying again later may succeed: catalog errors say so; anything else is a bug."""
    return isinstance(exc, CatalogError) and exc.retryable
