"""The kernel/binding split: kernels never include pybind11 or Python.h."""

from __future__ import annotations

import re
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
    paths = [
        *(ROOT / "csrc").rglob("*.[ch]pp"),
        *(ROOT / "tests" / "native").glob("*"),
        ROOT / "CMakeLists.txt",
        ROOT / "README.md",
        ROOT / "tests" / "fuzz" / "README.md",
    ]
    for path in paths:
        text = path.read_text()
        for old in ("aggregate.hpp", "aggregate_distance.hpp", "compress.hpp"):
            assert old not in text, f"{path.relative_to(ROOT)} still names {old}"


def test_batcher_network_is_generated_once() -> None:
    # The comparator condition of Batcher's odd-even merge network: one generator, used at run
    # time (batcher_network) and at compile time (StaticNetwork).
    rule = "(i + j) / (2 * p) == (i + j + k) / (2 * p)"
    hits = [
        p.name for p in (ROOT / "csrc").rglob("*.[ch]pp") for _ in range(p.read_text().count(rule))
    ]
    assert hits == ["coordinatewise.hpp"]


def test_bindings_includes_are_at_the_top() -> None:
    lines = (ROOT / "csrc" / "bindings.cpp").read_text().splitlines()
    code = [i for i, line in enumerate(lines) if line and not line.startswith(("//", "#include"))]
    includes = [i for i, line in enumerate(lines) if line.startswith("#include")]
    assert includes
    assert max(includes) < min(code)


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
    users = [
        p
        for p in (ROOT / "csrc").rglob("*")
        if p.is_file() and "#include <pybind11" in p.read_text()
    ]
    assert [p.name for p in users] == ["bindings.cpp"]


def test_kernels_are_compiled_outside_the_binding_unit() -> None:
    # Every kernel template that bindings.cpp calls is declared `extern template` for float and
    # double in instances.hpp, so it is compiled in its unit of csrc/instances/ (in parallel
    # with the bindings), not in bindings.cpp; each list is instantiated by exactly one unit.
    text = (ROOT / "csrc" / "bindings.cpp").read_text()
    called = set(re.findall(r"\bk::(\w+)<T>\(", text))
    assert {"median", "krum", "encode", "compress", "decode"} <= called
    header = (ROOT / "csrc" / "instances" / "instances.hpp").read_text()
    declared = set(re.findall(r"EXTERN template [\w:]+ (\w+)<T>\(", header))
    assert called <= declared
    lists = re.findall(r"#define (CYCLAD_\w+_KERNELS)\(EXTERN, T\)", header)
    units = sorted((ROOT / "csrc" / "instances").glob("*.cpp"))
    for name in lists:
        assert header.count(f"{name}(extern, float)") == 1
        assert header.count(f"{name}(extern, double)") == 1
        defining = [p.name for p in units if f"{name}(, float)" in p.read_text()]
        assert len(defining) == 1, (name, defining)
        assert f"{name}(, double)" in (ROOT / "csrc" / "instances" / defining[0]).read_text()


FLOAT_OPS = [
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "pairwise_sq_distances",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clipping",
    "nnm",
    "bucketing",
    "clip",
    "arc",
    "weighted_mean",
    "closest",
    "closest_coordinates",
    "bulyan",
    "encode",
    "wire_compress",
    "topk_indices",
]


@pytest.mark.parametrize("name", FLOAT_OPS)
def test_each_float_op_has_a_float64_then_a_float32_overload(name: str) -> None:
    from cyclad import _core

    doc = getattr(_core, name).__doc__
    overloads = [line for line in doc.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert len(overloads) == 2, doc
    first = [re.search(r"\(\w+: numpy\.typing\.NDArray\[numpy\.(\w+)\]", o) for o in overloads]
    assert [m.group(1) if m else None for m in first] == ["float64", "float32"]
    for line in overloads:  # the keyword and default of the Python API
        assert re.search(r"threads: [^=]* = 0\)", line), line


def test_bindings_register_each_float_op_once() -> None:
    text = (ROOT / "csrc" / "bindings.cpp").read_text()
    for name in FLOAT_OPS:
        assert text.count(f'"{name}"') == 1, name
