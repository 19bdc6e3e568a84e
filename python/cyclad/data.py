"""Datasets and their partition into the ``N`` subsets of LAD.

:class:`Dataset` holds a validated train/test split. :func:`load` gives bundled offline datasets
(scikit-learn's ``digits`` (the default), ``wine``, ``breast_cancer``; ``synthetic`` Gaussian
mixtures) and MNIST / Fashion-MNIST from local IDX files (never downloaded). :func:`partition`
splits the training samples into ``N`` non-empty subsets (``iid``, ``dirichlet``, ``extreme``,
``gamma``).

Everything is seeded: the same arguments give the same arrays.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DATASETS",
    "DATASET_PARAMS",
    "PARTITIONS",
    "Dataset",
    "load",
    "partition",
    "read_idx",
]

DATASETS = ("digits", "wine", "breast_cancer", "synthetic", "mnist", "fashion_mnist")
PARTITIONS = ("iid", "dirichlet", "extreme", "gamma")
#: The extra :func:`load` parameters each bundled dataset takes (``Config.dataset_params``).
DATASET_PARAMS: dict[str, tuple[str, ...]] = {
    name: ("n_samples", "n_features", "n_classes", "separation") if name == "synthetic" else ()
    for name in DATASETS
}


def _check_X(X: Any, name: str) -> NDArray[np.float64]:
    arr = np.asarray(X)
    if arr.dtype.kind not in "iuf":
        msg = f"{name} must hold real numbers, got dtype {arr.dtype}"
        raise TypeError(msg)
    if arr.ndim != 2:
        msg = f"{name} must be 2-D (samples, features), got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        msg = f"{name} must not be empty, got shape {arr.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)):
        msg = f"{name} must hold finite features (found NaN or Inf)"
        raise ValueError(msg)
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_y(y: Any, name: str, n: int, xname: str) -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        msg = f"{name} must be 1-D (samples,), got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] != n:
        msg = f"{name} has {arr.shape[0]} labels but {xname} has {n} samples"
        raise ValueError(msg)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            msg = f"{name} must hold integer class labels, got non-integer values"
            raise ValueError(msg)
    elif arr.dtype.kind not in "iu":
        msg = f"{name} must hold integer class labels, got dtype {arr.dtype}"
        raise TypeError(msg)
    out = arr.astype(np.int64)
    if out.min() < 0:
        msg = f"{name} must hold non-negative class labels, got {int(out.min())}"
        raise ValueError(msg)
    return out


@dataclass(frozen=True)
class Dataset:
    """A validated classification dataset split into train and test parts.

    Parameters
    ----------
    X_train, X_test : array-like, shape (samples, features)
        Finite real features; both must have the same number of features.
    y_train, y_test : array-like, shape (samples,)
        Integer class labels ``0 .. n_classes - 1``.

    Raises
    ------
    ValueError
        If an array is not 2-D / 1-D, is empty, holds NaN / Inf, or the lengths do not match;
        the message names the offending array.
    TypeError
        If features are not real numbers or labels are not integers.
    """

    X_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    X_test: NDArray[np.float64]
    y_test: NDArray[np.int64]

    def __post_init__(self) -> None:
        Xtr = _check_X(self.X_train, "X_train")
        Xte = _check_X(self.X_test, "X_test")
        if Xtr.shape[1] != Xte.shape[1]:
            msg = (
                f"X_test has {Xte.shape[1]} features but X_train has {Xtr.shape[1]}; "
                "they must match"
            )
            raise ValueError(msg)
        ytr = _check_y(self.y_train, "y_train", Xtr.shape[0], "X_train")
        yte = _check_y(self.y_test, "y_test", Xte.shape[0], "X_test")
        object.__setattr__(self, "X_train", Xtr)
        object.__setattr__(self, "X_test", Xte)
        object.__setattr__(self, "y_train", ytr)
        object.__setattr__(self, "y_test", yte)

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """``max label + 1`` over train and test (at least 2)."""
        return max(2, int(max(self.y_train.max(), self.y_test.max())) + 1)

    def standardized(self) -> Dataset:
        """A copy with features standardised to zero mean and unit variance, with the
        statistics of the training part only (a constant feature keeps scale 1)."""
        Xtr, Xte = _standardize(self.X_train, self.X_test)
        return Dataset(Xtr, self.y_train, Xte, self.y_test)

    def __repr__(self) -> str:
        return (
            f"Dataset(train={self.X_train.shape[0]}, test={self.X_test.shape[0]}, "
            f"features={self.n_features}, classes={self.n_classes})"
        )


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _split(
    X: NDArray[Any], y: NDArray[Any], test_fraction: float, seed: int
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    if not 0.0 < test_fraction < 1.0:
        msg = f"test_fraction must be in (0, 1), got {test_fraction}"
        raise ValueError(msg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E17]))
    perm = rng.permutation(X.shape[0])
    n_test = max(1, round(test_fraction * X.shape[0]))
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _standardize(Xtr: NDArray[Any], Xte: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    mu = Xtr.mean(axis=0)
    sd = Xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return (Xtr - mu) / sd, (Xte - mu) / sd


def _synthetic(
    n_samples: int, n_features: int, n_classes: int, separation: float, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    for name, v, lo in (
        ("n_samples", n_samples, 2),
        ("n_features", n_features, 1),
        ("n_classes", n_classes, 2),
    ):
        if int(v) != v or v < lo:
            msg = f"{name} must be an integer >= {lo}, got {v!r}"
            raise ValueError(msg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    centers = rng.standard_normal((n_classes, n_features)) * separation
    y = rng.integers(0, n_classes, size=n_samples)
    X = centers[y] + rng.standard_normal((n_samples, n_features))
    return X, y.astype(np.int64)


def read_idx(path: str | Path) -> NDArray[Any]:
    """Read an IDX file (the MNIST format), raw or gzip-compressed.

    Parameters
    ----------
    path : str or Path
        File path; a ``.gz`` suffix (or gzip magic bytes) means gzip.

    Returns
    -------
    ndarray
        The array with the shape and dtype the header declares.

    Raises
    ------
    ValueError
        If the header is malformed or the payload length does not match it.
    """
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            msg = f"{p}: truncated or corrupt gzip file ({exc})"
            raise ValueError(msg) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        msg = f"{p}: not an IDX file (bad magic bytes)"
        raise ValueError(msg)
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in types or ndim < 1:
        msg = f"{p}: unsupported IDX type code {code:#x} or ndim {ndim}"
        raise ValueError(msg)
    header = 4 + 4 * ndim
    if len(raw) < header:
        msg = f"{p}: truncated IDX header"
        raise ValueError(msg)
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dt = np.dtype(types[code])
    expected = int(np.prod(shape)) * dt.itemsize
    if len(raw) - header != expected:
        msg = f"{p}: IDX payload has {len(raw) - header} bytes, header declares {expected}"
        raise ValueError(msg)
    return np.frombuffer(raw, dtype=dt, offset=header).reshape(shape).astype(dt.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (
        stem,
        f"{stem}.gz",
        stem.replace("-idx", ".idx"),
        f"{stem.replace('-idx', '.idx')}.gz",
    ):
        if (root / name).is_file():
            return root / name
    msg = f"path: no IDX file {stem}[.gz] in {root} (cyclad never downloads data)"
    raise FileNotFoundError(msg)


def _mnist(path: str | Path | None, name: str) -> tuple[NDArray[Any], ...]:
    if path is None:
        msg = (
            f"dataset {name!r} needs path= pointing to a directory with the IDX files "
            "(train-images-idx3-ubyte[.gz], ...); cyclad never downloads data"
        )
        raise ValueError(msg)
    root = Path(path)
    if not root.is_dir():
        msg = f"path: {root} is not a directory"
        raise FileNotFoundError(msg)
    out = []
    for part in ("train", "t10k"):
        X = read_idx(_find_idx(root, f"{part}-images-idx3-ubyte"))
        y = read_idx(_find_idx(root, f"{part}-labels-idx1-ubyte"))
        out += [X.reshape(X.shape[0], -1).astype(np.float64) / 255.0, y.astype(np.int64)]
    return tuple(out)


def load(
    name: str = "digits",
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    path: str | Path | None = None,
    n_samples: int = 2000,
    n_features: int = 20,
    n_classes: int = 4,
    separation: float = 1.0,
) -> Dataset:
    """Load a bundled (offline) dataset, split train/test, and standardise features.

    Parameters
    ----------
    name : str
        ``"digits"`` (default; 1797 8x8 images, 10 classes), ``"wine"``, ``"breast_cancer"``
        (scikit-learn, bundled with it), ``"synthetic"`` (a seeded Gaussian mixture), or
        ``"mnist"`` / ``"fashion_mnist"`` (from local IDX files under ``path``; the official
        train/test split is kept).
    test_fraction : float
        Fraction of samples held out for testing (ignored for MNIST-style data).
    seed : int
        Seed of the train/test split and of the synthetic data.
    standardize : bool
        Standardise features to zero mean and unit variance, fitted on the training part.
    path : str or Path, optional
        Directory holding the IDX files, for ``mnist`` / ``fashion_mnist``.
    n_samples, n_features, n_classes, separation
        Shape of the ``synthetic`` mixture: class centres are ``separation * N(0, I)``, each
        sample is its centre plus ``N(0, I)`` noise.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Unknown name, bad ``test_fraction``, missing ``path`` for IDX datasets.
    FileNotFoundError
        If the IDX files are not found under ``path``.
    ImportError
        If scikit-learn is needed but missing (install the ``train`` extra).
    """
    if name in ("digits", "wine", "breast_cancer"):
        try:
            from sklearn import datasets as skd
        except ImportError as exc:  # pragma: no cover - sklearn is in the train extra
            msg = f"dataset {name!r} needs scikit-learn: pip install 'cyclad[train]'"
            raise ImportError(msg) from exc
        bunch = getattr(skd, f"load_{name}")()
        X = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target, dtype=np.int64)
        Xtr, ytr, Xte, yte = _split(X, y, test_fraction, seed)
    elif name == "synthetic":
        X, y = _synthetic(n_samples, n_features, n_classes, separation, seed)
        Xtr, ytr, Xte, yte = _split(X, y, test_fraction, seed)
    elif name in ("mnist", "fashion_mnist"):
        Xtr, ytr, Xte, yte = _mnist(path, name)
    else:
        msg = f"dataset must be one of {', '.join(DATASETS)}, got {name!r}"
        raise ValueError(msg)
    if standardize:
        Xtr, Xte = _standardize(Xtr, Xte)
    return Dataset(Xtr, ytr, Xte, yte)


# --------------------------------------------------------------------------------------------
# partitions
# --------------------------------------------------------------------------------------------


def _sorted_by_label(
    idx: NDArray[np.int64], y: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.int64]:
    idx = rng.permutation(idx)
    return idx[np.argsort(y[idx], kind="stable")]


def partition(
    y: Any,
    n_subsets: int,
    kind: str = "iid",
    *,
    alpha: float = 1.0,
    gamma: float = 0.5,
    seed: int = 0,
) -> list[NDArray[np.int64]]:
    """Split sample indices ``0 .. len(y) - 1`` into ``n_subsets`` disjoint non-empty subsets.

    Parameters
    ----------
    y : array-like of int, shape (samples,)
        Class labels of the training samples.
    n_subsets : int
        Number of subsets ``N`` (>= 1, <= number of samples).
    kind : {"iid", "dirichlet", "extreme", "gamma"}
        ``iid``: a seeded random permutation cut into near-equal chunks.
        ``dirichlet``: per class, proportions over subsets drawn from ``Dirichlet(alpha)``
        (small ``alpha`` = strong label skew); draws that leave a subset empty are redrawn (up to
        100 times, deterministically from ``seed``) before giving up with an error.
        ``extreme``: samples sorted by label and cut into contiguous near-equal chunks, so each
        subset holds one or two labels.
        ``gamma``: a random fraction ``gamma`` of the samples is dealt out iid, the rest is sorted
        by label and cut into contiguous chunks; subset ``j`` gets its share of both
        (``gamma = 1`` is iid, ``gamma = 0`` is extreme).
    alpha : float
        Dirichlet concentration (> 0).
    gamma : float
        Similarity in [0, 1].
    seed : int
        Seed; the same arguments give the same subsets.

    Returns
    -------
    list of ndarray of int64
        ``n_subsets`` sorted index arrays, disjoint, covering every sample.

    Raises
    ------
    ValueError
        Unknown ``kind``, bad ``alpha`` / ``gamma``, or a subset would be empty (more subsets than
        samples, or a Dirichlet draw that keeps leaving subsets empty).
    """
    yy = np.asarray(y).astype(np.int64).ravel()
    n = yy.shape[0]
    if int(n_subsets) != n_subsets or n_subsets < 1:
        msg = f"n_subsets must be an integer >= 1, got {n_subsets!r}"
        raise ValueError(msg)
    if n_subsets > n:
        msg = f"n_subsets={n_subsets} exceeds the {n} training samples: some subset would be empty"
        raise ValueError(msg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    all_idx = np.arange(n, dtype=np.int64)
    if kind == "iid":
        parts = np.array_split(rng.permutation(all_idx), n_subsets)
    elif kind == "extreme":
        parts = np.array_split(_sorted_by_label(all_idx, yy, rng), n_subsets)
    elif kind == "gamma":
        if not 0.0 <= gamma <= 1.0:
            msg = f"gamma must be in [0, 1], got {gamma}"
            raise ValueError(msg)
        perm = rng.permutation(all_idx)
        n_iid = round(gamma * n)
        iid_parts = np.array_split(perm[:n_iid], n_subsets)
        rest = perm[n_iid:]
        sorted_parts = np.array_split(rest[np.argsort(yy[rest], kind="stable")], n_subsets)
        parts = [np.concatenate([a, b]) for a, b in zip(iid_parts, sorted_parts, strict=True)]
    elif kind == "dirichlet":
        if not (np.isfinite(alpha) and alpha > 0):
            msg = f"alpha must be > 0, got {alpha}"
            raise ValueError(msg)
        classes = np.unique(yy)
        for _ in range(100):
            buckets: list[list[NDArray[np.int64]]] = [[] for _ in range(n_subsets)]
            for c in classes:
                idx_c = rng.permutation(all_idx[yy == c])
                p = rng.dirichlet(np.full(n_subsets, float(alpha)))
                cuts = (np.cumsum(p)[:-1] * idx_c.shape[0]).astype(np.int64)
                for j, chunk in enumerate(np.split(idx_c, cuts)):
                    buckets[j].append(chunk)
            parts = [np.concatenate(b) for b in buckets]
            if all(p.shape[0] > 0 for p in parts):
                break
        else:
            msg = (
                f"dirichlet partition with alpha={alpha} left a subset empty in 100 draws; "
                "raise alpha or use fewer subsets"
            )
            raise ValueError(msg)
    else:
        msg = f"partition must be one of {', '.join(PARTITIONS)}, got {kind!r}"
        raise ValueError(msg)
    out = [np.sort(p).astype(np.int64) for p in parts]
    for j, part in enumerate(out):
        if part.shape[0] == 0:  # pragma: no cover - guarded above
            msg = f"partition {kind!r}: subset {j} is empty"
            raise ValueError(msg)
    return out


def label_histogram(
    y: Any, subsets: Sequence[NDArray[np.int64]], n_classes: int
) -> NDArray[np.int64]:
    """Counts of each label in each subset, shape ``(len(subsets), n_classes)``."""
    yy = np.asarray(y).astype(np.int64)
    return np.stack([np.bincount(yy[s], minlength=n_classes) for s in subsets])
