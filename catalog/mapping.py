"""From a catalog course run to the catalog-owned overview fields: a pure function over a table.

Validation happens here, at the edge: a record whose values are of the wrong type or hostile
(a ``javascript:`` URL, a 5,000-character URL) is refused as a whole with a reason, and the
stored values are kept by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_URL_LENGTH = 500  # the overview column's size
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f<>\"\\]")


class RefusedRecord(ValueError):
    """The catalog record cannot be used; ``str()`` says why (without echoing huge values)."""


def _clean_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RefusedRecord(f"marketing_url must be a string or null, got {type(value).__name__}")
    if len(value) > MAX_URL_LENGTH:
        raise RefusedRecord(f"marketing_url is {len(value)} characters (max {MAX_URL_LENGTH})")
    if value == "":
        return None
    if _FORBIDDEN_URL_CHARS.search(value):
        raise RefusedRecord("marketing_url contains whitespace, control or quote characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RefusedRecord(f"marketing_url is not an absolute http(s) URL: {value[:80]!r}")
    return value


def _clean_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RefusedRecord(f"eligible_for_financial_aid must be a boolean, got {type(value).__name__}")
    return value


def _clean_language(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RefusedRecord(f"content_language must be a string or null, got {type(value).__name__}")
    if len(value) > 16 or not _LANGUAGE_RE.match(value):
        raise RefusedRecord(f"content_language is not a language code: {value[:20]!r}")
    return value


@dataclass(frozen=True)
class CatalogField:
    """One row of the table: overview field <- catalog key, through a validator."""

    model_field: str
    catalog_key: str
    clean: Callable[[Any], Any]


FIELD_TABLE: tuple[CatalogField, ...] = (
    CatalogField("marketing_url", "marketing_url", _clean_url),
    CatalogField("eligible_for_financial_aid", "eligible_for_financial_aid", _clean_bool),
    CatalogField("language", "content_language", _clean_language),
)


def map_course_run(run: Mapping[str, Any]) -> dict[str, Any]:
    """The catalog-owned overview values for one catalog run, or ``RefusedRecord``."""
    if not isinstance(run, Mapping):
        raise RefusedRecord(f"record is a {type(run).__name__}, not an object")
    values: dict[str, Any] = {}
    for field in FIELD_TABLE:
        if field.catalog_key not in run:
            raise RefusedRecord(f"record has no {field.catalog_key!r}")
        values[field.model_field] = field.clean(run[field.catalog_key])
    return values
