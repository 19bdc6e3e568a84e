// SPDX-License-Identifier: Apache-2.0
// The only pybind11 translation unit: shape checks, output allocation, dtype dispatch and GIL
// release around the kernels in csrc/cyclad/. Argument validation with friendly messages lives
// in python/cyclad/_validation.py; the checks here are the last line of defence. The kernels
// themselves are compiled in the units of csrc/instances/ (instances.hpp), in parallel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cyclad/codec.hpp"
#include "cyclad/coding.hpp"
#include "cyclad/coordinatewise.hpp"
#include "cyclad/distance.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/stream.hpp"
#include "cyclad/vote.hpp"
#include "cyclad/subset.hpp"
#include "instances/instances.hpp"

namespace py = pybind11;
namespace k = cyclad::kernels;
namespace c = cyclad::compiled;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// --- registration ---------------------------------------------------------------------------

template <typename T>
struct Tag {
  using type = T;
};

/// Register one op for float64 and float32 under one name: `pick(Tag<T>{})` returns the
/// `<name>_impl<T>` to bind, `extra` are the py::arg / docstring items of both overloads. The
/// double overload goes first: array arguments are `.noconvert()`, so pybind11 takes the
/// overload whose dtype matches exactly and never narrows a float64 array into the float one.
template <typename Pick, typename... Extra>
void def_float(py::module_& m, const char* name, Pick pick, const Extra&... extra) {
  m.def(name, pick(Tag<double>{}), extra...);
  m.def(name, pick(Tag<float>{}), extra...);
}

// `&fn<T>` for the T of a Tag: the `pick` argument of def_float.
#define CYCLAD_IMPL(fn) [](auto tag) { return &fn<typename decltype(tag)::type>; }

/// Run `kernel(out.mutable_data())` with the GIL released and return `out` (allocated by the
/// caller while it holds the GIL).
template <typename A, typename Kernel>
A released(A out, Kernel&& kernel) {
  auto* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    kernel(o);
  }
  return out;
}

// --- argument checks ------------------------------------------------------------------------

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

std::size_t count_arg(std::int64_t v, const char* name) {
  if (v < 0) {
    throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(v));
  }
  return static_cast<std::size_t>(v);
}

template <typename T>
CArray<T> vector_out(std::size_t d) {
  return CArray<T>(static_cast<py::ssize_t>(d));
}

template <typename T>
CArray<T> rows_out(const k::MatrixView<T>& v, std::size_t rows) {
  return CArray<T>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(v.d)});
}

template <typename T>
const T* vector_arg(const CArray<T>& x, const char* name) {
  require_aligned(x, name);
  if (x.ndim() != 1 || x.shape(0) < 1) {
    throw std::invalid_argument(std::string(name) + " must be a non-empty 1-D vector");
  }
  return x.data();
}

// ============================================================================================
// aggregators
// ============================================================================================

// --- coordinate-wise rules ------------------------------------------------------------------

template <typename T>
CArray<T> mean_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  return released(vector_out<T>(v.d), [&](T* o) { k::mean<T>(v, o, threads); });
}

/// Per-row weights: a float64 vector of shape (n,).
const double* weights_arg(const CArray<double>& w, std::size_t n) {
  require_aligned(w, "weights");
  if (w.ndim() != 1 || static_cast<std::size_t>(w.shape(0)) != n) {
    throw std::invalid_argument("weights must have shape (n,) = (" + std::to_string(n) + ",)");
  }
  return w.data();
}

/// A float64 vector of shape (D,) (a reference point).
const double* point_arg(const CArray<double>& z, std::size_t d, const char* name) {
  require_aligned(z, name);
  if (z.ndim() != 1 || static_cast<std::size_t>(z.shape(0)) != d) {
    throw std::invalid_argument(std::string(name) + " must have shape (D,) = (" +
                                std::to_string(d) + ",)");
  }
  return z.data();
}

template <typename T>
CArray<T> weighted_mean_impl(const CArray<T>& x, const CArray<double>& weights, int threads) {
  auto v = matrix_arg(x, "X");
  const double* w = weights_arg(weights, v.n);
  return released(vector_out<T>(v.d), [&](T* o) { k::weighted_mean<T>(v, w, o, threads); });
}

template <typename T>
CArray<T> median_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  return released(vector_out<T>(v.d), [&](T* o) { k::median<T>(v, o, threads); });
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
  const auto uf = static_cast<std::size_t>(f);
  return released(vector_out<T>(v.d), [&](T* o) { k::trimmed_mean<T>(v, uf, o, threads); });
}

