// SPDX-License-Identifier: Apache-2.0
// The only pybind11 translation unit: shape checks, output allocation, dtype dispatch and GIL
// release around the kernels in csrc/cyclad/. Argument validation with friendly messages lives
// in python/cyclad/_validation.py; the checks here are the last line of defence.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "cyclad/aggregate.hpp"
#include "cyclad/bench.hpp"
#include "cyclad/parallel.hpp"

namespace py = pybind11;
namespace k = cyclad::kernels;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
k::MatrixView<T> matrix_arg(const CArray<T>& x, const char* name) {
  if (x.ndim() != 2) {
    throw std::invalid_argument(std::string(name) + " must be 2-D (n, D), got ndim=" +
                                std::to_string(x.ndim()));
  }
  return {x.data(), static_cast<std::size_t>(x.shape(0)), static_cast<std::size_t>(x.shape(1))};
}

// ============================================================================================
// aggregators
// ============================================================================================

template <typename T>
CArray<T> mean_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::mean<T>(v, o, threads);
  }
  return out;
}

// --- coordinate-wise rules (median, trimmed mean, meamed) ---------------------------------

// --- distance-based rules and pre-aggregations ---------------------------------------------

void bind_aggregate_coordinatewise(py::module_& m) {
  m.def("mean", &mean_impl<double>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise mean.");
  m.def("mean", &mean_impl<float>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise mean.");
}

void bind_aggregate_distance(py::module_& /*m*/) {}

void bind_aggregate(py::module_& m) {
  bind_aggregate_coordinatewise(m);
  bind_aggregate_distance(m);
}

// ============================================================================================
// coding
// ============================================================================================

}  // namespace
// Included here (at global scope) rather than at the top so the coding section stays
// self-contained for merges.
#include "cyclad/coding.hpp"
namespace {

template <typename T>
CArray<T> encode_impl(const CArray<T>& G, const CArray<std::int64_t>& assignment,
                      const CArray<T>& weights, int threads) {
  auto g = matrix_arg(G, "G");
  if (assignment.ndim() != 2) {
    throw std::invalid_argument("assignment must be 2-D (n, d), got ndim=" +
                                std::to_string(assignment.ndim()));
  }
  const auto n = static_cast<std::size_t>(assignment.shape(0));
  const auto d = static_cast<std::size_t>(assignment.shape(1));
  const bool per_row = weights.ndim() == 2;
  const bool shape_ok =
      per_row ? (static_cast<std::size_t>(weights.shape(0)) == n &&
                 static_cast<std::size_t>(weights.shape(1)) == d)
              : (weights.ndim() == 1 && static_cast<std::size_t>(weights.shape(0)) == d);
  if (!shape_ok) {
    throw std::invalid_argument("weights must have shape (n, d) = (" + std::to_string(n) + ", " +
                                std::to_string(d) + ") or (d,) = (" + std::to_string(d) + ",)");
  }
  CArray<T> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(g.d)});
  const std::int64_t* a = assignment.data();
  const T* w = weights.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::encode<T>(g, a, n, d, w, per_row, o, threads);
  }
  return out;
}

void bind_coding(py::module_& m) {
  m.def("encode", &encode_impl<double>, py::arg("G").noconvert(),
        py::arg("assignment").noconvert(), py::arg("weights").noconvert(),
        py::arg("threads") = 0, "Cyclic encoding z_i = sum_j w_ij G[a_ij].");
  m.def("encode", &encode_impl<float>, py::arg("G").noconvert(),
        py::arg("assignment").noconvert(), py::arg("weights").noconvert(),
        py::arg("threads") = 0, "Cyclic encoding z_i = sum_j w_ij G[a_ij].");
}

// ============================================================================================
// compression
// ============================================================================================

void bind_compress(py::module_& /*m*/) {}

// ============================================================================================
// bench helpers
// ============================================================================================

std::uint64_t read_pass_impl(const py::buffer& b, int threads) {
  py::buffer_info info = b.request();
  if (info.ndim >= 1) {
    // Contiguity check: the read pass must read exactly the bytes it is given.
    py::ssize_t expect = info.itemsize;
    for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
      if (info.strides[static_cast<std::size_t>(i)] != expect) {
        throw std::invalid_argument("read_pass needs a C-contiguous buffer");
      }
      expect *= info.shape[static_cast<std::size_t>(i)];
    }
  }
  auto nbytes = static_cast<std::size_t>(info.size * info.itemsize);
  const auto* p = static_cast<const unsigned char*>(info.ptr);
  py::gil_scoped_release release;
  return k::read_pass(p, nbytes, threads);
}

void bind_bench(py::module_& m) {
  m.def("read_pass", &read_pass_impl, py::arg("buffer"), py::arg("threads") = 0,
        "Multi-threaded read of a contiguous buffer; returns an XOR checksum.");
}

}  // namespace

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
  m.doc() = "cyclad C++ kernels (private; use the cyclad.* modules)";
  m.attr("_has_openmp") = k::has_openmp();
  m.def("hardware_threads", [] { return k::resolve_threads(0); },
        "Number of threads used when threads=None.");
  bind_aggregate(m);
  bind_coding(m);
  bind_compress(m);
  bind_bench(m);
}
