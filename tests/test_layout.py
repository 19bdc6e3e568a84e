"""The kernel/binding split: kernels never include pybind11 or Python.h."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "csrc" / "cyclad").glob("*.hpp"))


def test_kernel_headers_exist() -> None:
    names = {p.name for p in KERNELS}
    assert {"aggregate.hpp", "parallel.hpp", "common.hpp"} <= names


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernels_free_of_python(path: Path) -> None:
    text = path.read_text()
    assert "pybind11" not in text
    assert "Python.h" not in text


def test_only_one_binding_file() -> None:
    users = [p for p in (ROOT / "csrc").rglob("*") if p.is_file() and "#include <pybind11" in p.read_text()]
    assert [p.name for p in users] == ["bindings.cpp"]
