"""From a catalog course run to the catalog-owned overview fields: a pure function over a table.

Validation happens here, at the edge: a record whose values are of the wrong type or hostile
(a ``javascript:`` URL, a 5,000-character URL, credentials or bidirectional controls in a URL, a
newline in a language code) is refused as a whole with a reason, and the stored values are kept by
the caller. ``map_course_run`` raises nothing else, whatever JSON it is given.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_URL_LENGTH = 500  # the overview column's size
MAX_LANGUAGE_LENGTH = 16  # the overview column's size
# BCP 47-ish: a 2-3 letter primary tag, then subtags of 1-8 letters or digits ("en", "en-us",
# "zh-Hans-CN"); course-discovery also has "_" spellings ("zh_CN"). ASCII only; fullmatch, so a
# trailing newline ("en\n", which ``$`` would let through) is refused.
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*", re.ASCII)
# ASCII characters that never belong in a stored URL: controls, space, quotes (either kind: the
# URL ends up in HTML attributes), angle brackets, backslash and the other RFC 3986 exclusions.
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f<>\"'\\`{}|^]")
# A host name: letters (any script), digits, "-", "_" and "."; or an IP literal in brackets.
_HOST_RE = re.compile(r"[\w.-]+|\[[0-9A-Fa-f:.]+\]")
# Unicode categories refused anywhere in a URL: controls (Cc), format characters (Cf: the
# bidirectional controls U+202A..U+202E, U+2066..U+2069, U+200E/U+200F, zero-width characters),
# separators (Zs, Zl, Zp: every kind of whitespace), surrogates (Cs) and private use (Co).
_FORBIDDEN_URL_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Cs", "Co"})


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
    if _FORBIDDEN_URL_CHARS.search(value) or any(
        unicodedata.category(char) in _FORBIDDEN_URL_CATEGORIES for char in value if ord(char) > 0x7F
    ):
        raise RefusedRecord(
            "marketing_url contains whitespace, control, bidirectional-control or quote characters"
        )
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError when not a number in 0..65535
    except ValueError as exc:
        raise RefusedRecord(f"marketing_url does not parse: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedRecord(f"marketing_url is not an absolute http(s) URL: {value[:80]!r}")
    if "@" in parts.netloc:
        raise RefusedRecord("marketing_url carries credentials (user:password@)")
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if not _HOST_RE.fullmatch(host):
        raise RefusedRecord(f"marketing_url has an invalid host: {parts.netloc[:80]!r}")
    if port == 0 or parts.netloc.endswith(":"):
        raise RefusedRecord(f"marketing_url has an invalid port: {parts.netloc[:80]!r}")
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
    if len(value) > MAX_LANGUAGE_LENGTH or not _LANGUAGE_RE.fullmatch(value):
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