template <typename T>
CArray<T> meamed_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = trimmed_arg(x, f);
  const auto uf = static_cast<std::size_t>(f);
  return released(vector_out<T>(v.d), [&](T* o) { k::meamed<T>(v, uf, o, threads); });
}

// --- distance-based rules and pre-aggregations ---------------------------------------------

template <typename T>
py::tuple pairwise_sq_distances_impl(const CArray<T>& x, int threads) {
  auto v = matrix_arg(x, "X");
  auto n = static_cast<py::ssize_t>(v.n);
  std::vector<unsigned char> b(v.n);
  CArray<double> dist = released(CArray<double>({n, n}), [&](double* d) {
    k::pairwise_sq_distances<T>(v, d, b.data(), threads);
  });
  py::array_t<bool> bad(n);
  bool* pb = bad.mutable_data();
  for (std::size_t i = 0; i < v.n; ++i) pb[i] = b[i] != 0;
  return py::make_tuple(dist, bad);
}

template <typename T>
CArray<T> krum_impl(const CArray<T>& x, std::int64_t q, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uq = count_arg(q, "q");
  return released(vector_out<T>(v.d), [&](T* o) { k::krum<T>(v, uq, o, threads); });
}

template <typename T>
CArray<T> multi_krum_impl(const CArray<T>& x, std::int64_t q, std::int64_t m,
                          const std::optional<CArray<double>>& weights, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uq = count_arg(q, "q"), um = count_arg(m, "m");
  const double* w = weights ? weights_arg(*weights, v.n) : nullptr;
  return released(vector_out<T>(v.d),
                  [&](T* o) { k::multi_krum<T>(v, uq, um, w, o, threads); });
}

template <typename T>
py::tuple geometric_median_impl(const CArray<T>& x, double eps, std::int64_t max_iter,
                                double tol, const std::string& start, int threads) {
  auto v = matrix_arg(x, "X");
  const k::GmStart how = k::parse_gm_start(start);
  std::size_t mi = count_arg(max_iter, "max_iter");
  std::size_t iters = 0;
  CArray<T> out = released(vector_out<T>(v.d), [&](T* o) {
    iters = k::geometric_median<T>(v, eps, mi, tol, o, threads, how);
  });
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
  return released(vector_out<T>(v.d),
                  [&](T* o) { k::centered_clipping<T>(v, tau, it, c, o, threads); });
}

// --- closest-to-reference averaging and Bulyan ----------------------------------------------

template <typename T>
CArray<T> closest_impl(const CArray<T>& x, const CArray<double>& reference, std::int64_t beta,
                       int threads) {
  auto v = matrix_arg(x, "X");
  const double* z = point_arg(reference, v.d, "reference");
  std::size_t ub = count_arg(beta, "beta");
  return released(vector_out<T>(v.d), [&](T* o) { k::closest<T>(v, z, ub, o, threads); });
}

template <typename T>
CArray<T> closest_coordinates_impl(const CArray<T>& x, const CArray<double>& reference,
                                   std::int64_t beta, int threads) {
  auto v = matrix_arg(x, "X");
  const double* z = point_arg(reference, v.d, "reference");
  std::size_t ub = count_arg(beta, "beta");
  for (std::size_t j = 0; j < v.d; ++j) {
    if (!std::isfinite(z[j])) throw std::invalid_argument("reference must be finite");
  }
  std::vector<std::size_t> rows(v.n);
  for (std::size_t i = 0; i < v.n; ++i) rows[i] = i;
  return released(vector_out<T>(v.d), [&](T* o) {
    k::closest_coordinates<T>(v, rows.data(), v.n, z, ub, o, threads);
  });
}

template <typename T>
CArray<T> bulyan_impl(const CArray<T>& x, std::int64_t f, const std::string& selection,
                      const std::string& neighbors, int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  const k::BulyanSelection sel = k::parse_bulyan_selection(selection);
  const k::KrumNeighbors conv = k::parse_krum_neighbors(neighbors);
  return released(vector_out<T>(v.d),
                  [&](T* o) { k::bulyan<T>(v, uf, sel, conv, o, threads); });
}

