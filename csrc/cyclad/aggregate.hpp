// SPDX-License-Identifier: Apache-2.0
// Robust aggregation rules over an (n, D) row-major block: (n, D) -> (D,), and pre-aggregations
// (n, D) -> (n', D). NaN policy (DESIGN §4): coordinate-wise rules order NaN above +Inf;
// distance-based rules give a row with any non-finite entry an infinite distance.
#pragma once

#include <cstddef>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
// Distance-based rules (Krum, geometric median, NNM, clipping, ...) live beside this file.
#include "cyclad/aggregate_distance.hpp"

namespace cyclad::kernels {

namespace detail {
template <typename T>
CYCLAD_MULTIVERSION void mean_block(const T* CYCLAD_RESTRICT x, std::size_t n,
                                    std::size_t stride, std::size_t lo, std::size_t hi,
                                    T* CYCLAD_RESTRICT out) {
  // Accumulate rows in a fixed order per coordinate; the sum is the same for any partition.
  for (std::size_t j = lo; j < hi; ++j) out[j] = x[j];
  for (std::size_t i = 1; i < n; ++i) {
    const T* r = x + i * stride;
    for (std::size_t j = lo; j < hi; ++j) out[j] += r[j];
  }
  const T inv = T(1) / static_cast<T>(n);
  for (std::size_t j = lo; j < hi; ++j) out[j] *= inv;
}
}  // namespace detail

/// \brief Coordinate-wise arithmetic mean (the non-robust baseline).
/// \tparam T float or double.
/// \param[in] x (n, D) block, n >= 1.
/// \param[out] out (D,) result.
/// \param threads 0 = all cores. Complexity O(nD), one read of x. Bit-identical for any thread
/// count. NaN/Inf propagate (mean is deliberately not robust).
template <typename T>
void mean(MatrixView<T> x, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  // Column blocks of 4096 keep the output chunk in L1/L2 while the rows stream through.
  parallel_for(x.d, threads, 1 << 14, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t b = lo; b < hi; b += 4096) {
      detail::mean_block(x.data, x.n, x.row_stride, b, std::min(hi, b + 4096), out);
    }
  });
}

}  // namespace cyclad::kernels
