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
#include "cyclad/compress.hpp"
#include "cyclad/parallel.hpp"

namespace py = pybind11;
namespace k = cyclad::kernels;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// Kernels load elements through typed pointers: an array that is not aligned to its element
// size (a NumPy view into a bytes buffer at an odd offset) would be undefined behaviour. The
// Python layer copies such arrays once (_validation.as_c_aligned); this is the last line of
// defence for direct calls into _core.
template <typename A>
void require_aligned(const A& a, const char* name) {
  using V = typename A::value_type;
  if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(V) != 0) {
    throw std::invalid_argument(std::string(name) + " must be aligned to its element size (" +
                                std::to_string(alignof(V)) + " bytes); copy it first");
  }
}

template <typename T>
k::MatrixView<T> matrix_arg(const CArray<T>& x, const char* name) {
  require_aligned(x, name);
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

template <typename T>
CArray<T> median_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::median<T>(v, o, threads);
  }
  return out;
}

template <typename T>
k::MatrixView<T> trimmed_arg(const CArray<T>& x, std::int64_t f) {
  auto v = matrix_arg(x, "X");
  if (f < 0 || 2 * static_cast<std::uint64_t>(f) >= v.n) {
    throw std::invalid_argument("f must be in [0, " + std::to_string((v.n - 1) / 2) +
                                "] (n > 2f) for n=" + std::to_string(v.n) +
                                ", got f=" + std::to_string(f));
  }
  return v;
}

template <typename T>
CArray<T> trimmed_mean_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = trimmed_arg(x, f);
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::trimmed_mean<T>(v, static_cast<std::size_t>(f), o, threads);
  }
  return out;
}

template <typename T>
CArray<T> meamed_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = trimmed_arg(x, f);
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::meamed<T>(v, static_cast<std::size_t>(f), o, threads);
  }
  return out;
}

// --- distance-based rules and pre-aggregations ---------------------------------------------

std::size_t count_arg(std::int64_t v, const char* name) {
  if (v < 0) {
    throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

template <typename T>
CArray<T> rows_out(const k::MatrixView<T>& v, std::size_t rows) {
  return CArray<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(v.d)});
}

template <typename T>
py::tuple pairwise_sq_distances_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  auto n = static_cast<py::ssize_t>(v.n);
  CArray<double> dist({n, n});
  py::array_t<bool> bad(n);
  std::vector<unsigned char> b(v.n);
  double* d = dist.mutable_data();
  {
    py::gil_scoped_release release;
    k::pairwise_sq_distances<T>(v, d, b.data(), threads);
  }
  bool* pb = bad.mutable_data();
  for (std::size_t i = 0; i < v.n; ++i) pb[i] = b[i] != 0;
  return py::make_tuple(dist, bad);
}

template <typename T>
CArray<T> krum_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::krum<T>(v, uf, o, threads);
  }
  return out;
}

template <typename T>
CArray<T> multi_krum_impl(const CArray<T>& x, std::int64_t f, std::int64_t m, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f"), um = count_arg(m, "m");
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::multi_krum<T>(v, uf, um, o, threads);
  }
  return out;
}

template <typename T>
py::tuple geometric_median_impl(const CArray<T>& x, double eps, std::int64_t max_iter,
                                double tol, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t mi = count_arg(max_iter, "max_iter");
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  std::size_t iters = 0;
  {
    py::gil_scoped_release release;
    iters = k::geometric_median<T>(v, eps, mi, tol, o, threads);
  }
  return py::make_tuple(out, iters);
}

template <typename T>
CArray<T> centered_clipping_impl(const CArray<T>& x, double tau, std::int64_t iters,
                                 const std::optional<CArray<double>>& center, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t it = count_arg(iters, "iters");
  const double* c = nullptr;
  if (center) {
    if (center->ndim() != 1 || static_cast<std::size_t>(center->shape(0)) != v.d) {
      throw std::invalid_argument("center must have shape (D,) = (" + std::to_string(v.d) +
                                  ",)");
    }
    require_aligned(*center, "center");
    c = center->data();
  }
  CArray<T> out(static_cast<py::ssize_t>(v.d));
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::centered_clipping<T>(v, tau, it, c, o, threads);
  }
  return out;
}

