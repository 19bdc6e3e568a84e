"""The cyclad bench suite: kernel timings as ratios against baselines measured in the same run.

Run ``python -m cyclad.bench aggregators`` (or ``coding``, ``compression``, ``all``); see
``python -m cyclad.bench --help``. Every figure is relative to a multi-threaded C++ read pass over
the same bytes and to NumPy / torch / ByzFL equivalents when those are installed.
"""

from __future__ import annotations

from cyclad.bench._harness import (
    Record,
    best_time,
    markdown_table,
    read_pass_time,
    write_results,
)

__all__ = ["Record", "best_time", "markdown_table", "read_pass_time", "write_results"]
