"""A faithful stand-in for the catalog service (course-discovery), served over real HTTP. Stdlib only."""

from .data import (
    HOSTILE_VARIANTS,
    early_key,
    generate_runs,
    hostile_variant,
    hostilize,
    lms_course_records,
    make_run,
    parse_key,
)
from .server import CatalogState, Faults, StandinServer

__all__ = [
    "HOSTILE_VARIANTS",
    "CatalogState",
    "Faults",
    "StandinServer",
    "early_key",
    "generate_runs",
    "hostile_variant",
    "hostilize",
    "lms_course_records",
    "make_run",
    "parse_key",
]
