// SPDX-License-Identifier: Apache-2.0
// Cyclic gradient coding: encoding of subset gradients into per-device coded vectors,
// z_i = sum_j w_ij G[a_ij], over an (N, D) row-major block of subset gradients.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/stream.hpp"

namespace cyclad::kernels {

namespace detail {

/// Columns per encode block. It depends only on N and the value size (never on the thread
/// count), so every column lands in the same block, and in the same vector-body or tail position
/// of the inner loops, whatever the partition: results stay bit-identical across thread counts.
/// The (N, block) slab of G (~16 KiB) stays in L1 while all n outputs of the block are formed:
/// each output row reads d rows of the slab, so a slab in L2 (256 KiB, measured) left the loop
/// bound by L2-to-L1 traffic, 1.3-1.6x slower at d = 4..10 on an AVX2 clone.
inline std::size_t encode_block_cols(std::size_t N, std::size_t value_size) {
  constexpr std::size_t kSlabBytes = std::size_t{1} << 14;
  std::size_t cols = kSlabBytes / (std::max<std::size_t>(N, 1) * value_size);
  cols = std::clamp<std::size_t>(cols, 64, 8192);
  return cols & ~std::size_t{63};
}

/// One pass over a block adding up to four terms, left to right: acc = (((acc + t1) + t2) + t3)
/// (or starting from t1 when `first`), t_k = w[k] * g_k[c]. Fused passes keep the accumulator in
/// registers for several terms: a load/store of acc per term leaves the loop bound by stores.
template <typename T, int K, bool First>
inline void encode_pass(const T* const* rows, const T* w, std::size_t len,
                        T* CYCLAD_RESTRICT acc) {
  const T* CYCLAD_RESTRICT g0 = rows[0];
  const T* CYCLAD_RESTRICT g1 = rows[K > 1 ? 1 : 0];
  const T* CYCLAD_RESTRICT g2 = rows[K > 2 ? 2 : 0];
  const T* CYCLAD_RESTRICT g3 = rows[K > 3 ? 3 : 0];
  const T w0 = w[0], w1 = w[K > 1 ? 1 : 0], w2 = w[K > 2 ? 2 : 0], w3 = w[K > 3 ? 3 : 0];
  for (std::size_t c = 0; c < len; ++c) {
    T v = First ? w0 * g0[c] : acc[c] + w0 * g0[c];
    if constexpr (K > 1) v = v + w1 * g1[c];
    if constexpr (K > 2) v = v + w2 * g2[c];
    if constexpr (K > 3) v = v + w3 * g3[c];
    acc[c] = v;
  }
}

template <typename T, bool First>
inline void encode_pass_k(std::size_t k, const T* const* rows, const T* w, std::size_t len,
                          T* CYCLAD_RESTRICT acc) {
  switch (k) {
    case 1: encode_pass<T, 1, First>(rows, w, len, acc); break;
    case 2: encode_pass<T, 2, First>(rows, w, len, acc); break;
    case 3: encode_pass<T, 3, First>(rows, w, len, acc); break;
    default: encode_pass<T, 4, First>(rows, w, len, acc); break;
  }
}

/// One output row over one block: acc[c] = sum_j w[j] * rows[j][c], j = 0..d-1 in order,
/// in ceil(d / 4) passes over the block.
template <Isa I, typename T>
CYCLAD_KERNEL void encode_row_block(const T* const* rows, const T* w, std::size_t d,
                                          std::size_t len, T* CYCLAD_RESTRICT acc) {
  std::size_t k = std::min<std::size_t>(d, 4);
  encode_pass_k<T, true>(k, rows, w, len, acc);
  for (std::size_t j = k; j < d; j += k) {
    k = std::min<std::size_t>(d - j, 4);
    encode_pass_k<T, false>(k, rows + j, w + j, len, acc);
  }
}

}  // namespace detail

/// \brief Cyclic gradient encoding: z_i = sum_{j=0}^{d-1} w_ij * G[a_ij] for i = 0..n-1.
/// \tparam T float or double (G, weights and z share it; accumulation is in T).
/// \param[in] G (N, D) row-major subset gradients, N >= 1, D >= 1.
/// \param[in] assignment (n, d) row-major subset indices, every entry in [0, N) (checked:
///   std::invalid_argument otherwise, before anything is read from G).
/// \param[in] weights (n, d) row-major (`weights_per_row` true) or (d,) shared by every row;
///   every entry finite (checked).
/// \param[out] out (n, D) row-major coded vectors.
/// \param threads 0 = all cores.
///
/// The terms of each output are added in the fixed order j = 0..d-1, and the work is split over
/// fixed column blocks, so the result is bit-identical for any thread count. NaN/Inf in G
/// propagate to the outputs whose windows contain them (they are Byzantine inputs, not errors).
/// Complexity O(n d D) flops; memory traffic: G is read once (N D values, each column block of G
/// is reused from cache by all n outputs) and z is written once (n D values).
/// Thread-safe; G, assignment and weights are never modified.
template <typename T>
void encode(MatrixView<T> G, const std::int64_t* assignment, std::size_t n, std::size_t d,
            const T* weights, bool weights_per_row, T* out, int threads) {
  require(G.n >= 1 && G.d >= 1, "G must be a non-empty (N, D) matrix");
  require(n >= 1 && d >= 1, "assignment must be a non-empty (n, d) matrix");
  const auto N = static_cast<std::int64_t>(G.n);
  for (std::size_t k = 0; k < n * d; ++k) {
    if (assignment[k] < 0 || assignment[k] >= N) {
      throw std::invalid_argument("assignment entries must be in [0, N) = [0, " +
                                  std::to_string(N) + "), got " +
                                  std::to_string(assignment[k]));
    }
  }
  const std::size_t nw = weights_per_row ? n * d : d;
  for (std::size_t k = 0; k < nw; ++k) {
    require(std::isfinite(weights[k]), "weights must be finite");
  }
  const std::size_t D = G.d;
  const std::size_t ld = G.row_stride;
  const std::size_t bcols = detail::encode_block_cols(G.n, sizeof(T));
  const std::size_t nblocks = (D + bcols - 1) / bcols;
  // z larger than the cache is written with streaming stores (stream.hpp).
  const bool stream = stream_output(n * D * sizeof(T));
  // Each block reads d rows of G per output row: count those bytes.
  const std::size_t grain = grain_for(n * d * std::min(D, bcols) * sizeof(T));
  parallel_for(nblocks, threads, grain, [&](std::size_t b0, std::size_t b1) {
    std::vector<T> acc(bcols);
    std::vector<const T*> rows(d);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * bcols;
      const std::size_t len = std::min(D, lo + bcols) - lo;
      for (std::size_t i = 0; i < n; ++i) {
        const T* w = weights_per_row ? weights + i * d : weights;
        const std::int64_t* a = assignment + i * d;
        for (std::size_t j = 0; j < d; ++j) {
          rows[j] = G.data + static_cast<std::size_t>(a[j]) * ld + lo;
        }
        dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
          detail::encode_row_block<decltype(isa)::value>(rows.data(), w, d, len, acc.data());
        });
        detail::stream_copy(out + i * D + lo, acc.data(), len, stream);
      }
    }
    if (stream) detail::store_fence();
  });
}

}  // namespace cyclad::kernels
