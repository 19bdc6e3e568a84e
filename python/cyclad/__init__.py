"""cyclad: Byzantine-robust, communication-efficient distributed training (LAD / Com-LAD).

The fast kernels (robust aggregation, cyclic encoding, compression) live in the C++ extension
``cyclad._core``; the modules here are the public, validated API over them.
"""

from __future__ import annotations

try:
    from cyclad import _core
except ImportError as exc:  # pragma: no cover - only without a built extension
    msg = (
        "cyclad's C++ extension cyclad._core is not built or cannot be loaded "
        f"({exc}); install the package with `pip install .` from the source tree"
    )
    raise ImportError(msg) from exc

from importlib.metadata import PackageNotFoundError, version

from cyclad import aggregators, coding, compression
from cyclad._validation import ArgumentError, ArgumentTypeError

try:
    __version__ = version("cyclad")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "__version__",
    "aggregators",
    "coding",
    "compression",
    "hardware_threads",
]


def hardware_threads() -> int:
    """Number of threads the kernels use when ``threads=None``."""
    return int(_core.hardware_threads())


def __dir__() -> list[str]:
    return __all__