/// `out` when given (checked: C-contiguous, aligned, writable, shape (rows, D), not sharing
/// memory with X), else a fresh (rows, D) array.
template <typename T>
CArray<T> rows_out_or(const k::MatrixView<T>& v, std::size_t rows,
                      const std::optional<CArray<T>>& out) {
  if (!out) return rows_out(v, rows);
  const CArray<T>& o = *out;
  require_aligned(o, "out");
  if (o.ndim() != 2 || static_cast<std::size_t>(o.shape(0)) != rows ||
      static_cast<std::size_t>(o.shape(1)) != v.d) {
    throw std::invalid_argument("out must have shape (" + std::to_string(rows) + ", " +
                                std::to_string(v.d) + ")");
  }
  if (!o.writeable()) throw std::invalid_argument("out must be writable");
  const auto* ob = reinterpret_cast<const unsigned char*>(o.data());
  const auto* xb = reinterpret_cast<const unsigned char*>(v.data);
  const std::size_t obytes = rows * v.d * sizeof(T), xbytes = v.n * v.row_stride * sizeof(T);
  if (ob < xb + xbytes && xb < ob + obytes) {
    throw std::invalid_argument("out must not share memory with X");
  }
  return o;
}

template <typename T>
CArray<T> nnm_impl(const CArray<T>& x, std::int64_t f, const std::optional<CArray<T>>& out,
                   int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  return released(rows_out_or(v, v.n, out), [&](T* o) { k::nnm<T>(v, uf, o, threads); });
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
  const std::int64_t* p = perm.data();
  return released(rows_out(v, (v.n + us - 1) / us),
                  [&](T* o) { k::bucketing<T>(v, p, us, o, threads); });
}

template <typename T>
CArray<T> clip_impl(const CArray<T>& x, double tau, const std::optional<CArray<T>>& out,
                    int threads) {
  auto v = matrix_arg(x, "X");
  return released(rows_out_or(v, v.n, out), [&](T* o) { k::clip<T>(v, tau, o, threads); });
}

template <typename T>
CArray<T> arc_impl(const CArray<T>& x, std::int64_t f, const std::optional<CArray<T>>& out,
                   int threads) {
  auto v = matrix_arg(x, "X");
  std::size_t uf = count_arg(f, "f");
  return released(rows_out_or(v, v.n, out), [&](T* o) { k::arc<T>(v, uf, o, threads); });
}

/// Weighted mean, closest-to-reference averaging and Bulyan (kept together for merges).
template <typename X, typename Threads>
void bind_selection_rules(py::module_& m, const X& x, const Threads& threads) {
  def_float(m, "weighted_mean", CYCLAD_IMPL(weighted_mean_impl), x,
            py::arg("weights").noconvert(), threads, "Weighted coordinate-wise mean.");
  def_float(m, "closest", CYCLAD_IMPL(closest_impl), x, py::arg("reference").noconvert(),
            py::arg("beta"), threads, "Mean of the beta rows nearest to a reference point.");
  def_float(m, "closest_coordinates", CYCLAD_IMPL(closest_coordinates_impl), x,
            py::arg("reference").noconvert(), py::arg("beta"), threads,
            "Per coordinate, the mean of the beta values nearest to the reference.");
  def_float(m, "bulyan", CYCLAD_IMPL(bulyan_impl), x, py::arg("f"),
            py::arg("selection") = "iterated", py::arg("neighbors") = "blanchard", threads,
            "Bulyan: Krum selection, then coordinate-wise closest-to-median mean.");
}

// --- subset search and filtering (MDA, SMEA, CAF) -----------------------------------------

template <typename T>
k::MatrixView<T> subset_arg(const CArray<T>& x, std::int64_t f, const char* rule,
                            bool bounded) {
  auto v = matrix_arg(x, "X");
  if (f < 0 || 2 * static_cast<std::uint64_t>(f) >= v.n) {
    throw std::invalid_argument("f must be in [0, " + std::to_string((v.n - 1) / 2) +
                                "] (n > 2f) for n=" + std::to_string(v.n) +
                                ", got f=" + std::to_string(f));
  }
  const auto uf = static_cast<std::size_t>(f);
  if (bounded && k::subset_count(v.n, uf) > k::kMaxSubsets) {
    throw std::invalid_argument(std::string(rule) + " searches C(n, f) subsets: C(" +
                                std::to_string(v.n) + ", " + std::to_string(uf) +
                                ") exceeds the limit of " + std::to_string(k::kMaxSubsets));
  }
  return v;
}

py::array_t<std::int64_t> index_array(const std::vector<std::size_t>& rows) {
  py::array_t<std::int64_t> a(static_cast<py::ssize_t>(rows.size()));
  std::int64_t* p = a.mutable_data();
  for (std::size_t i = 0; i < rows.size(); ++i) p[i] = static_cast<std::int64_t>(rows[i]);
  return a;
}

