"""The kernel/binding split: kernels never include pybind11 or Python.h."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "csrc" / "cyclad").glob("*.hpp"))


def test_kernel_headers_exist() -> None:
    names = {p.name for p in KERNELS}
    assert {
        "coordinatewise.hpp",  # mean, median, trimmed mean, meamed
        "distance.hpp",  # Krum, geometric median, NNM, clipping, ...
        "wire.hpp",  # header, sizes, value codecs, bit packing
        "select.hpp",  # top-k, rand-k
        "quantize.hpp",  # QSGD, sign
        "codec.hpp",  # compress / validate / decode per kind
        "coding.hpp",
        "parallel.hpp",
        "common.hpp",
    } <= names
    assert not {"aggregate.hpp", "aggregate_distance.hpp", "compress.hpp"} & names


def test_old_header_names_are_not_referenced() -> None:
    paths = [*(ROOT / "csrc").rglob("*.[ch]pp"), *(ROOT / "tests" / "native").glob("*"),
             ROOT / "CMakeLists.txt", ROOT / "README.md", ROOT / "tests" / "fuzz" / "README.md"]
    for path in paths:
        text = path.read_text()
        for old in ("aggregate.hpp", "aggregate_distance.hpp", "compress.hpp"):
            assert old not in text, f"{path.relative_to(ROOT)} still names {old}"


def test_batcher_network_is_generated_once() -> None:
    # The comparator condition of Batcher's odd-even merge network: one generator, used at run
    # time (batcher_network) and at compile time (StaticNetwork).
    rule = "(i + j) / (2 * p) == (i + j + k) / (2 * p)"
    hits = [p.name for p in (ROOT / "csrc").rglob("*.[ch]pp") for _ in range(p.read_text().count(rule))]
    assert hits == ["coordinatewise.hpp"]


def test_bindings_includes_are_at_the_top() -> None:
    lines = (ROOT / "csrc" / "bindings.cpp").read_text().splitlines()
    code = [i for i, line in enumerate(lines) if line and not line.startswith(("//", "#include"))]
    includes = [i for i, line in enumerate(lines) if line.startswith("#include")]
    assert includes and max(includes) < min(code)


def test_wire_format_is_documented_once() -> None:
    doc = ROOT / "docs" / "wire-format.md"
    assert doc.is_file()
    assert "docs/wire-format.md" in (ROOT / "csrc" / "cyclad" / "wire.hpp").read_text()
    py = (ROOT / "python" / "cyclad" / "compression.py").read_text()
    assert "docs/wire-format.md" in py
    # the header is packed and parsed in C++ only
    assert "import struct" not in py


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernels_free_of_python(path: Path) -> None:
    text = path.read_text()
    assert "pybind11" not in text
    assert "Python.h" not in text


def test_only_one_binding_file() -> None:
    users = [p for p in (ROOT / "csrc").rglob("*") if p.is_file() and "#include <pybind11" in p.read_text()]
    assert [p.name for p in users] == ["bindings.cpp"]