template <typename T>
CArray<T> nnm_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  CArray<T> out = rows_out(v, v.n);
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::nnm<T>(v, uf, o, threads);
  }
  return out;
}

template <typename T>
CArray<T> bucketing_impl(const CArray<T>& x, const CArray<std::int64_t>& perm, std::int64_t s,
                         int threads) {
  auto v = matrix_arg(x, "X");
  require_aligned(perm, "perm");
  std::size_t us = count_arg(s, "s");
  if (us < 1) throw std::invalid_argument("s must be >= 1");
  if (perm.ndim() != 1 || static_cast<std::size_t>(perm.shape(0)) != v.n) {
    throw std::invalid_argument("perm must have shape (n,) = (" + std::to_string(v.n) + ",)");
  }
  CArray<T> out = rows_out(v, (v.n + us - 1) / us);
  T* o = out.mutable_data();
  const std::int64_t* p = perm.data();
  {
    py::gil_scoped_release release;
    k::bucketing<T>(v, p, us, o, threads);
  }
  return out;
}

template <typename T>
CArray<T> clip_impl(const CArray<T>& x, double tau, int threads) {
  auto v = matrix_arg(x, "X");
  CArray<T> out = rows_out(v, v.n);
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::clip<T>(v, tau, o, threads);
  }
  return out;
}

template <typename T>
CArray<T> arc_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  CArray<T> out = rows_out(v, v.n);
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    k::arc<T>(v, uf, o, threads);
  }
  return out;
}