template <typename T>
py::tuple mda_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = subset_arg(x, f, "mda", true);
  const auto uf = static_cast<std::size_t>(f);
  std::vector<std::size_t> rows;
  CArray<T> out =
      released(vector_out<T>(v.d), [&](T* o) { k::mda<T>(v, uf, o, rows, threads); });
  return py::make_tuple(out, index_array(rows));
}

template <typename T>
py::tuple smea_impl(const CArray<T>& x, std::int64_t f, int threads) {
  auto v = subset_arg(x, f, "smea", true);
  const auto uf = static_cast<std::size_t>(f);
  std::vector<std::size_t> rows;
  CArray<T> out =
      released(vector_out<T>(v.d), [&](T* o) { k::smea<T>(v, uf, o, rows, threads); });
  return py::make_tuple(out, index_array(rows));
}

template <typename T>
py::tuple caf_impl(const CArray<T>& x, std::int64_t f, std::int64_t max_iter, int threads) {
  auto v = subset_arg(x, f, "caf", false);
  const auto uf = static_cast<std::size_t>(f);
  const std::size_t mi = count_arg(max_iter, "max_iter");
  std::size_t iters = 0;
  CArray<T> out =
      released(vector_out<T>(v.d), [&](T* o) { k::caf<T>(v, uf, mi, o, iters, threads); });
  return py::make_tuple(out, iters);
}

void bind_aggregators(py::module_& m) {
  const auto x = py::arg("x").noconvert();
  const auto threads = py::arg("threads") = 0;
  def_float(m, "mean", CYCLAD_IMPL(mean_impl), x, threads, "Coordinate-wise mean.");
  def_float(m, "median", CYCLAD_IMPL(median_impl), x, threads, "Coordinate-wise median.");
  def_float(m, "trimmed_mean", CYCLAD_IMPL(trimmed_mean_impl), x, py::arg("f"), threads,
            "Coordinate-wise trimmed mean.");
  def_float(m, "meamed", CYCLAD_IMPL(meamed_impl), x, py::arg("f"), threads,
            "Coordinate-wise mean around the median.");
  def_float(m, "pairwise_sq_distances", CYCLAD_IMPL(pairwise_sq_distances_impl), x, threads,
            "Pairwise squared distances (n, n) and non-finite row flags.");
  def_float(m, "krum", CYCLAD_IMPL(krum_impl), x, py::arg("q"), threads,
            "Krum over q neighbours.");
  def_float(m, "multi_krum", CYCLAD_IMPL(multi_krum_impl), x, py::arg("q"), py::arg("m"),
            py::arg("weights").noconvert().none(true) = py::none(), threads,
            "Multi-Krum over q neighbours, optionally weighted.");
  def_float(m, "geometric_median", CYCLAD_IMPL(geometric_median_impl), x, py::arg("eps"),
            py::arg("max_iter"), py::arg("tol"), py::arg("start") = "medoid", threads,
            "Smoothed Weiszfeld geometric median; returns (z, iterations).");
  def_float(m, "centered_clipping", CYCLAD_IMPL(centered_clipping_impl), x, py::arg("tau"),
            py::arg("iters"), py::arg("center").noconvert().none(true), threads,
            "Stateless centered clipping.");
  def_float(m, "nnm", CYCLAD_IMPL(nnm_impl), x, py::arg("f"),
            py::arg("out").noconvert().none(true) = py::none(), threads,
            "Nearest-neighbour mixing.");
  def_float(m, "bucketing", CYCLAD_IMPL(bucketing_impl), x, py::arg("perm").noconvert(),
            py::arg("s"), threads, "Bucketing with a given row permutation.");
  def_float(m, "clip", CYCLAD_IMPL(clip_impl), x, py::arg("tau"),
            py::arg("out").noconvert().none(true) = py::none(), threads,
            "Static norm clipping of rows.");
  def_float(m, "arc", CYCLAD_IMPL(arc_impl), x, py::arg("f"),
            py::arg("out").noconvert().none(true) = py::none(), threads,
            "Adaptive robust clipping.");
  bind_selection_rules(m, x, threads);
  // Subset search and filtering: MDA and SMEA search the C(n, f) subsets of n - f rows (at
  // most max_subsets); CAF filters by weights.
  m.attr("max_subsets") = k::kMaxSubsets;
  def_float(m, "mda", CYCLAD_IMPL(mda_impl), x, py::arg("f"), threads,
            "Minimum-diameter averaging; returns (mean, selected rows).");
  def_float(m, "smea", CYCLAD_IMPL(smea_impl), x, py::arg("f"), threads,
            "Smallest maximum eigenvalue averaging; returns (mean, selected rows).");
  def_float(m, "caf", CYCLAD_IMPL(caf_impl), x, py::arg("f"), py::arg("max_iter"), threads,
            "Covariance-bound agnostic filter; returns (mean, steps).");
}

