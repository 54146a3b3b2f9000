"""Print the kill rate of the last ``mutmut run`` (``make mutation``), per module and overall.

mutmut keeps each mutated file's verdicts in ``mutants/<path>.meta`` (JSON: mutant name -> the
exit code of its test run). A mutant is *killed* when the tests failed (exit 1 or 3) or timed out
(a mutant that makes a loop endless is caught, just by the clock); every other verdict --
survived, no test covers it, suspicious -- counts against the rate. ``--survivors`` lists the
survivors by name (``mutmut show NAME`` prints the diff of one).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3}  # pytest failed / internal error: the tests noticed
TIMEOUT = {36, -24, 24, 152, 255}  # mutmut's timeout codes (SIGXCPU)
MUTANTS = Path("mutants")


def verdict(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code is None:
        return "not checked"
    if code == 0:
        return "survived"
    if code in (5, 33):
        return "no tests"
    return "other"


def main(argv: list[str]) -> int:
    metas = sorted(MUTANTS.glob("**/*.py.meta"))
    if not metas:
        print("mutation: no results under mutants/ (run `make mutation`)", file=sys.stderr)
        return 1
    total = Counter()
    survivors: list[str] = []
    for meta in metas:
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if not codes:
            continue
        counts = Counter(verdict(code) for code in codes.values())
        total.update(counts)
        detected = counts["killed"] + counts["timeout"]
        module = str(meta.relative_to(MUTANTS))[: -len(".meta")]
        print(
            f"  {module:<22} killed {detected:>4} of {len(codes):>4} ({100 * detected / len(codes):5.1f}%)"
            f"  timeouts {counts['timeout']}, survived {counts['survived']}, no tests {counts['no tests']},"
            f" other {counts['other'] + counts['not checked']}"
        )
        survivors += sorted(
            name for name, code in codes.items() if verdict(code) not in ("killed", "timeout")
        )
    if "--survivors" in argv:
        print("\n".join(survivors))
    n = sum(total.values())
    k = total["killed"] + total["timeout"]
    print(f"mutation: killed {k} of {n} ({100 * k / n:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
