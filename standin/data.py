"""Deterministic, realistic course runs for the stand-in catalog, and the matching LMS import records.

Everything here is a pure function of its arguments (and ``seed``): the same call always gives the
same data, so tests, the demo and benchmarks can rely on it.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import unicodedata
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "HOSTILE_VARIANTS",
    "REFERENCE_NOW",
    "early_key",
    "generate_runs",
    "hostile_variant",
    "hostilize",
    "lms_course_records",
    "make_run",
    "parse_key",
]

#: The fixed "now" used to compute ``availability`` (so the data never depends on the wall clock).
REFERENCE_NOW = datetime(2025, 6, 1, tzinfo=UTC)

# (org, weight). Kept short on purpose: keys must stay short enough that 100 URL-encoded keys fit in
# a ~4 KB URL. No org sorts before "AAAx", which early_key() relies on.
_ORGS: list[tuple[str, int]] = [
    ("edX", 10),
    ("MITx", 10),
    ("HarvardX", 4),
    ("DelftX", 4),
    ("UQx", 4),
    ("BerkeleyX", 2),
    ("ANUx", 3),
    ("UBCx", 4),
    ("EPFLx", 3),
    ("KyotoUx", 2),
    ("IBM", 6),
    ("GTx", 4),
    ("TUMx", 3),
    ("ColumbiaX", 1),
    ("RICEx", 3),
    ("UCSDx", 4),
    ("NYUx", 2),
    ("SNUx", 2),
]
# Old-style keys (Org/Num/Run) date from 2012-2015. These orgs all sort after "course-v1:" (lowercased).
_OLD_ORGS: list[tuple[str, int]] = [
    ("MITx", 10),
    ("HarvardX", 8),
    ("edX", 4),
    ("DelftX", 3),
    ("UTAustinX", 2),
    ("WellesleyX", 1),
]

_TOPICS: dict[str, list[str]] = {
    "CS": ["Computer Science", "Programming", "Algorithms", "Data Structures", "Cybersecurity"],
    "DS": ["Data Science", "Machine Learning", "Statistics with Python", "Deep Learning"],
    "MA": ["Calculus", "Linear Algebra", "Probability", "Discrete Mathematics"],
    "PH": ["Mechanics", "Electricity and Magnetism", "Quantum Physics", "Astrophysics"],
    "BI": ["Molecular Biology", "Genetics", "Neuroscience", "Ecology"],
    "CH": ["General Chemistry", "Organic Chemistry", "Biochemistry"],
    "EC": ["Microeconomics", "Macroeconomics", "Finance", "Development Economics"],
    "HI": ["World History", "Ancient Civilizations", "Modern Europe"],
    "EE": ["Circuits and Electronics", "Signals and Systems", "Power Systems"],
    "LW": ["Contract Law", "International Law", "Copyright"],
    "PS": ["Psychology", "Behavioral Science", "Cognitive Science"],
    "AR": ["Architecture", "Urban Planning", "Sustainable Design"],
    "MD": ["Global Health", "Epidemiology", "Public Health"],
    "EN": ["Academic Writing", "English Grammar", "Shakespeare"],
}
_PREFIXES = list(_TOPICS)

_TEMPLATES: dict[str | None, list[str]] = {
    "en": [
        "Introduction to {t}",
        "{t} Fundamentals",
        "Advanced {t}",
        "Principles of {t}",
        "{t} for Everyone",
        "Foundations of {t}",
        "Applied {t}",
        "{t}: A Practical Approach",
    ],
    "es": ["Introducción a {t}", "Fundamentos de {t}", "{t} avanzada"],
    "fr": ["Introduction à {t}", "Les bases de {t}", "{t} : théorie et pratique"],
    "zh": ["{t}导论", "{t}基础"],
}

# (content_language, weight); None means the run has no language set.
_LANGUAGES: list[tuple[str | None, int]] = [
    ("en-us", 60),
    ("en", 8),
    ("es", 10),
    ("fr", 6),
    ("zh-cn", 5),
    ("pt-br", 3),
    ("ar", 2),
    ("de", 2),
    (None, 4),
]
_TYPES: list[tuple[str, int]] = [
    ("verified", 60),
    ("audit", 20),
    ("professional", 8),
    ("credit", 4),
    ("honor", 3),
    ("masters", 5),
]
_STATUSES: list[tuple[str, int]] = [("published", 90), ("unpublished", 7), ("reviewed", 3)]
_RUNS_PER_COURSE: list[tuple[int, int]] = [(1, 35), (2, 25), (3, 18), (4, 12), (5, 6), (6, 4)]

_HIDDEN_RATE = 0.03
_UNMARKETABLE_RATE = 0.10
_OLD_STYLE_RATE = 0.12
_FINANCIAL_AID_RATE = 0.85
_MARKETING_ROOT = "https://www.example.com/course/"

_TERM_MONTHS = {1: (1, 2, 3), 2: (5, 6, 7), 3: (9, 10)}
_OLD_TERMS = {1: "Spring", 2: "Summer", 3: "Fall"}
_NEW_PREFIX = "course-v1:"
_CCX_PREFIX = "ccx-v1:"

#: The kinds of hostile value ``hostilize`` can put in a run, one per run, chosen from the key.
HOSTILE_VARIANTS = (
    "marketing_url_javascript",  # marketing_url = "javascript:alert(1)"
    "marketing_url_huge",  # marketing_url = a 5,000-character URL
    "marketing_url_int",  # marketing_url = 12345 (an int)
    "financial_aid_string",  # eligible_for_financial_aid = "yes"
    "language_list",  # content_language = ["en", "fr"]
)


_CUMULATIVE: dict[int, tuple[list[Any], list[int]]] = {}


def _weighted(rng: random.Random, choices: list[tuple[Any, int]]) -> Any:
    table = _CUMULATIVE.get(id(choices))
    if table is None:
        values = [c for c, _ in choices]
        cum = list(itertools.accumulate(w for _, w in choices))
        table = _CUMULATIVE[id(choices)] = (values, cum)
    return table[0][bisect.bisect(table[1], rng.random() * table[1][-1])]


def _randint(rng: random.Random, low: int, high: int) -> int:
    """Like ``rng.randint`` (inclusive) but cheaper; determinism is all that matters here."""
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, seq: Sequence[Any]) -> Any:
    return seq[int(rng.random() * len(seq))]


def _slugify(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")


def _iso(dt: datetime | None, *, micro: bool = False) -> str | None:
    if dt is None:
        return None
    return dt.isoformat(timespec="microseconds" if micro else "seconds").replace("+00:00", "Z")


def _term_start(rng: random.Random, term: int, year: int) -> datetime:
    month = _pick(rng, _TERM_MONTHS[term])
    return datetime(year, month, _randint(rng, 1, 28), _pick(rng, (0, 0, 0, 13, 15)), 0, tzinfo=UTC)


def _availability(start: datetime, end: datetime | None) -> str:
    if end is not None and end <= REFERENCE_NOW:
        return "Archived"
    if start > REFERENCE_NOW + timedelta(days=60):
        return "Upcoming"
    if start > REFERENCE_NOW:
        return "Starting Soon"
    return "Current"


def _title(rng: random.Random, prefix: str, language: str | None) -> str:
    family = (language or "en").split("-")[0]
    templates = _TEMPLATES.get(family, _TEMPLATES["en"])
    return _pick(rng, templates).format(t=_pick(rng, _TOPICS[prefix]))


def _build_run(
    rng: random.Random,
    *,
    key: str,
    course: str,
    title: str,
    slug: str,
    start: datetime,
    language: str | None,
) -> dict[str, Any]:
    """One course run dict, with every random choice drawn from ``rng`` in a fixed order."""
    self_paced = rng.random() < 0.35
    if rng.random() < 0.05:
        end = None
    else:
        weeks = _randint(rng, 26, 52) if self_paced else _randint(rng, 6, 16)
        end = (start + timedelta(weeks=weeks)).replace(hour=23, minute=59)
    marketable = rng.random() >= _UNMARKETABLE_RATE
    hidden = rng.random() < _HIDDEN_RATE
    aid = rng.random() < _FINANCIAL_AID_RATE
    run_type = _weighted(rng, _TYPES)
    status = _weighted(rng, _STATUSES)
    # Saved some time between ~6 months before the start and the reference "now".
    earliest = min(start - timedelta(days=180), REFERENCE_NOW - timedelta(days=30))
    span = int((REFERENCE_NOW - earliest).total_seconds())
    modified = earliest + timedelta(
        seconds=_randint(rng, 0, span - 1), microseconds=_randint(rng, 0, 999_999)
    )
    return {
        "key": key,
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "title": title,
        "marketing_url": f"{_MARKETING_ROOT}{slug}" if marketable else None,
        "start": _iso(start),
        "end": _iso(end),
        "pacing_type": "self_paced" if self_paced else "instructor_paced",
        "type": run_type,
        "status": status,
        "availability": _availability(start, end),
        "course": course,
        "content_language": language,
        "hidden": hidden,
        "eligible_for_financial_aid": aid,
        "modified": _iso(modified, micro=True),
        "seats": [],
        "programs": [],
    }


def parse_key(key: str) -> tuple[str, str, str]:
    """Split a course key (``course-v1:O+N+R``, ``O/N/R`` or ``ccx-v1:O+N+R+ccx@7``) into org, number, run."""
    if key.startswith(_NEW_PREFIX) or key.startswith(_CCX_PREFIX):
        parts = key.split(":", 1)[1].split("+")
    else:
        parts = key.split("/")
    if len(parts) < 3:
        raise ValueError(f"not a course key: {key!r}")
    return parts[0], parts[1], parts[2]


def _new_course(rng: random.Random, used: set[str]) -> tuple[str, str, str, bool]:
    """Pick an unused (org, number), the subject prefix, and whether the course uses old-style keys."""
    for attempt in itertools.count():
        old_style = rng.random() < _OLD_STYLE_RATE
        org = _weighted(rng, _OLD_ORGS if old_style else _ORGS)
        prefix = _pick(rng, _PREFIXES)
        if org == "MITx" and rng.random() < 0.5:
            num = f"{_randint(rng, 1, 24)}.{_randint(rng, 0, 999):03d}x"
        elif attempt < 5:
            num = f"{prefix}{_randint(rng, 1, 99) if rng.random() < 0.6 else _randint(rng, 100, 299)}x"
        else:  # short numbers are getting scarce (huge catalogs): widen the range
            num = f"{prefix}{_randint(rng, 300, 99_999)}x"
        ident = f"{org}+{num}".lower()
        if ident not in used:
            used.add(ident)
            return org, num, prefix, old_style
    raise AssertionError("unreachable")


def generate_runs(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Return ``n`` deterministic course runs (generation order; a longer list extends a shorter one).

    Runs come grouped by course (1-6 runs each, consecutive terms). About 12% of runs use old-style
    ``Org/Num/Run`` keys (years 2012-2015), the rest ``course-v1:Org+Num+Run``; ~10% have a null
    ``marketing_url``; ~3% are hidden. Keys are unique (case-insensitively), at most 40 characters.
    """
    rng = random.Random(seed)
    used: set[str] = set()
    runs: list[dict[str, Any]] = []
    while len(runs) < n:
        org, num, prefix, old_style = _new_course(rng, used)
        language = _weighted(rng, _LANGUAGES)
        title = _title(rng, prefix, language)
        slug = f"{_slugify(title)}-{org.lower()}-{_slugify(num)}"
        n_runs = _weighted(rng, _RUNS_PER_COURSE)
        year = _randint(rng, 2012, 2015) if old_style else _randint(rng, 2014, 2025)
        term = _randint(rng, 1, 3)
        for _ in range(min(n_runs, n - len(runs))):
            if old_style:
                run = f"{year}_{_OLD_TERMS[term]}"
                key = f"{org}/{num}/{run}"
            else:
                run = f"{term}T{year}"
                key = f"{_NEW_PREFIX}{org}+{num}+{run}"
            start = _term_start(rng, term, year)
            runs.append(
                _build_run(
                    rng,
                    key=key,
                    course=f"{org}+{num}",
                    title=title,
                    slug=slug,
                    start=start,
                    language=language if rng.random() >= 0.05 else _weighted(rng, _LANGUAGES),
                )
            )
            term += 1
            if term > 3:
                term, year = 1, year + 1
    return runs