// ============================================================================================
// coding
// ============================================================================================

template <typename T>
CArray<T> encode_impl(const CArray<T>& G, const CArray<std::int64_t>& assignment,
                      const CArray<T>& weights, const std::optional<CArray<T>>& out,
                      int threads) {
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
  const std::int64_t* a = assignment.data();
  const T* w = weights.data();
  return released(rows_out_or(g, n, out),
                  [&](T* o) { k::encode<T>(g, a, n, d, w, per_row, o, threads); });
}

void bind_coding(py::module_& m) {
  def_float(m, "encode", CYCLAD_IMPL(encode_impl), py::arg("G").noconvert(),
            py::arg("assignment").noconvert(), py::arg("weights").noconvert(),
            py::arg("out").noconvert().none(true) = py::none(), py::arg("threads") = 0,
            "Cyclic encoding z_i = sum_j w_ij G[a_ij].");
}

// ============================================================================================
// compression (docs/wire-format.md)
// ============================================================================================

k::WireSpec wire_spec(int kind, int vcode, std::uint64_t dim, std::uint64_t param,
                      std::uint64_t bucket, bool shared, std::uint64_t seed, bool scaled,
                      bool float64) {
  if (kind < 0 || kind > static_cast<int>(k::kMaxKind)) {
    throw std::invalid_argument("kind must be 0..6, got " + std::to_string(kind));
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

/// The codes and limits of the format, for the Python layer (cyclad.compression builds its
/// name <-> code tables from this, so the codes are defined once, in wire.hpp).
py::dict wire_format() {
  py::dict kinds, dense, values;
  for (int c = 0; c <= static_cast<int>(k::kMaxKind); ++c) kinds[k::kind_name(static_cast<k::Kind>(c))] = c;
  for (int c = 1; c <= 2; ++c) dense[k::dense_name(static_cast<k::DenseCode>(c))] = c;
  for (int c = 1; c <= 3; ++c) values[k::value_name(static_cast<k::ValueCode>(c))] = c;
  py::dict f;
  f["magic"] = py::bytes(reinterpret_cast<const char*>(k::kMagic), 2);
  f["version"] = k::kVersion;
  f["kinds"] = kinds;
  f["dense_dtypes"] = dense;
  f["value_dtypes"] = values;
  f["flag_shared"] = k::kFlagShared;
  f["max_dim"] = k::kMaxDim;
  f["max_levels"] = k::kMaxLevels;
  f["natural_emin"] = py::make_tuple(
      py::make_tuple(k::natural_emin_lo(k::DenseCode::f32), k::natural_emin_hi(k::DenseCode::f32)),
      py::make_tuple(k::natural_emin_lo(k::DenseCode::f64), k::natural_emin_hi(k::DenseCode::f64)));
  return f;
}

template <typename T>
Bytes compress_impl(const CArray<T>& x, int kind, int vcode, std::uint64_t param,
                    std::uint64_t bucket, bool shared, std::uint64_t seed, bool scaled,
                    int threads) {
  const T* px = vector_arg(x, "x");
  auto spec = wire_spec(kind, vcode, static_cast<std::uint64_t>(x.shape(0)), param, bucket,
                        shared, seed, scaled, std::is_same<T, double>::value);
  const std::uint64_t size = k::payload_size(spec);
  return released(Bytes(static_cast<py::ssize_t>(size)), [&](std::uint8_t* o) {
    k::compress<T>(spec, px, reinterpret_cast<unsigned char*>(o), size, threads);
  });
}

py::bytes header_impl(int kind, int dense, int vcode, std::uint64_t dim, std::uint64_t param,
                      std::uint64_t bucket, bool shared, std::uint64_t seed) {
  if (dense < 1 || dense > 2) {
    throw std::invalid_argument("dense dtype code must be 1..2, got " + std::to_string(dense));
  }
  auto spec = wire_spec(kind, vcode, dim, param, bucket, shared, seed, true, dense == 2);
  unsigned char buf[k::kMaxHeaderBytes] = {};
  const std::size_t n = k::pack_header(spec, buf);
  return py::bytes(reinterpret_cast<const char*>(buf), n);
}

std::size_t header_size_impl(int kind, bool shared) {
  if (kind < 0 || kind > static_cast<int>(k::kMaxKind)) {
    throw std::invalid_argument("kind must be 0..6, got " + std::to_string(kind));
  }
  return k::header_size(static_cast<k::Kind>(kind), shared);
}

py::tuple parse_impl(const py::bytes& data, std::uint64_t dim, std::uint64_t max_dim, int dense,
                     int threads) {
  if (dense < 0 || dense > 2) {
    throw std::invalid_argument("dense dtype code must be 0..2, got " + std::to_string(dense));
  }
  k::ReceiveLimits lim;
  lim.dim = dim;
  lim.max_dim = max_dim;
  lim.dense = static_cast<std::uint8_t>(dense);
  const auto view = static_cast<std::string_view>(data);  // `data` is immutable and held
  const auto* p = reinterpret_cast<const unsigned char*>(view.data());
  k::Header h;
  {
    py::gil_scoped_release release;
    h = c::parse_message(p, view.size(), lim, threads);
  }
  const k::WireSpec& s = h.spec;
  return py::make_tuple(static_cast<int>(s.kind), static_cast<int>(s.dense),
                        static_cast<int>(s.vcode), s.dim, s.param, s.bucket, s.shared, s.seed,
                        h.header_bytes);
}

/// Decode a payload into a new dense vector: validated first when `validate`, else trusted to
/// have been validated (decode stays memory-safe either way).
py::array decode_into(const Bytes& payload, const k::WireSpec& spec, bool validate, int threads) {
  const unsigned char* p = bytes_arg(payload);
  const auto size = static_cast<std::uint64_t>(payload.shape(0));
  // Validate before allocating D elements: a malformed header never triggers the allocation.
  // (Bounding D itself is the caller's job: cyclad.compression requires dim= or max_dim=.)
  {
    py::gil_scoped_release release;
    if (validate) {
      c::validate_payload(spec, p, size, threads);
    } else {
      k::require(size == k::payload_size(spec), "payload size does not match the header fields");
    }
  }
  auto run = [&](auto tag) -> py::array {
    using T = typename decltype(tag)::type;
    return released(CArray<T>(static_cast<py::ssize_t>(spec.dim)),
                    [&](T* o) { k::decode<T>(spec, p, size, o, threads); });
  };
  return spec.dense == k::DenseCode::f64 ? run(Tag<double>{}) : run(Tag<float>{});
}

py::array decompress_impl(const Bytes& payload, int kind, int vcode, std::uint64_t dim,
                          std::uint64_t param, std::uint64_t bucket, bool shared,
                          std::uint64_t seed, bool float64, int threads) {
  auto spec = wire_spec(kind, vcode, dim, param, bucket, shared, seed, true, float64);
  return decode_into(payload, spec, /*validate=*/true, threads);
}

py::array decode_impl(const Bytes& payload, int kind, int vcode, std::uint64_t dim,
                      std::uint64_t param, std::uint64_t bucket, bool shared, std::uint64_t seed,
                      bool float64, int threads) {
  auto spec = wire_spec(kind, vcode, dim, param, bucket, shared, seed, true, float64);
  return decode_into(payload, spec, /*validate=*/false, threads);
}

std::uint64_t payload_size_impl(int kind, int vcode, std::uint64_t dim, std::uint64_t param,
                                std::uint64_t bucket, bool shared) {
  // Sizes do not depend on the dense dtype; a natural message's value code names it (check_spec
  // requires them to agree), so take it from there.
  const bool float64 = !(kind == static_cast<int>(k::Kind::natural) &&
                         vcode == static_cast<int>(k::ValueCode::f32));
  return k::payload_size(wire_spec(kind, vcode, dim, param, bucket, shared, 0, true, float64));
}

py::array_t<std::int64_t> indices_out(const std::vector<std::uint32_t>& idx) {
  py::array_t<std::int64_t> out(static_cast<py::ssize_t>(idx.size()));
  std::copy(idx.begin(), idx.end(), out.mutable_data());
  return out;
}

template <typename T>
py::array_t<std::int64_t> topk_indices_impl(const CArray<T>& x, std::uint64_t kk, int threads) {
  const T* px = vector_arg(x, "x");
  const auto D = static_cast<std::size_t>(x.shape(0));
  if (kk < 1 || kk > D) throw std::invalid_argument("k must be in [1, D]");
  std::vector<std::uint32_t> idx(static_cast<std::size_t>(kk));
  {
    py::gil_scoped_release release;
    k::topk_select<T>(px, D, idx.size(), idx.data(), threads);
  }
  return indices_out(idx);
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
  return indices_out(idx);
}

/// Majority vote of n sign-bit sections (each exactly ceil(dim/8) bytes) into a new (dim,)
/// vector of float64 or float32.
py::array sign_majority_impl(const std::vector<Bytes>& sections, std::uint64_t dim, bool float64,
                             int threads) {
  if (dim < 1 || dim > k::kMaxDim) throw std::invalid_argument("dim must be in [1, 2^32 - 1]");
  if (sections.empty()) throw std::invalid_argument("majority vote needs at least one message");
  const auto nbytes = static_cast<py::ssize_t>(k::packed_bytes(dim, 1));
  std::vector<const unsigned char*> ptrs;
  ptrs.reserve(sections.size());
  for (std::size_t r = 0; r < sections.size(); ++r) {
    const Bytes& b = sections[r];
    if (b.ndim() != 1 || b.shape(0) != nbytes) {
      throw std::invalid_argument("sign section " + std::to_string(r) + " must be " +
                                  std::to_string(nbytes) + " bytes for dim=" +
                                  std::to_string(dim));
    }
    ptrs.push_back(bytes_arg(b));
  }
  auto run = [&](auto tag) -> py::array {
    using T = typename decltype(tag)::type;
    return released(CArray<T>(static_cast<py::ssize_t>(dim)), [&](T* o) {
      k::sign_majority<T>(ptrs.data(), ptrs.size(), static_cast<std::size_t>(dim), o, threads);
    });
  };
  return float64 ? run(Tag<double>{}) : run(Tag<float>{});
}

void bind_compression(py::module_& m) {
  m.attr("wire_format") = wire_format();
  def_float(m, "wire_compress", CYCLAD_IMPL(compress_impl), py::arg("x").noconvert(),
            py::arg("kind"), py::arg("vcode"), py::arg("param"), py::arg("bucket"),
            py::arg("shared"), py::arg("seed"), py::arg("scaled"), py::arg("threads") = 0,
            "Compress a 1-D vector into a wire payload (uint8 array).");
  m.def("wire_header", &header_impl, py::arg("kind"), py::arg("dense"), py::arg("vcode"),
        py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"), py::arg("seed"),
        "Header bytes of a message (ValueError if a field is out of range).");
  m.def("wire_header_size", &header_size_impl, py::arg("kind"), py::arg("shared"),
        "Header size in bytes of a message kind.");
  m.def("wire_parse", &parse_impl, py::arg("data"), py::arg("dim") = 0, py::arg("max_dim") = 0,
        py::arg("dense") = 0, py::arg("threads") = 0,
        "Parse and fully validate a message; returns (kind, dense, vcode, dim, param, bucket, "
        "shared, seed, header_bytes).");
  m.def("wire_decompress", &decompress_impl, py::arg("payload").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("seed"), py::arg("float64"), py::arg("threads") = 0,
        "Validate and decode a wire payload into a dense vector.");
  m.def("wire_decode", &decode_impl, py::arg("payload").noconvert(), py::arg("kind"),
        py::arg("vcode"), py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        py::arg("seed"), py::arg("float64"), py::arg("threads") = 0,
        "Decode an already validated wire payload into a dense vector (no second validation).");
  m.def("wire_payload_size", &payload_size_impl, py::arg("kind"), py::arg("vcode"),
        py::arg("dim"), py::arg("param"), py::arg("bucket"), py::arg("shared"),
        "Exact payload size in bytes implied by a header (ValueError if out of range).");
  def_float(m, "topk_indices", CYCLAD_IMPL(topk_indices_impl), py::arg("x").noconvert(),
            py::arg("k"), py::arg("threads") = 0,
            "Ascending indices of the k largest |x_i| (ties: lower index).");
  m.def("randk_indices", &randk_indices_impl, py::arg("dim"), py::arg("k"), py::arg("seed"),
        "Ascending rand-k mask of (seed, D, k).");
  m.def("sign_majority", &sign_majority_impl, py::arg("sections"), py::arg("dim"),
        py::arg("float64"), py::arg("threads") = 0,
        "Coordinate-wise majority vote of packed sign-bit sections: -1, 0 (tie) or +1.");
}

#undef CYCLAD_IMPL

// ============================================================================================
// bench helpers
// ============================================================================================

/// The bytes of a C-contiguous, 8-byte aligned buffer (the bench passes need exactly the bytes
/// they are given); `what` names the call and argument in the error.
std::pair<unsigned char*, std::size_t> contiguous_bytes(const py::buffer_info& info,
                                                        const char* what) {
  if (info.ndim >= 1) {
    py::ssize_t expect = info.itemsize;
    for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
      if (info.strides[static_cast<std::size_t>(i)] != expect) {
        throw std::invalid_argument(std::string(what) + " needs a C-contiguous buffer");
      }
      expect *= info.shape[static_cast<std::size_t>(i)];
    }
  }
  auto* p = static_cast<unsigned char*>(info.ptr);
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(std::uint64_t) != 0) {
    throw std::invalid_argument(std::string(what) + " needs an 8-byte aligned buffer");
  }
  return {p, static_cast<std::size_t>(info.size * info.itemsize)};
}

