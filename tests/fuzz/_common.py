"""Shared pieces of the atheris targets: the known-defect switch and the error contract."""

from __future__ import annotations

import os
import sys
from collections import Counter

import numpy as np

#: Checks that fail on today's code can be tolerated one by one by listing their ids in
#: CYCLAD_FUZZ_KNOWN (comma-separated); tests/fuzz/README.md lists the ids. A tolerated hit is
#: printed the first time and counted (the counts are printed when the run ends). Nothing is
#: tolerated unless listed.
KNOWN = {s.strip() for s in os.environ.get("CYCLAD_FUZZ_KNOWN", "").split(",") if s.strip()}
HITS: Counter[str] = Counter()


class PropertyFailure(AssertionError):
    """A target's contract was violated (raised so atheris records the input)."""


def check(ok: bool, defect: str, message: str) -> None:
    """Fail with ``message`` unless ``ok``; tolerate (and count) if ``defect`` is known."""
    if ok:
        return
    if defect in KNOWN:
        if HITS[defect] == 0:
            print(f"==FUZZ== known defect {defect!r} (tolerated): {message}", file=sys.stderr)
        HITS[defect] += 1
        return
    msg = f"[{defect}] {message}"
    raise PropertyFailure(msg)


def print_known_hits() -> None:
    for defect, n in sorted(HITS.items()):
        print(f"==FUZZ== known defect {defect!r} tolerated {n} times", file=sys.stderr)


def check_error(exc: BaseException, what: str) -> None:
    """The bad-input contract (DESIGN.md section 4): only ValueError / TypeError, with a
    message. Anything else propagates as a finding."""
    if not isinstance(exc, ValueError | TypeError):
        raise exc
    if not str(exc).strip():
        msg = f"{what}: {type(exc).__name__} without a message"
        raise PropertyFailure(msg) from exc


POISONS32 = [
    np.nan,
    -np.nan,
    np.inf,
    -np.inf,
    np.finfo(np.float32).max,
    -np.finfo(np.float32).max,
    3e38,
    -3e38,
    np.finfo(np.float32).smallest_subnormal,
]
POISONS64 = [*POISONS32, np.finfo(np.float64).max, 1e300, -1e300]


def same_array(before: np.ndarray, after: object) -> bool:
    """Whether an input still holds what it held before a call (NaN equal to NaN, bitwise)."""
    a = np.asarray(after)
    if a.shape != before.shape or a.dtype != before.dtype:
        return False
    if before.dtype == object:
        # x != x holds exactly for NaN-like objects, whatever their type
        return all(
            x is y or x == y or (x != x and y != y)  # noqa: PLR0124
            for x, y in zip(before.flat, a.flat, strict=True)
        )
    return before.tobytes() == np.ascontiguousarray(a).tobytes()