void bind_aggregate_coordinatewise(py::module_& m) {
  m.def("mean", &mean_impl<double>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise mean.");
  m.def("mean", &mean_impl<float>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise mean.");
  m.def("median", &median_impl<double>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise median.");
  m.def("median", &median_impl<float>, py::arg("x").noconvert(), py::arg("threads") = 0,
        "Coordinate-wise median.");
  m.def("trimmed_mean", &trimmed_mean_impl<double>, py::arg("x").noconvert(), py::arg("f"),
        py::arg("threads") = 0, "Coordinate-wise trimmed mean.");
  m.def("trimmed_mean", &trimmed_mean_impl<float>, py::arg("x").noconvert(), py::arg("f"),
        py::arg("threads") = 0, "Coordinate-wise trimmed mean.");
  m.def("meamed", &meamed_impl<double>, py::arg("x").noconvert(), py::arg("f"),
        py::arg("threads") = 0, "Coordinate-wise mean around the median.");
  m.def("meamed", &meamed_impl<float>, py::arg("x").noconvert(), py::arg("f"),
        py::arg("threads") = 0, "Coordinate-wise mean around the median.");
}

template <typename T>
void bind_aggregate_distance_t(py::module_& m) {
  m.def("pairwise_sq_distances", &pairwise_sq_distances_impl<T>, py::arg("x").noconvert(),
        py::arg("threads") = 0, "Pairwise squared distances (n, n) and non-finite row flags.");
  m.def("krum", &krum_impl<T>, py::arg("x").noconvert(), py::arg("f"), py::arg("threads") = 0,
        "Krum.");
  m.def("multi_krum", &multi_krum_impl<T>, py::arg("x").noconvert(), py::arg("f"), py::arg("m"),
        py::arg("threads") = 0, "Multi-Krum.");
  m.def("geometric_median", &geometric_median_impl<T>, py::arg("x").noconvert(),
        py::arg("eps"), py::arg("max_iter"), py::arg("tol"), py::arg("threads") = 0,
        "Smoothed Weiszfeld geometric median; returns (z, iterations).");
  m.def("centered_clipping", &centered_clipping_impl<T>, py::arg("x").noconvert(),
        py::arg("tau"), py::arg("iters"), py::arg("center").noconvert().none(true),
        py::arg("threads") = 0, "Stateless centered clipping.");
  m.def("nnm", &nnm_impl<T>, py::arg("x").noconvert(), py::arg("f"), py::arg("threads") = 0,
        "Nearest-neighbour mixing.");
  m.def("bucketing", &bucketing_impl<T>, py::arg("x").noconvert(), py::arg("perm").noconvert(),
        py::arg("s"), py::arg("threads") = 0, "Bucketing with a given row permutation.");
  m.def("clip", &clip_impl<T>, py::arg("x").noconvert(), py::arg("tau"), py::arg("threads") = 0,
        "Static norm clipping of rows.");
  m.def("arc", &arc_impl<T>, py::arg("x").noconvert(), py::arg("f"), py::arg("threads") = 0,
        "Adaptive robust clipping.");
}

void bind_aggregate_distance(py::module_& m) {
  bind_aggregate_distance_t<double>(m);
  bind_aggregate_distance_t<float>(m);
}

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
  require_aligned(assignment, "assignment");
  require_aligned(weights, "weights");
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

k::WireSpec wire_spec(int kind, int vcode, std::uint64_t dim, std::uint64_t param,
                      std::uint64_t bucket, bool shared, std::uint64_t seed, bool scaled,
                      bool float64) {
  if (kind < 0 || kind > 4) {
    throw std::invalid_argument("kind must be 0..4, got " + std::to_string(kind));
  }
  if (vcode < 1 || vcode > 3) {
    throw std::invalid_argument("value dtype code must be 1..3, got " + std::to_string(vcode));
  }
  k::WireSpec spec;
  spec.kind = static_cast<k::Kind>(kind);
  spec.vcode = static_cast<k::ValueCode>(vcode);
  spec.dense = float64 ? k::DenseCode::f64 : k::DenseCode::f32;
  spec.dim = dim;
  spec.param = param;
  spec.bucket = bucket;
  spec.shared = shared;
  spec.seed = seed;
  spec.scaled = scaled;
  return spec;
}

using Bytes = py::array_t<std::uint8_t, py::array::c_style>;

const unsigned char* bytes_arg(const Bytes& b) {
  if (b.ndim() != 1) throw std::invalid_argument("payload must be a 1-D uint8 array");
  return reinterpret_cast<const unsigned char*>(b.data());
}

template <typename T>
Bytes compress_impl(const CArray<T>& x, int kind, int vcode, std::uint64_t param,
                    std::uint64_t bucket, bool shared, std::uint64_t seed, bool scaled,
                    int threads) {
  require_aligned(x, "x");
  if (x.ndim() != 1 || x.shape(0) < 1) {
    throw std::invalid_argument("x must be a non-empty 1-D vector");
  }
  auto spec = wire_spec(kind, vcode, static_cast<std::uint64_t>(x.shape(0)), param, bucket,
                        shared, seed, scaled, std::is_same<T, double>::value);
  const std::uint64_t size = k::payload_size(spec);
  Bytes out(static_cast<py::ssize_t>(size));
  auto* o = reinterpret_cast<unsigned char*>(out.mutable_data());
  const T* px = x.data();
  {
    py::gil_scoped_release release;
    k::compress<T>(spec, px, o, size, threads);
  }
  return out;
}

py::array decompress_impl(const Bytes& payload, int kind, int vcode, std::uint64_t dim,
                          std::uint64_t param, std::uint64_t bucket, bool shared,
                          std::uint64_t seed, bool float64, int threads) {
  auto spec = wire_spec(kind, vcode, dim, param, bucket, shared, seed, true, float64);
  const unsigned char* p = bytes_arg(payload);
  const auto size = static_cast<std::uint64_t>(payload.shape(0));
  // Validate before allocating D elements: a malformed header never triggers the allocation.
  // (Bounding D itself is the caller's job: cyclad.compression requires dim= or max_dim=.)
  {
    py::gil_scoped_release release;
    k::validate_payload(spec, p, size, threads);
  }
  auto run = [&](auto* tag) -> py::array {
    using T = std::remove_pointer_t<decltype(tag)>;
    CArray<T> out(static_cast<py::ssize_t>(dim));
    T* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      k::decompress<T>(spec, p, size, o, threads);
    }
    return std::move(out);
  };
  return float64 ? run(static_cast<double*>(nullptr)) : run(static_cast<float*>(nullptr));
}

void validate_impl(const Bytes& payload, int kind, int vcode, std::uint64_t dim,
                   std::uint64_t param, std::uint64_t bucket, bool shared, bool float64,
                   int threads) {
  auto spec = wire_spec(kind, vcode, dim, param, bucket, shared, 0, true, float64);
  const unsigned char* p = bytes_arg(payload);
  const auto size = static_cast<std::uint64_t>(payload.shape(0));
  py::gil_scoped_release release;
  k::validate_payload(spec, p, size, threads);
}

std::uint64_t payload_size_impl(int kind, int vcode, std::uint64_t dim, std::uint64_t param,
                                std::uint64_t bucket, bool shared) {
  return k::payload_size(wire_spec(kind, vcode, dim, param, bucket, shared, 0, true, true));
}

template <typename T>
py::array_t<std::int64_t> topk_indices_impl(const CArray<T>& x, std::uint64_t kk, int threads) {
  require_aligned(x, "x");
  if (x.ndim() != 1 || x.shape(0) < 1) {
    throw std::invalid_argument("x must be a non-empty 1-D vector");
  }
  const auto D = static_cast<std::size_t>(x.shape(0));
  if (kk < 1 || kk > D) throw std::invalid_argument("k must be in [1, D]");
  std::vector<std::uint32_t> idx(static_cast<std::size_t>(kk));
  const T* px = x.data();
  {
    py::gil_scoped_release release;
    k::topk_select<T>(px, D, idx.size(), idx.data(), threads);
  }
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(kk));
  std::copy(idx.begin(), idx.end(), out.mutable_data());
  return out;
}

py::array_t<std::int64_t> randk_indices_impl(std::uint64_t dim, std::uint64_t kk,
                                             std::uint64_t seed) {
  if (dim < 1 || dim > k::kMaxDim) throw std::invalid_argument("D must be in [1, 2^32 - 1]");
  if (kk < 1 || kk > dim) throw std::invalid_argument("k must be in [1, D]");
  std::vector<std::uint32_t> idx(static_cast<std::size_t>(kk));
  {
    py::gil_scoped_release release;
    k::randk_select(seed, static_cast<std::size_t>(dim), idx.size(), idx.data());
  }
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(kk));
  std::copy(idx.begin(), idx.end(), out.mutable_data());
  return out;
}