def make_run(key: str, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Return a realistic run for ``key`` (deterministic in ``key`` and ``seed``); ``overrides`` win."""
    org, num, run_name = parse_key(key)
    rng = random.Random(f"{seed}:{key}")
    prefix = _pick(rng, _PREFIXES)
    language = _weighted(rng, _LANGUAGES)
    title = _title(rng, prefix, language)
    year_match = re.search(r"(20\d\d)", run_name)
    year = int(year_match.group(1)) if year_match else 2025
    start = _term_start(rng, _randint(rng, 1, 3), year)
    run = _build_run(
        rng,
        key=key,
        course=f"{org}+{num}",
        title=title,
        slug=f"{_slugify(title)}-{org.lower()}-{_slugify(num)}",
        start=start,
        language=language,
    )
    run.update(overrides)
    return run


def early_key(seq: int) -> str:
    """A new-style key that sorts before every generated key (``lower(key)`` order), e.g. for inserts."""
    return f"{_NEW_PREFIX}AAAx+INS{seq:05d}+1T2026"


def hostile_variant(key: str) -> str:
    """The hostile variant (one of ``HOSTILE_VARIANTS``) used for ``key``: a deterministic function of it."""
    return HOSTILE_VARIANTS[zlib.crc32(key.encode()) % len(HOSTILE_VARIANTS)]


def hostilize(run: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``run`` with one malformed/hostile field, chosen by ``hostile_variant``."""
    bad = dict(run)
    variant = hostile_variant(str(run.get("key")))
    if variant == "marketing_url_javascript":
        bad["marketing_url"] = "javascript:alert(1)"
    elif variant == "marketing_url_huge":
        bad["marketing_url"] = _MARKETING_ROOT + "x" * (5000 - len(_MARKETING_ROOT))
    elif variant == "marketing_url_int":
        bad["marketing_url"] = 12345
    elif variant == "financial_aid_string":
        bad["eligible_for_financial_aid"] = "yes"
    else:
        bad["content_language"] = ["en", "fr"]
    return bad


def _lms_record(
    key: str,
    display_name: str,
    org: str,
    number: str,
    run: str,
    *,
    start: str | None,
    end: str | None,
    self_paced: bool,
) -> dict[str, Any]:
    return {
        "id": key,
        "display_name": display_name,
        "org": org,
        "number": number,
        "run": run,
        "start": start,
        "end": end,
        "self_paced": self_paced,
    }


def lms_course_records(
    runs: Iterable[Mapping[str, Any]],
    *,
    ccx_every: int = 50,
    ccx_per_master: int = 1,
    lms_only: int | None = None,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """Return the LMS-side course records (JSON-able) for ``runs``, plus CCX and LMS-only courses.

    Each record is ``{"id", "display_name", "org", "number", "run", "start", "end", "self_paced"}``.

    - one record per catalog run, in the given order;
    - ``ccx_per_master`` CCX courses (``ccx-v1:Org+Num+Run+ccx@<n>``, ``n`` counting from 1 across the
      whole list) for every ``ccx_every``-th new-style run (the 1st, the ``ccx_every+1``-th, ...); their
      org/number/run/dates/pacing are the master's. ``ccx_every=0`` or ``ccx_per_master=0``: no CCX;
    - ``lms_only`` courses the catalog does not know (unique keys not among ``runs``); default
      ``len(runs) // 100`` (at least 1 when there are runs).
    """
    runs = list(runs)
    rng = random.Random(f"lms:{seed}")
    records: list[dict[str, Any]] = []
    ccx_records: list[dict[str, Any]] = []
    ccx_id = 0
    new_style_index = 0
    for run in runs:
        key = str(run["key"])
        org, number, run_name = parse_key(key)
        self_paced = run.get("pacing_type") == "self_paced"
        title = str(run.get("title") or key)
        start, end = run.get("start"), run.get("end")
        records.append(
            _lms_record(key, title, org, number, run_name, start=start, end=end, self_paced=self_paced)
        )
        if not key.startswith(_NEW_PREFIX):
            continue
        if ccx_every > 0 and new_style_index % ccx_every == 0:
            for _ in range(ccx_per_master):
                ccx_id += 1
                ccx_key = f"{_CCX_PREFIX}{org}+{number}+{run_name}+ccx@{ccx_id}"
                ccx_records.append(
                    _lms_record(
                        ccx_key,
                        f"{title} (Coach section {ccx_id})",
                        org,
                        number,
                        run_name,
                        start=start,
                        end=end,
                        self_paced=self_paced,
                    )
                )
        new_style_index += 1
    records.extend(ccx_records)

    if lms_only is None:
        lms_only = max(1, len(runs) // 100) if runs else 0
    known = {str(r["key"]).lower() for r in runs}
    orgs = ["LocalX", "StaffX", "SandboxX", "PartnerX"]
    i = 0
    added = 0
    while added < lms_only:
        i += 1
        org = orgs[i % len(orgs)]
        number = f"INT{i:04d}"
        run_name = f"{_randint(rng, 1, 3)}T{_randint(rng, 2016, 2025)}"
        key = f"{_NEW_PREFIX}{org}+{number}+{run_name}"
        if key.lower() in known:
            continue
        known.add(key.lower())
        start = _term_start(rng, 1, int(run_name[-4:]))
        records.append(
            _lms_record(
                key,
                f"Internal training {i}",
                org,
                number,
                run_name,
                start=_iso(start),
                end=None,
                self_paced=rng.random() < 0.5,
            )
        )
        added += 1
    return records
