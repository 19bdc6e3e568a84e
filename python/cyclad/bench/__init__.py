"""The cyclad bench suite: kernel timings against baselines measured in the same run.

Run ``cyclad bench [AREA]`` (``aggregators``, ``coding``, ``compression``, ``round`` or ``all``,
the default; ``python -m cyclad.bench`` is the same); see ``cyclad bench --help``. Every figure
is the median of several calls after a warm-up, with its spread and peak extra memory, next to a
multi-threaded C++ read pass over the same bytes and NumPy / torch / ByzFL equivalents when
those are installed.
"""

from __future__ import annotations

from cyclad.bench._harness import (
    Budget,
    Record,
    Report,
    Settings,
    Timing,
    machine_info,
    markdown_table,
    measure,
    peak_extra_bytes,
    read_bandwidth,
)

__all__ = [
    "Budget",
    "Record",
    "Report",
    "Settings",
    "Timing",
    "machine_info",
    "markdown_table",
    "measure",
    "peak_extra_bytes",
    "read_bandwidth",
]