void bind_compress(py::module_& m) {
  m.def("wire_compress", &compress_impl<double>, py::arg("x").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("seed"), py::arg("scaled"), py::arg("threads") = 0,
        "Compress a 1-D vector into a wire payload (uint8 array).");
  m.def("wire_compress", &compress_impl<float>, py::arg("x").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("seed"), py::arg("scaled"), py::arg("threads") = 0,
        "Compress a 1-D vector into a wire payload (uint8 array).");
  m.def("wire_decompress", &decompress_impl, py::arg("payload").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("seed"), py::arg("float64"), py::arg("threads") = 0,
        "Validate and decompress a wire payload into a dense vector.");
  m.def("wire_validate", &validate_impl, py::arg("payload").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("float64"), py::arg("threads") = 0,
        "Validate a wire payload against its header (ValueError).");
  m.def("wire_payload_size", &payload_size_impl, py::arg("kind"), py::arg("vcode"),
        py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        "Exact payload size in bytes implied by a header (ValueError if out of range).");
  m.def("topk_indices", &topk_indices_impl<double>, py::arg("x").noconvert(), py::arg("k"),
        py::arg("threads") = 0, "Ascending indices of the k largest |x_i| (ties: lower index).");
  m.def("topk_indices", &topk_indices_impl<float>, py::arg("x").noconvert(), py::arg("k"),
        py::arg("threads") = 0, "Ascending indices of the k largest |x_i| (ties: lower index).");
  m.def("randk_indices", &randk_indices_impl, py::arg("dim"), py::arg("k"), py::arg("seed"),
        "Ascending rand-k mask of (seed, D, k).");
}

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
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(std::uint64_t) != 0) {
    throw std::invalid_argument("read_pass needs an 8-byte aligned buffer");
  }
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
  m.def("isa_path", [] { return std::string(k::isa_path()); },
        "The ISA clone the hot kernels run: x86-64-v4, x86-64-v3 or baseline.");
  m.def("hardware_threads", [] { return k::resolve_threads(0); },
        "Number of threads used when threads=None.");
  bind_aggregate(m);
  bind_coding(m);
  bind_compress(m);
  bind_bench(m);
}
