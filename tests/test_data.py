"""Datasets (validation, loading, IDX files) and partitions."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from cyclad import data


def test_load_digits_default_split_and_standardize() -> None:
    ds = data.load()
    assert ds.n_features == 64
    assert ds.n_classes == 10
    n = ds.X_train.shape[0] + ds.X_test.shape[0]
    assert n == 1797
    assert ds.X_test.shape[0] == round(0.25 * 1797)
    mu = ds.X_train.mean(axis=0)
    np.testing.assert_allclose(mu, 0, atol=1e-10)
    ds2 = data.load("digits", seed=0)
    np.testing.assert_array_equal(ds.X_train, ds2.X_train)
    ds3 = data.load("digits", seed=1)
    assert not np.array_equal(ds.y_train, ds3.y_train)


@pytest.mark.parametrize(("name", "F", "C"), [("wine", 13, 3), ("breast_cancer", 30, 2)])
def test_load_other_sklearn(name, F, C) -> None:
    ds = data.load(name, standardize=False)
    assert ds.n_features == F
    assert ds.n_classes == C


def test_synthetic_is_seeded() -> None:
    a = data.load("synthetic", n_samples=300, n_features=5, n_classes=3, seed=4)
    b = data.load("synthetic", n_samples=300, n_features=5, n_classes=3, seed=4)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.n_features == 5
    assert a.n_classes == 3
    assert a.X_train.shape[0] + a.X_test.shape[0] == 300


def _write_idx(path, arr: np.ndarray, code: int, gz: bool) -> None:
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_local_idx_files(tmp_path, gz) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for part, m in (("train", 12), ("t10k", 5)):
        imgs = rng.integers(0, 256, size=(m, 4, 4), dtype=np.uint8)
        labels = rng.integers(0, 10, size=m, dtype=np.uint8)
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte{suffix}", imgs, 0x08, gz)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte{suffix}", labels, 0x08, gz)
    ds = data.load("mnist", path=tmp_path, standardize=False)
    assert ds.X_train.shape == (12, 16)
    assert ds.X_test.shape == (5, 16)
    assert ds.X_train.max() <= 1.0
    back = data.read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}")
    np.testing.assert_array_equal(back, ds.y_train)


def test_idx_errors(tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"ab")
    with pytest.raises(ValueError, match="payload has 2 bytes"):
        data.read_idx(short)
    with pytest.raises(ValueError, match="needs path="):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.load("fashion_mnist", path=tmp_path)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (
            (np.zeros(5), np.zeros(5, int), np.zeros((2, 1)), np.zeros(2, int)),
            ValueError,
            "X_train must be 2-D",
        ),
        (
            (np.zeros((5, 2)), np.zeros(4, int), np.zeros((2, 2)), np.zeros(2, int)),
            ValueError,
            "y_train has 4 labels but X_train has 5",
        ),
        (
            (np.zeros((5, 2)), np.zeros(5, int), np.zeros((2, 3)), np.zeros(2, int)),
            ValueError,
            "X_test has 3 features",
        ),
        (
            (np.full((5, 2), np.nan), np.zeros(5, int), np.zeros((2, 2)), np.zeros(2, int)),
            ValueError,
            "X_train must hold finite",
        ),
        (
            (np.zeros((5, 2)), np.full(5, 0.5), np.zeros((2, 2)), np.zeros(2, int)),
            ValueError,
            "y_train must hold integer",
        ),
        (
            (np.zeros((5, 2)), np.zeros(5, int), np.zeros((2, 2)), np.array(["a", "b"])),
            TypeError,
            "y_test must hold integer",
        ),
        (
            (np.zeros((0, 2)), np.zeros(0, int), np.zeros((2, 2)), np.zeros(2, int)),
            ValueError,
            "X_train must not be empty",
        ),
        (
            (np.zeros((5, 2)), -np.ones(5, int), np.zeros((2, 2)), np.zeros(2, int)),
            ValueError,
            "non-negative",
        ),
    ],
)
def test_dataset_validation(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        data.Dataset(*args)


def test_dataset_accepts_float_integer_labels() -> None:
    ds = data.Dataset(np.zeros((3, 2)), np.array([0.0, 1.0, 2.0]), np.zeros((1, 2)), [1])
    assert ds.y_train.dtype == np.int64
    assert ds.n_classes == 3


def test_load_errors() -> None:
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="test_fraction"):
        data.load("digits", test_fraction=1.5)


# ---------------------------------------------------------------------------------- partitions

Y = np.repeat(np.arange(10), 30)  # 300 samples, 10 balanced classes


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "extreme", "gamma"])
@pytest.mark.parametrize("N", [1, 7, 20])
def test_partition_is_a_partition(kind, N) -> None:
    parts = data.partition(Y, N, kind, alpha=0.5, gamma=0.3, seed=2)
    assert len(parts) == N
    allidx = np.concatenate(parts)
    assert allidx.shape[0] == Y.shape[0]
    np.testing.assert_array_equal(np.sort(allidx), np.arange(Y.shape[0]))
    assert all(p.shape[0] > 0 for p in parts)
    again = data.partition(Y, N, kind, alpha=0.5, gamma=0.3, seed=2)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)


def _labels_per_subset(parts) -> np.ndarray:
    return np.array([np.unique(Y[p]).size for p in parts])


def test_extreme_is_label_sorted() -> None:
    parts = data.partition(Y, 20, "extreme")
    assert _labels_per_subset(parts).max() == 1  # 300/20 = 15 samples each, classes of 30
    parts = data.partition(Y, 7, "extreme")
    assert _labels_per_subset(parts).max() <= 3
    sizes = [p.shape[0] for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_has_mixed_labels_and_equal_sizes() -> None:
    parts = data.partition(Y, 10, "iid")
    assert _labels_per_subset(parts).min() >= 5
    assert {p.shape[0] for p in parts} == {30}


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    def skew(alpha: float) -> float:
        hist = data.label_histogram(Y, data.partition(Y, 10, "dirichlet", alpha=alpha, seed=1), 10)
        frac = hist / hist.sum(axis=1, keepdims=True)
        return float(frac.max(axis=1).mean())

    assert skew(0.1) > skew(100.0) + 0.2
    assert skew(100.0) < 0.3


def test_gamma_interpolates_between_iid_and_extreme() -> None:
    ext = _labels_per_subset(data.partition(Y, 20, "gamma", gamma=0.0))
    assert ext.max() == 1
    mixed = _labels_per_subset(data.partition(Y, 20, "gamma", gamma=0.5))
    assert mixed.mean() > 3
    iid = _labels_per_subset(data.partition(Y, 20, "gamma", gamma=1.0))
    assert iid.mean() > mixed.mean()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_subsets": 301}, "exceeds the 300 training samples"),
        ({"n_subsets": 0}, "n_subsets must be an integer >= 1"),
        ({"n_subsets": 3, "kind": "zipf"}, "partition must be one of"),
        ({"n_subsets": 3, "kind": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
        ({"n_subsets": 3, "kind": "gamma", "gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"n_subsets": 290, "kind": "dirichlet", "alpha": 0.01}, "left a subset empty"),
    ],
)
def test_partition_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        data.partition(Y, **kwargs)
