"""Regenerate ``byzfl_0.0.11_krum_cases.npz``: ByzFL 0.0.11's ``Krum(f)`` and ``MultiKrum(f)``
outputs on the ten inputs of ``byzfl_0.0.11_cases.npz``, for tests/test_aggregators_selection.py
(the test extra does not install ByzFL).

Run once with ``pip install --no-deps byzfl==0.0.11``::

    python -m tests.data.make_byzfl_krum_cases
"""

from __future__ import annotations

import pathlib

import numpy as np

from cyclad.bench._harness import load_byzfl

HERE = pathlib.Path(__file__).parent
OUT = HERE / "byzfl_0.0.11_krum_cases.npz"


def main() -> None:
    byz = load_byzfl()
    if byz is None:
        msg = "byzfl 0.0.11 is needed: pip install --no-deps byzfl==0.0.11"
        raise SystemExit(msg)
    cases = np.load(HERE / "byzfl_0.0.11_cases.npz")
    out: dict[str, np.ndarray] = {}
    for c in range(10):
        X, f = cases[f"c{c}_X"], int(cases[f"c{c}_f"])
        out[f"c{c}_krum"] = np.asarray(byz.Krum(f)(X.copy()))
        out[f"c{c}_multi_krum"] = np.asarray(byz.MultiKrum(f)(X.copy()))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({len(out)} arrays)")


if __name__ == "__main__":
    main()