std::uint64_t read_pass_impl(const py::buffer& b, int threads) {
  py::buffer_info info = b.request();
  const auto [p, nbytes] = contiguous_bytes(info, "read_pass");
  py::gil_scoped_release release;
  return c::read_pass(p, nbytes, threads);
}

void copy_pass_impl(const py::buffer& src, const py::buffer& dst, int threads) {
  py::buffer_info si = src.request();
  py::buffer_info di = dst.request(true);  // a read-only dst raises ValueError
  const auto [s, sn] = contiguous_bytes(si, "copy_pass: src");
  const auto [d, dn] = contiguous_bytes(di, "copy_pass: dst");
  if (sn != dn) {
    throw std::invalid_argument("copy_pass needs src and dst of the same size in bytes, got " +
                                std::to_string(sn) + " and " + std::to_string(dn));
  }
  const auto a = reinterpret_cast<std::uintptr_t>(s), b = reinterpret_cast<std::uintptr_t>(d);
  if (sn != 0 && a < b + dn && b < a + sn) {
    throw std::invalid_argument("copy_pass needs src and dst that do not overlap");
  }
  py::gil_scoped_release release;
  c::copy_pass(s, d, sn, threads);
}

void bind_bench(py::module_& m) {
  m.def("read_pass", &read_pass_impl, py::arg("buffer"), py::arg("threads") = 0,
        "Multi-threaded read of a contiguous buffer; returns an XOR checksum.");
  m.def("copy_pass", &copy_pass_impl, py::arg("src"), py::arg("dst"), py::arg("threads") = 0,
        "Multi-threaded copy of a contiguous buffer into another of the same size, with the "
        "kernels' streaming-store policy for large outputs (the bench's write floor).");
  m.def(
      "fma_peak",
      [](int threads, double seconds) {
        py::gil_scoped_release release;
        return c::fma_peak_flops(threads, seconds);
      },
      py::arg("threads") = 0, py::arg("seconds") = 0.2,
      "Peak double multiply-add throughput of the active ISA in flop/s (a multiply-add is 2).");
}

}  // namespace

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
  m.doc() = "cyclad C++ kernels (private; use the cyclad.* modules)";
  m.attr("_has_openmp") = k::has_openmp();
  m.def("isa_path", &k::isa_path,
        "The ISA the hot kernels run on: x86-64-v4, x86-64-v3 or baseline (native (...) for a "
        "build without ISA dispatch).");
  m.def("best_isa", [] { return std::string(k::isa_name(k::best_isa())); },
        "The best ISA this CPU (and build) runs the kernels on.");
  m.def("set_isa", [](const std::string& name) {
        const std::string previous = k::isa_name(k::active_isa());
        k::set_isa(k::parse_isa(name));
        return previous;
      }, py::arg("name"),
        "Run the kernels on ISA `name` (x86-64-v4, x86-64-v3, baseline; at most best_isa()) "
        "from now on, for every thread; returns the previous one. Not for concurrent use with "
        "running kernels.");
  // CYCLAD_ISA=<name> picks a lower ISA for the whole process (an unknown or unsupported name
  // fails the import: a setting that is silently ignored would be worse).
  if (const char* env = std::getenv("CYCLAD_ISA"); env != nullptr && *env != '\0') {
    try {
      k::set_isa(k::parse_isa(env));
    } catch (const std::invalid_argument& e) {
      throw py::import_error(std::string("CYCLAD_ISA: ") + e.what());
    }
  }
  m.def("stream_threshold", [](std::optional<std::size_t> bytes) {
        if (!bytes) return k::stream_threshold_bytes();
        return k::set_stream_threshold_bytes(*bytes);
      }, py::arg("bytes") = py::none(),
        "Outputs of at least this many bytes are written with streaming (non-temporal) stores: "
        "returns the threshold, or sets it to `bytes` (0: every output) and returns the "
        "previous one. The bits written are the same either way.");
  m.def("hardware_threads", [] { return k::resolve_threads(0); },
        "Number of threads used when threads=None.");
  bind_aggregators(m);
  bind_coding(m);
  bind_compression(m);
  bind_bench(m);
}
