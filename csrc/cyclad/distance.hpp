// SPDX-License-Identifier: Apache-2.0
// Distance-based robust aggregation rules and pre-aggregations over an (n, D) row-major block.
// A row with any non-finite entry is at infinite distance from every other row (DESIGN §4);
// distances accumulate in double so float32 inputs near the float32 maximum cannot overflow.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/coordinatewise.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/stream.hpp"

namespace cyclad::kernels {

namespace detail {

// Eight double lanes: one zmm register in the AVX-512 clone, two ymm in the AVX2 clone. Every
// blocked sum below runs a fixed set of 8-lane accumulator chains, each over a fixed subset of
// the block's coordinates (set by the coordinate index and n only), and folds them in a fixed
// order, so a block's partial never depends on the thread count. GCC's auto-vectoriser prefers
// 256-bit vectors even on AVX-512 targets, so the hot loops spell the 8-lane vectors out with
// the GNU vector extension.
inline constexpr std::size_t kDistLanes = 8;

#if defined(__GNUC__) || defined(__clang__)
typedef double dvec __attribute__((vector_size(64)));
typedef double dvec_u __attribute__((vector_size(64), aligned(8), may_alias));
// Macros rather than helper functions: a function taking or returning a 64-byte vector changes
// the ABI between the clones (-Wpsabi).
#define CYCLAD_VLOAD(p) (*reinterpret_cast<const ::cyclad::kernels::detail::dvec_u*>(p))
#define CYCLAD_VSTORE(p, v) (*reinterpret_cast<::cyclad::kernels::detail::dvec_u*>(p) = (v))
// A load the compiler keeps in a register: GCC otherwise folds a value used twice into both
// instructions as a memory operand, and the 2 x 4 distance tile becomes load-bound (measured:
// about 1.5x slower).
#define CYCLAD_VLOAD_REG(p) \
  (*reinterpret_cast<const volatile ::cyclad::kernels::detail::dvec_u*>(p))
typedef float fvec __attribute__((vector_size(32)));
typedef float fvec_u __attribute__((vector_size(32), aligned(4), may_alias));
// Store eight doubles as eight floats (rounded to nearest).
#define CYCLAD_VSTORE_F32(p, v)                                         \
  (*reinterpret_cast<::cyclad::kernels::detail::fvec_u*>(p) =          \
       __builtin_convertvector((v), ::cyclad::kernels::detail::fvec))
#else
struct dvec {
  double v[kDistLanes] = {};
  dvec& operator+=(const dvec& o) {
    for (std::size_t l = 0; l < kDistLanes; ++l) v[l] += o.v[l];
    return *this;
  }
  friend dvec operator+(dvec a, const dvec& b) { return a += b; }
  friend dvec operator-(dvec a, const dvec& b) {
    for (std::size_t l = 0; l < kDistLanes; ++l) a.v[l] -= b.v[l];
    return a;
  }
  friend dvec operator*(dvec a, const dvec& b) {
    for (std::size_t l = 0; l < kDistLanes; ++l) a.v[l] *= b.v[l];
    return a;
  }
  friend dvec operator*(dvec a, double s) {
    for (std::size_t l = 0; l < kDistLanes; ++l) a.v[l] *= s;
    return a;
  }
  friend dvec operator*(double s, dvec a) { return a * s; }
};
inline dvec vload(const double* p) {
  dvec r;
  std::memcpy(r.v, p, sizeof r.v);
  return r;
}
inline void vstore(double* p, const dvec& v) { std::memcpy(p, v.v, sizeof v.v); }
#define CYCLAD_VLOAD(p) (::cyclad::kernels::detail::vload(p))
#define CYCLAD_VSTORE(p, v) (::cyclad::kernels::detail::vstore((p), (v)))
#define CYCLAD_VLOAD_REG(p) (::cyclad::kernels::detail::vload(p))
inline void vstore_f32(float* p, const dvec& v) {
  for (std::size_t l = 0; l < kDistLanes; ++l) p[l] = static_cast<float>(v.v[l]);
}
#define CYCLAD_VSTORE_F32(p, v) (::cyclad::kernels::detail::vstore_f32((p), (v)))
#endif

// The vectors each ISA computes with: 8 doubles (one zmm) on x86-64-v4, 4 (one ymm) on v3,
// 2 (one xmm) on baseline. Kernels keep the same 8-lane (or 32-lane) accumulators on every ISA
// and cover them in `8 / W` passes of W lanes, so a narrower ISA computes the same bits with
// the same register tiles (an 8-lane vector held in two or four registers would need twice or
// four times the registers and spills: measured 25x slower pairwise distances on AVX2).
#if defined(__GNUC__) || defined(__clang__)
typedef double dvec4 __attribute__((vector_size(32)));
typedef double dvec4_u __attribute__((vector_size(32), aligned(8), may_alias));
typedef double dvec2 __attribute__((vector_size(16)));
typedef double dvec2_u __attribute__((vector_size(16), aligned(8), may_alias));
typedef float fvec4 __attribute__((vector_size(16)));
typedef float fvec4_u __attribute__((vector_size(16), aligned(4), may_alias));
typedef float fvec2 __attribute__((vector_size(8)));
typedef float fvec2_u __attribute__((vector_size(8), aligned(4), may_alias));
// F / FU: W floats, for storing a vector of doubles as floats.
template <Isa I>
struct Simd {
  using V = dvec2;
  using U = dvec2_u;
  using F = fvec2;
  using FU = fvec2_u;
  static constexpr std::size_t W = 2;
};
template <>
struct Simd<Isa::v3> {
  using V = dvec4;
  using U = dvec4_u;
  using F = fvec4;
  using FU = fvec4_u;
  static constexpr std::size_t W = 4;
};
template <>
struct Simd<Isa::v4> {
  using V = dvec;
  using U = dvec_u;
  using F = fvec;
  using FU = fvec_u;
  static constexpr std::size_t W = 8;
};
#define CYCLAD_NLOAD(I, p) (*reinterpret_cast<const typename Simd<I>::U*>(p))
#define CYCLAD_NSTORE(I, p, v) (*reinterpret_cast<typename Simd<I>::U*>(p) = (v))
// See CYCLAD_VLOAD_REG.
#define CYCLAD_NLOAD_REG(I, p) (*reinterpret_cast<const volatile typename Simd<I>::U*>(p))
// Store W doubles as W floats (rounded to nearest).
#define CYCLAD_NSTORE_F32(I, p, v)                                  \
  (*reinterpret_cast<typename Simd<I>::FU*>(p) =                    \
       __builtin_convertvector((v), typename Simd<I>::F))
// Load W floats as W doubles (exact).
#define CYCLAD_NLOAD_F32(I, p) \
  (__builtin_convertvector(*reinterpret_cast<const typename Simd<I>::FU*>(p), typename Simd<I>::V))
#else
template <Isa I>
struct Simd {
  using V = dvec;
  static constexpr std::size_t W = kDistLanes;
};
#define CYCLAD_NLOAD(I, p) CYCLAD_VLOAD(p)
#define CYCLAD_NSTORE(I, p, v) CYCLAD_VSTORE((p), (v))
#define CYCLAD_NLOAD_REG(I, p) CYCLAD_VLOAD(p)
#define CYCLAD_NSTORE_F32(I, p, v) CYCLAD_VSTORE_F32((p), (v))
inline dvec vload_f32(const float* p) {
  dvec r;
  for (std::size_t l = 0; l < kDistLanes; ++l) r.v[l] = static_cast<double>(p[l]);
  return r;
}
#define CYCLAD_NLOAD_F32(I, p) (::cyclad::kernels::detail::vload_f32(p))
#endif

/// Fold eight lanes in a fixed order.
inline double fold8(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/// True when any lane is NaN (the lanes hold sums of x - x, which is NaN exactly for a
/// non-finite x).
inline bool any_nan8(const double* a) {
  bool nan = false;
  for (std::size_t l = 0; l < kDistLanes; ++l) nan = nan || std::isnan(a[l]);
  return nan;
}

// Every hot loop keeps kUnroll independent accumulator chains (or a 2 x 4 tile of them): one
// chain would wait on the add/FMA latency at every step. Chunks are zero-padded to kPad.
inline constexpr std::size_t kUnroll = 4;
inline constexpr std::size_t kPad = kDistLanes * kUnroll;

#if defined(__GNUC__) || defined(__clang__)
#define CYCLAD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CYCLAD_ALWAYS_INLINE inline
#endif

inline std::size_t round_up_pad(std::size_t len) { return (len + kPad - 1) / kPad * kPad; }

/// Coordinates per chunk inside a reduction block, from the row count only (never from the
/// thread count): `rows` double rows of the chunk take about `budget` doubles (24 KB: L1, for
/// the pairwise tiles that revisit every row; larger for single-sweep kernels).
inline std::size_t chunk_for(std::size_t rows, std::size_t budget = 3072) {
  std::size_t c = budget / std::max<std::size_t>(rows, 1) / kPad * kPad;
  return std::clamp<std::size_t>(c, 2 * kPad, 2048);
}

/// Blocks a row of the distance-to-a-point pass sweeps in one run (64K coordinates: 256 KB of
/// float32, and z's 512 KB stays in L2 for the next row).
inline constexpr std::size_t kPointGroup = 8;

/// Convert `len` coordinates of a row to double times `scale` (a power of two: 1 except on
/// the overflow-safe path, see overflow_safe_exponent), zero-padding to a multiple of kPad.
template <typename T>
CYCLAD_ALWAYS_INLINE void load_row(const T* CYCLAD_RESTRICT r, std::size_t len,
                                   double* CYCLAD_RESTRICT b, double scale) {
  if (scale == 1.0) {
    for (std::size_t k = 0; k < len; ++k) b[k] = static_cast<double>(r[k]);
  } else {
    for (std::size_t k = 0; k < len; ++k) b[k] = static_cast<double>(r[k]) * scale;
  }
  for (std::size_t k = len; k < round_up_pad(len); ++k) b[k] = 0.0;
}

/// Add 4 x 8 lane partials `part` (chain u = lanes 8u..8u+7) to the 8 lanes of `acc`, chains
/// in order: the fold of every 4-chain sum below.
CYCLAD_ALWAYS_INLINE void fold_chains(const double* CYCLAD_RESTRICT part,
                                      double* CYCLAD_RESTRICT acc) {
  for (std::size_t l = 0; l < kDistLanes; ++l) {
    double t = acc[l];
    for (std::size_t u = 0; u < kUnroll; ++u) t += part[u * kDistLanes + l];
    acc[l] = t;
  }
}

/// flag (8 lanes) += sum over the padded row of (v - v): NaN exactly when a value is not finite.
/// Lane l of chain u sums coordinates k + 8u + l (k a multiple of kPad), whatever the ISA.
template <Isa I>
CYCLAD_ALWAYS_INLINE void accumulate_flag(const double* CYCLAD_RESTRICT b, std::size_t padded,
                                          double* CYCLAD_RESTRICT flag) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W, Q = 4, passes = kPad / (Q * W);
  alignas(64) double part[kPad];
  for (std::size_t h = 0; h < passes; ++h) {
    V f[Q] = {};
    for (std::size_t k = 0; k < padded; k += kPad) {
      for (std::size_t q = 0; q < Q; ++q) {
        V v = CYCLAD_NLOAD(I, b + k + (h * Q + q) * W);
        f[q] += v - v;
      }
    }
    for (std::size_t q = 0; q < Q; ++q) CYCLAD_NSTORE(I, part + (h * Q + q) * W, f[q]);
  }
  fold_chains(part, flag);
}

/// acc (8 lanes) += sum over the padded rows of (a - b)^2, in the lanes and chains of
/// accumulate_flag.
template <Isa I>
CYCLAD_ALWAYS_INLINE void accumulate_sq_dist(const double* CYCLAD_RESTRICT a,
                                             const double* CYCLAD_RESTRICT b, std::size_t padded,
                                             double* CYCLAD_RESTRICT acc) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W, Q = 4, passes = kPad / (Q * W);
  alignas(64) double part[kPad];
  for (std::size_t h = 0; h < passes; ++h) {
    V s[Q] = {};
    for (std::size_t k = 0; k < padded; k += kPad) {
      for (std::size_t q = 0; q < Q; ++q) {
        const std::size_t o = k + (h * Q + q) * W;
        V d = CYCLAD_NLOAD(I, a + o) - CYCLAD_NLOAD(I, b + o);
        s[q] += d * d;
      }
    }
    for (std::size_t q = 0; q < Q; ++q) CYCLAD_NSTORE(I, part + (h * Q + q) * W, s[q]);
  }
  fold_chains(part, acc);
}

/// Prefetch `len` coordinates of n rows starting at column c0 (the next chunk), so the rows
/// stream in while the current chunk is computed; the hardware prefetchers do not keep up with
/// n concurrent strided streams.
template <typename T>
inline void prefetch_rows(const T* x, std::size_t n, std::size_t stride, std::size_t c0,
                          std::size_t len, const unsigned char* skip = nullptr) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr std::size_t step = 64 / sizeof(T);
  for (std::size_t i = 0; i < n; ++i) {
    if (skip != nullptr && skip[i]) continue;
    const T* r = x + i * stride + c0;
    for (std::size_t k = 0; k < len; k += step) {
      // GCC treats a prefetch as free of side effects and, at -O2 and above (-ffinite-loops),
      // deletes a loop of nothing else: every prefetch of these kernels was gone (measured:
      // Krum at n=20, D=1e6 took twice as long). The empty volatile asm keeps the loop.
      __asm__ volatile("");
      __builtin_prefetch(r + k, 0, 3);
    }
  }
#else
  (void)x, (void)n, (void)stride, (void)c0, (void)len, (void)skip;
#endif
}

/// load_row that first prefetches the same row's `len` coordinates `ahead` further (the next
/// chunk): the prefetches of the next chunk go out row by row, between the conversions, not in
/// one burst for all rows, which fills the line-fill buffers and stalls the loads behind it
/// (measured: 10-15 % per affine step on AVX2 and AVX-512). A prefetch past the end of the
/// data does not fault.
template <typename T>
CYCLAD_ALWAYS_INLINE void load_row_ahead(const T* CYCLAD_RESTRICT r, std::size_t len,
                                         double* CYCLAD_RESTRICT b, double scale,
                                         std::size_t ahead) {
  prefetch_rows(r, 1, 0, ahead, len);
  load_row(r, len, b, scale);
}

/// Bytes ahead of a single row stream that its software prefetches reach.
inline constexpr std::size_t kRowAhead = 4096;

/// The sums of accumulate_sq_dist(row * scale, z * scale) and accumulate_flag(row * scale)
/// over a chunk of `padded` coordinates, read straight from the row of T values and from z:
/// their first `whole` coordinates from `r` and `z`, the rest (whole < padded: the chunk's
/// last, partial kPad group, converted, scaled and zero-padded) from `tail` and `ztail`. z null
/// stands for zeros (nothing subtracted). The lanes, chains and order of the buffered pair
/// (load_row, then the two accumulations), so the same bits.
template <Isa I, typename T>
CYCLAD_ALWAYS_INLINE void point_row_sums(const T* CYCLAD_RESTRICT r, const double* CYCLAD_RESTRICT z,
                                         const double* CYCLAD_RESTRICT tail,
                                         const double* CYCLAD_RESTRICT ztail, std::size_t whole,
                                         std::size_t padded, double scale,
                                         double* CYCLAD_RESTRICT acc,
                                         double* CYCLAD_RESTRICT flag) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W, Q = 4, passes = kPad / (Q * W);
  alignas(64) double ps[kPad], pf[kPad];
  const bool scaled = scale != 1.0;
  for (std::size_t h = 0; h < passes; ++h) {
    V s[Q] = {}, f[Q] = {};
    auto step = [&](const V& v, const V& zv, std::size_t q) CYCLAD_INLINE_LAMBDA {
      const V d = z != nullptr ? v - zv : v;
      s[q] += d * d;
      f[q] += v - v;
    };
    for (std::size_t k = 0; k < whole; k += kPad) {
      if (h == 0) {
        // The loads of one row stream alone keep too few lines in flight: prefetch ahead,
        // every line of the group once.
        prefetch_rows(r, 1, 0, k + kRowAhead / sizeof(T), kPad);
      }
      for (std::size_t q = 0; q < Q; ++q) {
        const std::size_t o = k + (h * Q + q) * W;
        V v, zv = {};
        if constexpr (std::is_same_v<T, float>) {
          v = CYCLAD_NLOAD_F32(I, r + o);
        } else {
          v = CYCLAD_NLOAD(I, r + o);
        }
        if (z != nullptr) zv = CYCLAD_NLOAD(I, z + o);
        if (scaled) {
          v = v * scale;
          zv = zv * scale;
        }
        step(v, zv, q);
      }
    }
    for (std::size_t k = whole; k < padded; k += kPad) {
      for (std::size_t q = 0; q < Q; ++q) {
        const std::size_t o = k - whole + (h * Q + q) * W;
        // Copies: the tails are not V-aligned.
        const V v = CYCLAD_NLOAD(I, tail + o), zv = CYCLAD_NLOAD(I, ztail + o);
        step(v, zv, q);
      }
    }
    for (std::size_t q = 0; q < Q; ++q) {
      CYCLAD_NSTORE(I, ps + (h * Q + q) * W, s[q]);
      CYCLAD_NSTORE(I, pf + (h * Q + q) * W, f[q]);
    }
  }
  fold_chains(ps, acc);
  fold_chains(pf, flag);
}

/// Squared-distance tile: IA rows a[] against J rows b[]; for each pair, acc[i * J + j] (8 lanes)
/// += the pair's sum over the padded chunk, lane l summing coordinates k + l (k a multiple of
/// 8) in one chain. The chain does not depend on the tile shape, so every pair has the same sum
/// whatever tile it lands in. The 8 lanes are covered in 8 / W passes of W lanes; a tile holds
/// IA * J accumulators, IA + J loads and a temporary in registers.
template <Isa I, std::size_t IA, std::size_t J>
CYCLAD_ALWAYS_INLINE void sq_dist_tile(const double* const* a, const double* const* b,
                                       double* const* acc, std::size_t padded) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W;
  for (std::size_t h = 0; h < kDistLanes; h += W) {
    V s[IA][J] = {};
    for (std::size_t k = h; k < padded; k += kDistLanes) {
      V bv[J];
      for (std::size_t j = 0; j < J; ++j) bv[j] = CYCLAD_NLOAD_REG(I, b[j] + k);
      for (std::size_t i = 0; i < IA; ++i) {
        V av = CYCLAD_NLOAD(I, a[i] + k);
        for (std::size_t j = 0; j < J; ++j) {
          V d = av - bv[j];
          s[i][j] += d * d;
        }
      }
    }
    for (std::size_t i = 0; i < IA; ++i) {
      for (std::size_t j = 0; j < J; ++j) {
        double* t = acc[i * J + j] + h;
        CYCLAD_NSTORE(I, t, CYCLAD_NLOAD(I, t) + s[i][j]);
      }
    }
  }
}

/// sq_dist_tile for one point z against J rows b[] (the same lanes and chain per pair, so the
/// same sums): z is held in a register and each row's vector is used once, straight from
/// memory, so J accumulators, z and a temporary fit the 16 registers of AVX2 up to J = 8.
template <Isa I, std::size_t J>
CYCLAD_ALWAYS_INLINE void sq_dist_point(const double* z, const double* const* b,
                                        double* const* acc, std::size_t padded) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W;
  for (std::size_t h = 0; h < kDistLanes; h += W) {
    V s[J] = {};
    for (std::size_t k = h; k < padded; k += kDistLanes) {
      V zv = CYCLAD_NLOAD_REG(I, z + k);
      for (std::size_t j = 0; j < J; ++j) {
        V d = zv - CYCLAD_NLOAD(I, b[j] + k);
        s[j] += d * d;
      }
    }
    for (std::size_t j = 0; j < J; ++j) {
      double* t = acc[j] + h;
      CYCLAD_NSTORE(I, t, CYCLAD_NLOAD(I, t) + s[j]);
    }
  }
}

/// Squared distances of P independent pairs (a[p], b[p]) in the lanes and chain of
/// sq_dist_tile: the pairs (i, i + 1) of the pairwise pass, a few at a time so that their
/// chains overlap.
template <Isa I, std::size_t P>
CYCLAD_ALWAYS_INLINE void sq_dist_pairs(const double* const* a, const double* const* b,
                                        double* const* acc, std::size_t padded) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W;
  for (std::size_t h = 0; h < kDistLanes; h += W) {
    V s[P] = {};
    for (std::size_t k = h; k < padded; k += kDistLanes) {
      for (std::size_t p = 0; p < P; ++p) {
        V d = CYCLAD_NLOAD(I, a[p] + k) - CYCLAD_NLOAD(I, b[p] + k);
        s[p] += d * d;
      }
    }
    for (std::size_t p = 0; p < P; ++p) {
      double* t = acc[p] + h;
      CYCLAD_NSTORE(I, t, CYCLAD_NLOAD(I, t) + s[p]);
    }
  }
}

/// Index of pair (i, j), i < j, in the row-major upper triangle of an n x n matrix.
inline std::size_t pair_index(std::size_t n, std::size_t i, std::size_t j) {
  return i * (2 * n - i - 1) / 2 + (j - i - 1);
}

/// One kReduceBlock [lo, hi) of the pairwise pass: part[p] = sum over the block of
/// (x_i - x_j)^2 for the p-th pair i < j (row-major upper triangle), bad[i] = 1 when row i has a
/// non-finite entry in the block. `buf` holds n * chunk doubles, `acc` (n(n-1)/2 + n) * 8.
/// Rows go in pairs (i, i + 1) against four rows at a time (a 2 x 4 tile: 6 loads for 8
/// squared differences); the pairs (i, i + 1) themselves go four at a time. Every pair sums in
/// the same lanes and order whatever tile it is in (sq_dist_tile), so the result does not
/// depend on n's tiling, the thread count or the ISA's vector width.
/// Values are multiplied by `scale` (a power of two) as they are loaded.
template <Isa I, typename T>
CYCLAD_KERNEL void pairwise_block(const T* CYCLAD_RESTRICT x, std::size_t n,
                                  std::size_t stride, std::size_t lo, std::size_t hi,
                                  std::size_t chunk, double scale, double* CYCLAD_RESTRICT buf,
                                  double* CYCLAD_RESTRICT acc, double* CYCLAD_RESTRICT part,
                                  unsigned char* CYCLAD_RESTRICT bad) {
  const std::size_t np = n * (n - 1) / 2;
  std::fill(acc, acc + (np + n) * kDistLanes, 0.0);
  double* flag = acc + np * kDistLanes;
  auto row = [&](std::size_t i) CYCLAD_INLINE_LAMBDA { return buf + i * chunk; };
  auto pair = [&](std::size_t i, std::size_t j) CYCLAD_INLINE_LAMBDA {
    return acc + pair_index(n, i, j) * kDistLanes;
  };
  for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
    const std::size_t len = std::min(chunk, hi - c0);
    const std::size_t padded = round_up_pad(len);
    for (std::size_t i = 0; i < n; ++i) {
      load_row(x + i * stride + c0, len, row(i), scale);
      accumulate_flag<I>(row(i), padded, flag + i * kDistLanes);
    }
    // The next chunk's rows are prefetched two at a time, spread over the tile sweep.
    const std::size_t next = c0 + 2 * chunk < hi ? std::min(chunk, hi - c0 - 2 * chunk) : 0;
    if (next != 0 && n % 2 == 1) prefetch_rows(x + (n - 1) * stride, 1, 0, c0 + 2 * chunk, next);
    // The pairs (i, i + 1), i even, four at a time.
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const double* a[4] = {row(i), row(i + 2), row(i + 4), row(i + 6)};
      const double* b[4] = {row(i + 1), row(i + 3), row(i + 5), row(i + 7)};
      double* p[4] = {pair(i, i + 1), pair(i + 2, i + 3), pair(i + 4, i + 5), pair(i + 6, i + 7)};
      sq_dist_pairs<I, 4>(a, b, p, padded);
    }
    for (; i + 1 < n; i += 2) {
      const double* a[1] = {row(i)};
      const double* b[1] = {row(i + 1)};
      double* p[1] = {pair(i, i + 1)};
      sq_dist_pairs<I, 1>(a, b, p, padded);
    }
    for (i = 0; i + 1 < n; i += 2) {
      if (next != 0) prefetch_rows(x + i * stride, 2, stride, c0 + 2 * chunk, next);
      const double* a[2] = {row(i), row(i + 1)};
      std::size_t j = i + 2;
      for (; j + 4 <= n; j += 4) {
        const double* b[4] = {row(j), row(j + 1), row(j + 2), row(j + 3)};
        double* p[8];
        for (std::size_t q = 0; q < 4; ++q) {
          p[q] = pair(i, j + q);
          p[4 + q] = pair(i + 1, j + q);
        }
        sq_dist_tile<I, 2, 4>(a, b, p, padded);
      }
      // The last one to three rows: a 2 x 2 tile keeps four chains going (a 2 x 1 tile has
      // only two, and waits on the FMA latency).
      if (j + 2 <= n) {
        const double* b[2] = {row(j), row(j + 1)};
        double* p[4] = {pair(i, j), pair(i, j + 1), pair(i + 1, j), pair(i + 1, j + 1)};
        sq_dist_tile<I, 2, 2>(a, b, p, padded);
        j += 2;
      }
      if (j < n) {
        const double* b[1] = {row(j)};
        double* p[2] = {pair(i, j), pair(i + 1, j)};
        sq_dist_tile<I, 2, 1>(a, b, p, padded);
      }
    }
  }
  for (std::size_t p = 0; p < np; ++p) part[p] = fold8(acc + p * kDistLanes);
  for (std::size_t i = 0; i < n; ++i) bad[i] = any_nan8(flag + i * kDistLanes) ? 1 : 0;
}

/// Blocks [b0, b1) of the distance-to-a-point pass: part[b * n + i] = sum over block b of
/// (scale x_i - scale z)^2 (z = 0 when `z` is null), bad[b * n + i] = 1 for a non-finite entry
/// of row i in the block. Each block sums in chunks of `chunk` coordinates, in the lanes and
/// chains of accumulate_sq_dist, so a block's partial depends on n and D only.
template <Isa I, typename T>
CYCLAD_KERNEL void point_dist_rows(const T* CYCLAD_RESTRICT x, std::size_t n,
                                   std::size_t stride, std::size_t d, std::size_t b0,
                                   std::size_t b1, std::size_t chunk, double scale,
                                   const double* CYCLAD_RESTRICT z,
                                   double* CYCLAD_RESTRICT part,
                                   unsigned char* CYCLAD_RESTRICT bad) {
  alignas(64) double tail[kPad], ztail[kPad], acc[2 * kDistLanes];
  std::fill(ztail, ztail + kPad, 0.0);
  // Each row sweeps kPointGroup blocks at a time in one contiguous run (the hardware
  // prefetchers follow it, where n short strided runs per chunk would wait on memory); z's
  // share of the group is reread from the cache for every row.
  for (std::size_t g0 = b0; g0 < b1; g0 += kPointGroup) {
    const std::size_t g1 = std::min(b1, g0 + kPointGroup);
    for (std::size_t i = 0; i < n; ++i) {
      const T* row = x + i * stride;
      for (std::size_t b = g0; b < g1; ++b) {
        const std::size_t lo = b * kReduceBlock, hi = std::min(d, lo + kReduceBlock);
        std::fill(acc, acc + 2 * kDistLanes, 0.0);
        for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
          const std::size_t len = std::min(chunk, hi - c0);
          const std::size_t padded = round_up_pad(len), whole = len / kPad * kPad;
          for (std::size_t k = whole; k < padded; ++k) {
            tail[k - whole] = k < len ? static_cast<double>(row[c0 + k]) * scale : 0.0;
            if (z != nullptr) ztail[k - whole] = k < len ? z[c0 + k] * scale : 0.0;
          }
          point_row_sums<I>(row + c0, z != nullptr ? z + c0 : nullptr, tail, ztail, whole,
                            padded, scale, acc, acc + kDistLanes);
        }
        part[b * n + i] = fold8(acc);
        bad[b * n + i] = any_nan8(acc + kDistLanes) ? 1 : 0;
      }
    }
  }
}

/// Vectors per step of affine_step_block's update (independent chains over the rows).
inline constexpr std::size_t kAffineVecs = 8;

/// One kReduceBlock of an affine step, in place on z over [lo, hi):
///   z_new = alpha * z + sum_{i in act} beta_i * x_i   (summed in the order of act)
/// Rows outside `act` are never read nor multiplied, so a non-finite row contributes nothing.
/// In the same pass part[i] = sum (z_new - x_i)^2 over the block for every row of act (when
/// `dists`), part[n] = sum (z_new - z)^2 and part[n + 1] = sum z^2 (the old z). The sums are
/// of the values times `scale` (a power of two, so z itself is stored unscaled and exact
/// unless it underflows); with scale = 1 nothing is multiplied.
/// `buf` holds (n + 1) * chunk doubles, `acc` (n + 2) * 8.
template <Isa I, typename T>
CYCLAD_KERNEL void affine_step_block(const T* CYCLAD_RESTRICT x, std::size_t n,
                                           std::size_t stride, std::size_t lo, std::size_t hi,
                                           std::size_t chunk, double scale, double alpha,
                                           const double* CYCLAD_RESTRICT beta,
                                           const std::size_t* CYCLAD_RESTRICT act,
                                           std::size_t nact, bool dists,
                                           double* CYCLAD_RESTRICT z,
                                           double* CYCLAD_RESTRICT buf,
                                           double* CYCLAD_RESTRICT acc,
                                           double* CYCLAD_RESTRICT part) {
  std::fill(acc, acc + (n + 2) * kDistLanes, 0.0);
  double* tail = buf + n * chunk;
  for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
    const std::size_t len = std::min(chunk, hi - c0);
    const std::size_t padded = round_up_pad(len);
    for (std::size_t r = 0; r < nact; ++r) {
      load_row_ahead(x + act[r] * stride + c0, len, buf + act[r] * chunk, scale, chunk);
    }
    if (c0 + chunk < hi) {
      const std::size_t nlen = std::min(chunk, hi - c0 - chunk);
      prefetch_rows(z, 1, 0, c0 + chunk, nlen);
    }
    // z is updated in place; only a chunk shorter than its padding, or a scaled one, goes
    // through `tail`.
    double* zc = z + c0;
    const bool scaled = scale != 1.0;
    if (len != padded || scaled) {
      std::copy(z + c0, z + c0 + len, tail);
      std::fill(tail + len, tail + padded, 0.0);
      zc = tail;
    }
    double* zn = zc;
    {
      // Lanes and chains of accumulate_sq_dist for the two sums: the sums of coordinate
      // position p (mod kPad) accumulate in pm[p] / pn[p] over the kPad groups in order, so the
      // bits do not depend on how many vectors a step takes. Every coordinate of z is updated
      // exactly once. kAffineVecs vectors per step: that many independent multiply-add chains
      // over the rows (four chains waited on the add latency at every row: measured 1.3x
      // slower on AVX2), and still few enough for the 16 registers of AVX2.
      using V = typename Simd<I>::V;
      constexpr std::size_t W = Simd<I>::W, G = kAffineVecs * W;
      alignas(64) double pm[kPad] = {}, pn[kPad] = {};
      const auto step = [&](std::size_t off, auto count) CYCLAD_INLINE_LAMBDA {
        constexpr std::size_t Q = decltype(count)::value;
        V sv[Q];
        for (std::size_t q = 0; q < Q; ++q) {
          V o = CYCLAD_NLOAD(I, zc + off + q * W);
          if (scaled) o = o * scale;
          sv[q] = o * alpha;
        }
        // Rows outer, the Q vectors inner: one pointer and one weight per row and step.
        for (std::size_t r = 0; r < nact; ++r) {
          const double* row = buf + act[r] * chunk + off;
          const double w = beta[act[r]];
          for (std::size_t q = 0; q < Q; ++q) sv[q] += CYCLAD_NLOAD(I, row + q * W) * w;
        }
        for (std::size_t q = 0; q < Q; ++q) {
          V o = CYCLAD_NLOAD(I, zc + off + q * W);  // reloaded: fewer live registers
          if (scaled) o = o * scale;
          CYCLAD_NSTORE(I, zn + off + q * W, sv[q]);
          const V d = sv[q] - o;
          double* m = pm + (off + q * W) % kPad;
          double* nn = pn + (off + q * W) % kPad;
          CYCLAD_NSTORE(I, m, CYCLAD_NLOAD(I, m) + d * d);
          CYCLAD_NSTORE(I, nn, CYCLAD_NLOAD(I, nn) + o * o);
        }
      };
      // padded is a multiple of kPad; G is kPad (AVX2), kPad / 2 (baseline) or 2 kPad
      // (AVX-512: a last single kPad group takes half a step).
      std::size_t off = 0;
      for (; off + G <= padded; off += G) {
        step(off, std::integral_constant<std::size_t, kAffineVecs>{});
      }
      for (; off < padded; off += kPad) step(off, std::integral_constant<std::size_t, kPad / W>{});
      fold_chains(pm, acc + n * kDistLanes);
      fold_chains(pn, acc + (n + 1) * kDistLanes);
    }
    if (dists) {
      // Four rows per sweep share the loads of z_new.
      std::size_t r = 0;
      for (; r + 8 <= nact; r += 8) {
        const double* b[8];
        double* p[8];
        for (std::size_t q = 0; q < 8; ++q) {
          b[q] = buf + act[r + q] * chunk;
          p[q] = acc + act[r + q] * kDistLanes;
        }
        sq_dist_point<I, 8>(zn, b, p, padded);
      }
      for (; r + 4 <= nact; r += 4) {
        const double* b[4] = {buf + act[r] * chunk, buf + act[r + 1] * chunk,
                              buf + act[r + 2] * chunk, buf + act[r + 3] * chunk};
        double* p[4] = {acc + act[r] * kDistLanes, acc + act[r + 1] * kDistLanes,
                        acc + act[r + 2] * kDistLanes, acc + act[r + 3] * kDistLanes};
        sq_dist_point<I, 4>(zn, b, p, padded);
      }
      for (; r < nact; ++r) {
        const double* b[1] = {buf + act[r] * chunk};
        double* p[1] = {acc + act[r] * kDistLanes};
        sq_dist_point<I, 1>(zn, b, p, padded);
      }
    }
    if (scaled) {
      const double inv = 1.0 / scale;
      for (std::size_t k = 0; k < len; ++k) z[c0 + k] = tail[k] * inv;
    } else if (zc == tail) {
      std::copy(tail, tail + len, z + c0);
    }
  }
  for (std::size_t i = 0; i < n + 2; ++i) part[i] = fold8(acc + i * kDistLanes);
}

/// How set_means computes its sums: internal nodes (sums of two earlier nodes; node ids below n
/// are the rows) are built first, then each set's sum is its terms added in order, scaled by
/// 1 / size and written to each of its output rows.
struct SetProgram {
  std::size_t n = 0;
  std::vector<std::size_t> left, right;                 // internal node n + q = left + right
  std::vector<std::size_t> term_off{0}, terms, size;    // per set: node ids, row count
  std::vector<std::size_t> out_off{0}, out_rows;        // per set: output rows
  std::vector<unsigned char> used;                      // rows read at all
  std::vector<std::size_t> row_off{0}, rows;            // per set: its rows (overflow path)
  std::size_t count() const { return size.size(); }
};

/// Terms of `set` over the node of rows [lo, hi): the node itself when it lies inside the set,
/// else its children's terms. Internal nodes are numbered on first use (post-order).
inline std::size_t tree_terms(const std::vector<unsigned char>& in, std::size_t lo,
                              std::size_t hi, std::map<std::pair<std::size_t, std::size_t>,
                                                       std::size_t>& ids,
                              SetProgram& prog, std::vector<std::size_t>& out, bool emit) {
  // Returns the node id of [lo, hi) (building it if needed) when emit is false.
  if (hi - lo == 1) {
    if (emit && in[lo]) out.push_back(lo);
    return lo;
  }
  bool all = true;
  for (std::size_t r = lo; r < hi; ++r) all = all && in[r];
  const std::size_t mid = lo + (hi - lo) / 2;
  if (emit && !all) {
    tree_terms(in, lo, mid, ids, prog, out, true);
    tree_terms(in, mid, hi, ids, prog, out, true);
    return 0;
  }
  auto it = ids.find({lo, hi});
  std::size_t id;
  if (it != ids.end()) {
    id = it->second;
  } else {
    std::vector<std::size_t> none;
    const std::size_t a = tree_terms(in, lo, mid, ids, prog, none, false);
    const std::size_t b = tree_terms(in, mid, hi, ids, prog, none, false);
    id = prog.n + prog.left.size();
    prog.left.push_back(a);
    prog.right.push_back(b);
    ids[{lo, hi}] = id;
  }
  if (emit) out.push_back(id);
  return id;
}

/// Group output rows by their (ordered) row set, then choose per call between summing each set
/// directly (in the given order) and sharing sums through a binary tree over the row indices
/// (sets ordered by index; NNM's n - f of n rows cost about f log(n / f) terms instead of
/// n - f), whichever needs fewer additions. The choice depends only on the sets.
inline SetProgram plan_sets(std::size_t n, const std::vector<std::vector<std::size_t>>& sets) {
  std::map<std::vector<std::size_t>, std::vector<std::size_t>> groups;
  std::vector<const std::vector<std::size_t>*> order;
  for (std::size_t o = 0; o < sets.size(); ++o) {
    auto [it, fresh] = groups.try_emplace(sets[o]);
    if (fresh) order.push_back(&it->first);
    it->second.push_back(o);
  }
  SetProgram direct, tree;
  direct.n = tree.n = n;
  direct.used.assign(n, 0);
  std::size_t direct_cost = 0, tree_cost = 0;
  std::map<std::pair<std::size_t, std::size_t>, std::size_t> ids;
  bool sorted = true;
  for (const auto* key : order) {
    for (std::size_t r : *key) direct.used[r] = 1;
    direct.terms.insert(direct.terms.end(), key->begin(), key->end());
    direct.term_off.push_back(direct.terms.size());
    direct.size.push_back(key->size());
    direct_cost += key->size() - 1;
    sorted = sorted && std::is_sorted(key->begin(), key->end());
    const auto& outs = groups[*key];
    direct.out_rows.insert(direct.out_rows.end(), outs.begin(), outs.end());
    direct.out_off.push_back(direct.out_rows.size());
    direct.rows.insert(direct.rows.end(), key->begin(), key->end());
    direct.row_off.push_back(direct.rows.size());
  }
  if (!sorted || n < 4) return direct;
  tree.used = direct.used;
  tree.size = direct.size;
  tree.out_rows = direct.out_rows;
  tree.out_off = direct.out_off;
  tree.rows = direct.rows;
  tree.row_off = direct.row_off;
  std::vector<unsigned char> in(n);
  for (const auto* key : order) {
    std::fill(in.begin(), in.end(), static_cast<unsigned char>(0));
    for (std::size_t r : *key) in[r] = 1;
    std::vector<std::size_t> t;
    tree_terms(in, 0, n, ids, tree, t, true);
    tree.terms.insert(tree.terms.end(), t.begin(), t.end());
    tree.term_off.push_back(tree.terms.size());
    tree_cost += t.size() - 1;
  }
  tree_cost += tree.left.size();
  return tree_cost < direct_cost ? tree : direct;
}

/// The rare path of set_means_block: coordinates of set s whose double sum overflowed (finite
/// rows near the double maximum) are summed again in long double.
template <typename T>
[[gnu::cold]] void set_means_wide(const T* x, std::size_t stride, std::size_t c0,
                                  std::size_t len, const SetProgram& prog, std::size_t s, T* out,
                                  std::size_t out_stride) {
  const std::size_t r0 = prog.row_off[s], r1 = prog.row_off[s + 1];
  const T* first = out + prog.out_rows[prog.out_off[s]] * out_stride + c0;
  for (std::size_t k = 0; k < len; ++k) {
    if (std::isfinite(first[k])) continue;
    // A non-finite input keeps the double result (its Inf or NaN is the right mean); only
    // sums of finite values are redone (an intermediate overflow can also give NaN).
    long double acc = 0;
    bool finite = true;
    for (std::size_t r = r0; r < r1 && finite; ++r) {
      const T v = x[prog.rows[r] * stride + c0 + k];
      finite = std::isfinite(v);
      acc += static_cast<long double>(v);
    }
    if (!finite) continue;
    const T m = static_cast<T>(acc / static_cast<long double>(r1 - r0));
    for (std::size_t o = prog.out_off[s]; o < prog.out_off[s + 1]; ++o) {
      out[prog.out_rows[o] * out_stride + c0 + k] = m;
    }
  }
}

/// Means of row sets over the coordinates [lo, hi), following `prog` (see SetProgram); all sums
/// in double. `buf` holds (n + internal nodes + 1) * chunk doubles.
template <Isa I, typename T>
CYCLAD_KERNEL void set_means_block(const T* CYCLAD_RESTRICT x, std::size_t stride,
                                         std::size_t lo, std::size_t hi, std::size_t chunk,
                                         const SetProgram& prog, T* CYCLAD_RESTRICT out,
                                         std::size_t out_stride, bool stream,
                                         double* CYCLAD_RESTRICT buf) {
  const std::size_t n = prog.n, ni = prog.left.size();
  double* sb = buf + (n + ni) * chunk;
  for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
    const std::size_t len = std::min(chunk, hi - c0);
    const std::size_t padded = round_up_pad(len);
    for (std::size_t i = 0; i < n; ++i) {
      if (prog.used[i]) load_row_ahead(x + i * stride + c0, len, buf + i * chunk, 1.0, chunk);
    }
    for (std::size_t q = 0; q < ni; ++q) {
      const double* a = buf + prog.left[q] * chunk;
      const double* b = buf + prog.right[q] * chunk;
      double* c = buf + (n + q) * chunk;
      for (std::size_t k = 0; k < padded; k += Simd<I>::W) {
        CYCLAD_NSTORE(I, c + k, CYCLAD_NLOAD(I, a + k) + CYCLAD_NLOAD(I, b + k));
      }
    }
    // A full chunk stores the means straight from registers into the output rows; the last,
    // shorter chunk of a row goes through `sb`.
    const bool direct = len == padded;
    for (std::size_t s = 0; s < prog.count(); ++s) {
      const std::size_t t0 = prog.term_off[s], t1 = prog.term_off[s + 1];
      const std::size_t o0 = prog.out_off[s], o1 = prog.out_off[s + 1];
      const double inv = 1.0 / static_cast<double>(prog.size[s]);
      using V = typename Simd<I>::V;
      constexpr std::size_t W = Simd<I>::W, Q = 4;
      V flag = {};  // NaN in a lane when a mean is not finite (double inputs only)
      for (std::size_t k = 0; k < padded; k += Q * W) {
        V a[Q];
        const double* b0 = buf + prog.terms[t0] * chunk + k;
        for (std::size_t q = 0; q < Q; ++q) a[q] = CYCLAD_NLOAD(I, b0 + q * W);
        for (std::size_t t = t0 + 1; t < t1; ++t) {
          const double* b = buf + prog.terms[t] * chunk + k;
          for (std::size_t q = 0; q < Q; ++q) a[q] += CYCLAD_NLOAD(I, b + q * W);
        }
        for (std::size_t q = 0; q < Q; ++q) a[q] = a[q] * inv;
        if constexpr (std::is_same_v<T, double>) {
          for (std::size_t q = 0; q < Q; ++q) flag += a[q] - a[q];
        }
        if (!direct) {
          for (std::size_t q = 0; q < Q; ++q) CYCLAD_NSTORE(I, sb + k + q * W, a[q]);
          continue;
        }
        for (std::size_t o = o0; o < o1; ++o) {
          T* dst = out + prog.out_rows[o] * out_stride + c0 + k;
          T* to = dst;
          alignas(64) T tile[Q * W];
          const bool nt = stream && stream_aligned(dst);
          if (nt) to = tile;
          for (std::size_t q = 0; q < Q; ++q) {
            if constexpr (std::is_same_v<T, float>) {
              CYCLAD_NSTORE_F32(I, to + q * W, a[q]);
            } else {
              CYCLAD_NSTORE(I, to + q * W, a[q]);
            }
          }
          if (nt) stream_bytes(dst, tile, sizeof tile);
        }
      }
      if (!direct) {
        for (std::size_t o = o0; o < o1; ++o) {
          T* dst = out + prog.out_rows[o] * out_stride + c0;
          for (std::size_t k = 0; k < len; ++k) dst[k] = static_cast<T>(sb[k]);
        }
      }
      if constexpr (std::is_same_v<T, double>) {
        double fl[W];
        CYCLAD_NSTORE(I, fl, flag);
        bool nan = false;
        for (std::size_t l = 0; l < W; ++l) nan = nan || std::isnan(fl[l]);
        if (nan) set_means_wide(x, stride, c0, len, prog, s, out, out_stride);
      }
    }
  }
}

template <typename T>
void set_means(MatrixView<T> x, const std::vector<std::vector<std::size_t>>& sets, T* out,
               int threads) {
  if (sets.size() == 1) {
    // One set (Multi-Krum, MDA, SMEA, closest, a single bucket): the rows stream through the
    // mean's kernel, the same sums in the same order without the conversion buffer.
    rows_mean(x, sets[0].data(), sets[0].size(), out, threads);
    return;
  }
  const SetProgram prog = plan_sets(x.n, sets);
  const std::size_t nodes = x.n + prog.left.size() + 1;
  // 4096 doubles (32 KiB) of nodes: the sets' terms are read from L1 (a 128 KiB buffer in L2
  // left NNM 1.1-1.3x slower at n = 20).
  const std::size_t chunk = chunk_for(nodes, 4096);
  const bool stream = stream_output(sets.size() * x.d * sizeof(T));
  parallel_for(num_blocks(x.d), threads, grain_for(x.n * kReduceBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<double> buf(nodes * chunk);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kReduceBlock, hi = std::min(x.d, lo + kReduceBlock);
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        set_means_block<decltype(isa)::value>(x.data, x.row_stride, lo, hi, chunk, prog, out,
                                              x.d, stream, buf.data());
      });
    }
    if (stream) store_fence();
  });
}

/// Largest |x| over the rows without skip[i] (0 if none); one pass, order-independent.
template <typename T>
double max_abs_rows(MatrixView<T> x, const unsigned char* skip, int threads) {
  const std::size_t nb = num_blocks(x.d);
  std::vector<double> part(nb, 0.0);
  parallel_for(nb, threads, grain_for(x.n * kReduceBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kReduceBlock, hi = std::min(x.d, lo + kReduceBlock);
      double m = 0.0;
      for (std::size_t i = 0; i < x.n; ++i) {
        if (skip != nullptr && skip[i]) continue;
        const T* r = x.row(i);
        for (std::size_t k = lo; k < hi; ++k) m = std::max(m, std::fabs(static_cast<double>(r[k])));
      }
      part[b] = m;
    }
  });
  double m = 0.0;
  for (double v : part) m = std::max(m, v);
  return m;
}

/// Largest squared distance (or score, a sum of at most n of them) that leaves headroom for
/// the sums built on top of it: above it the pass is redone on scaled values.
inline double sq_dist_limit(std::size_t n) {
  return std::numeric_limits<double>::max() / (16.0 * static_cast<double>(n + 2));
}

/// Exponent e >= 0 such that values of magnitude <= m, times 2^-e, have squared distances
/// (D coordinates) whose sums over n + 2 terms stay below the double maximum with headroom:
/// 16 (m 2^-e)^2 D (n + 2) <= DBL_MAX. Scaling by a power of two is exact (barring underflow
/// of values 2^-e times smaller than m's magnitude, which lose precision, not order).
inline int overflow_safe_exponent(double m, std::size_t d, std::size_t n) {
  if (!(m > 0.0)) return 0;
  if (!std::isfinite(m)) m = std::numeric_limits<double>::max();
  const double cap = std::sqrt(std::numeric_limits<double>::max() /
                               (16.0 * static_cast<double>(d) * static_cast<double>(n + 2)));
  return std::max(std::ilogb(m) + 1 - std::ilogb(cap), 0);
}

/// Squared distances of the rows times 2^-e to z times 2^-e (z null = the origin), and the
/// non-finite row flags; +inf for a flagged row. Returns true when a finite row's distance
/// exceeds sq_dist_limit (the values must be scaled).
template <typename T>
bool point_pass(MatrixView<T> x, const double* z, int e, double* d2, unsigned char* bad,
                int threads) {
  const std::size_t nb = num_blocks(x.d), n = x.n;
  const std::size_t chunk = chunk_for(2);
  const double scale = std::ldexp(1.0, -e);
  std::vector<double> part(nb * n);
  std::vector<unsigned char> pbad(nb * n);
  parallel_for(nb, threads, grain_for(x.n * kReduceBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
      point_dist_rows<decltype(isa)::value>(x.data, n, x.row_stride, x.d, b0, b1, chunk, scale,
                                            z, part.data(), pbad.data());
    });
  });
  std::fill(d2, d2 + n, 0.0);
  std::fill(bad, bad + n, static_cast<unsigned char>(0));
  for (std::size_t b = 0; b < nb; ++b) {
    for (std::size_t i = 0; i < n; ++i) {
      d2[i] += part[b * n + i];
      bad[i] = static_cast<unsigned char>(bad[i] | pbad[b * n + i]);
    }
  }
  const double limit = sq_dist_limit(n);
  bool big = false;
  for (std::size_t i = 0; i < n; ++i) {
    if (bad[i]) {
      d2[i] = std::numeric_limits<double>::infinity();
    } else if (!(d2[i] <= limit)) {
      big = true;
    }
  }
  return big;
}

/// Squared distances of every row to z (null = the origin) and the non-finite row flags, in
/// units of 2^-2e: the returned e is 0 unless a finite row is so far from z that its squared
/// distance would overflow (huge finite values, e.g. +-1e300 in float64, are as hostile as
/// NaN); then the pass is redone on values times 2^-e, chosen from the largest |x| and `zmax`
/// (a bound on |z|_inf, now and over the caller's later steps; 0 when z is null) so that no
/// distance, nor a sum of n + 2 of them, can overflow. Flagged rows get +inf.
template <typename T>
int point_sq_dists(MatrixView<T> x, const double* z, double* d2, unsigned char* bad,
                   int threads, double zmax = 0.0) {
  if (!point_pass(x, z, 0, d2, bad, threads)) return 0;
  const int e = overflow_safe_exponent(std::max(max_abs_rows(x, bad, threads), zmax), x.d, x.n);
  point_pass(x, z, e, d2, bad, threads);
  return e;
}

/// One affine step over all of z (see affine_step_block), with the values times 2^-e in every
/// sum (e from point_sq_dists / pairwise_sq_distances_scaled, valid while z stays in the range
/// it was chosen for); d2[i] receives the squared distance of row i to the new z for rows
/// without skip[i], in units of 2^-2e. Returns {|z_new - z|, |z|}, in units of 2^-e.
template <typename T>
std::pair<double, double> affine_step(MatrixView<T> x, int e, double alpha, const double* beta,
                                      const unsigned char* skip, bool dists, double* z,
                                      double* d2, int threads) {
  const std::size_t nb = num_blocks(x.d), n = x.n, w = n + 2;
  const std::size_t chunk = chunk_for(n + 2);
  std::vector<double> part(nb * w);
  const double scale = std::ldexp(1.0, -e);
  std::vector<std::size_t> act;
  for (std::size_t i = 0; i < n; ++i) {
    if (!skip[i]) act.push_back(i);
  }
  parallel_for(nb, threads, grain_for(x.n * kReduceBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<double> buf((n + 2) * chunk), acc(w * kDistLanes);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kReduceBlock, hi = std::min(x.d, lo + kReduceBlock);
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        affine_step_block<decltype(isa)::value>(x.data, n, x.row_stride, lo, hi, chunk, scale,
                                                alpha, beta, act.data(), act.size(), dists, z,
                                                buf.data(), acc.data(), part.data() + b * w);
      });
    }
  });
  std::vector<double> tot(w, 0.0);
  for (std::size_t b = 0; b < nb; ++b) {
    for (std::size_t i = 0; i < w; ++i) tot[i] += part[b * w + i];
  }
  if (dists) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!skip[i]) {
        d2[i] = std::isfinite(tot[i]) ? tot[i] : std::numeric_limits<double>::infinity();
      }
    }
  }
  return {std::sqrt(tot[n]), std::sqrt(tot[n + 1])};
}

template <typename T>
void write_vector(const std::vector<double>& z, T* out, int threads) {
  parallel_for(z.size(), threads, grain_for(sizeof(double) + sizeof(T)), [&](std::size_t lo, std::size_t hi) {
    for (std::size_t k = lo; k < hi; ++k) out[k] = static_cast<T>(z[k]);
  });
}

/// dst[k] = T(double(src[k]) * s) for k in [0, len): the product rounded to double, then to T,
/// on the ISA's vectors; whole cache lines of dst are written with streaming stores when
/// `stream`.
template <Isa I, typename T>
CYCLAD_KERNEL void scale_row(T* CYCLAD_RESTRICT dst, const T* CYCLAD_RESTRICT src, double s,
                             std::size_t len, bool stream) {
  using V = typename Simd<I>::V;
  constexpr std::size_t W = Simd<I>::W, kTile = 64 / sizeof(T);
  std::size_t c = 0;
  if (stream) {
    for (; c < len && !stream_aligned(dst + c); ++c) {
      dst[c] = static_cast<T>(static_cast<double>(src[c]) * s);
    }
  }
  alignas(64) T tile[kTile];
  for (; c + kTile <= len; c += kTile) {
    T* to = stream ? tile : dst + c;
#if defined(__SSE2__)
    if constexpr (I == Isa::baseline && std::is_same_v<T, float>) {
      // Four floats per step in SSE2 (GCC spells a two-float conversion as two scalar ones).
      const __m128d sv = _mm_set1_pd(s);
      for (std::size_t q = 0; q < kTile; q += 4) {
        const __m128 v = _mm_loadu_ps(src + c + q);
        const __m128 lo = _mm_cvtpd_ps(_mm_mul_pd(_mm_cvtps_pd(v), sv));
        const __m128 hi = _mm_cvtpd_ps(_mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), sv));
        _mm_storeu_ps(to + q, _mm_movelh_ps(lo, hi));
      }
    } else
#endif
    for (std::size_t q = 0; q < kTile; q += W) {
      if constexpr (std::is_same_v<T, float>) {
        const V v = CYCLAD_NLOAD_F32(I, src + c + q);
        CYCLAD_NSTORE_F32(I, to + q, v * s);
      } else {
        const V v = CYCLAD_NLOAD(I, src + c + q);
        CYCLAD_NSTORE(I, to + q, v * s);
      }
    }
    if (stream) {
      // The whole line first, then its four streaming stores back to back: stores spread
      // between the conversions leave partly filled write-combining buffers to be flushed as
      // partial lines (measured on AVX2: scaling cost 4x a copy).
      __asm__ volatile("" ::: "memory");
      stream_bytes(dst + c, tile, sizeof tile);
    }
  }
  for (; c < len; ++c) dst[c] = static_cast<T>(static_cast<double>(src[c]) * s);
}

/// Row i scaled by s[i] (s[i] == 1 copies the row bit for bit); an output larger than the cache
/// is written with streaming stores (stream.hpp).
template <typename T>
void scale_rows(MatrixView<T> x, const double* s, T* out, int threads) {
  const bool stream = stream_output(x.n * x.d * sizeof(T));
  parallel_for(x.d, threads, grain_for(2 * x.n * sizeof(T)), [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = 0; i < x.n; ++i) {
      const T* r = x.row(i);
      T* o = out + i * x.d;
      if (s[i] == 1.0) {
        stream_copy(o + lo, r + lo, hi - lo, stream);
      } else {
        dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
          scale_row<decltype(isa)::value>(o + lo, r + lo, s[i], hi - lo, stream);
        });
      }
    }
    if (stream) store_fence();
  });
}

/// Order rows by (key, bad, index): the tie-breaking rule of every selection below.
inline std::vector<std::size_t> order_by(const std::vector<double>& key,
                                         const unsigned char* bad) {
  std::vector<std::size_t> idx(key.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
    if (key[a] != key[b]) return key[a] < key[b];
    return bad[a] < bad[b];
  });
  return idx;
}

template <typename T>
void check_matrix(MatrixView<T> x) {
  require(x.n >= 1 && x.d >= 1, "X must be a non-empty (n, D) matrix");
}

}  // namespace detail

namespace detail {

/// One pairwise pass over the rows times 2^-e: dist (n, n) with +inf for flagged rows. Returns
/// true when a pair of finite rows has a squared distance above sq_dist_limit.
template <typename T>
bool pairwise_pass(MatrixView<T> x, int e, double* dist, unsigned char* bad, int threads) {
  const std::size_t n = x.n, np = n * (n - 1) / 2, nb = num_blocks(x.d);
  const std::size_t chunk = chunk_for(n);
  const double scale = std::ldexp(1.0, -e);
  std::vector<double> part(nb * np);
  std::vector<unsigned char> pbad(nb * n);
  parallel_for(nb, threads, grain_for(x.n * kReduceBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<double> buf(n * chunk), acc((np + n) * kDistLanes);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kReduceBlock, hi = std::min(x.d, lo + kReduceBlock);
      dispatch_fused([&](auto isa) CYCLAD_INLINE_LAMBDA {
        pairwise_block<decltype(isa)::value>(x.data, n, x.row_stride, lo, hi, chunk, scale,
                                             buf.data(), acc.data(), part.data() + b * np,
                                             pbad.data() + b * n);
      });
    }
  });
  std::vector<double> tot(np, 0.0);
  std::fill(bad, bad + n, static_cast<unsigned char>(0));
  for (std::size_t b = 0; b < nb; ++b) {
    const double* pb = part.data() + b * np;
    for (std::size_t p = 0; p < np; ++p) tot[p] += pb[p];
    for (std::size_t i = 0; i < n; ++i) {
      bad[i] = static_cast<unsigned char>(bad[i] | pbad[b * n + i]);
    }
  }
  const double inf = std::numeric_limits<double>::infinity(), limit = sq_dist_limit(n);
  bool big = false;
  std::size_t p = 0;
  for (std::size_t i = 0; i < n; ++i) {
    dist[i * n + i] = 0.0;
    for (std::size_t j = i + 1; j < n; ++j, ++p) {
      double d = tot[p];
      if (bad[i] || bad[j]) {
        d = inf;
      } else if (!(d <= limit)) {
        big = true;
      }
      dist[i * n + j] = d;
      dist[j * n + i] = d;
    }
  }
  return big;
}

/// Pairwise squared distances in units of 2^-2e (see pairwise_sq_distances); returns e, which
/// is 0 unless two finite rows are so far apart that a distance, or a sum of n + 2 of them,
/// could overflow: then the pass is redone on the values times 2^-e.
template <typename T>
int pairwise_sq_distances_scaled(MatrixView<T> x, double* dist, unsigned char* bad,
                                 int threads) {
  if (!pairwise_pass(x, 0, dist, bad, threads)) return 0;
  const int e = overflow_safe_exponent(max_abs_rows(x, bad, threads), x.d, x.n);
  pairwise_pass(x, e, dist, bad, threads);
  return e;
}

}  // namespace detail

/// \brief All pairwise squared Euclidean distances in one pass over X.
/// \tparam T float or double.
/// \param[in] x (n, D) block, n >= 1.
/// \param[out] dist (n, n) row-major, symmetric, zero diagonal. Entries are accumulated in
/// double (each value converted before subtracting, so float32 values near the float32 maximum
/// cannot overflow), blocked over D in kReduceBlock partials combined in block order. When
/// finite float64 rows are so far apart that a squared distance would overflow, the pass is
/// redone on the values times a power of two (a second pass, only then) and the distances are
/// scaled back: a true distance above the double maximum is +inf, a smaller one is finite.
/// \param[out] bad (n,) 1 for a row with a non-finite entry. Every off-diagonal distance of such
/// a row is +inf.
/// \param threads 0 = all cores. Complexity O(n^2 D) flops, one read of x (three on the scaled
/// path); extra memory O(n^2 D / kReduceBlock) doubles. Bit-identical for any thread count.
template <typename T>
void pairwise_sq_distances(MatrixView<T> x, double* dist, unsigned char* bad, int threads) {
  detail::check_matrix(x);
  const int e = detail::pairwise_sq_distances_scaled(x, dist, bad, threads);
  if (e == 0) return;
  const std::size_t n = x.n;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      if (i != j && !bad[i] && !bad[j]) dist[i * n + j] = std::ldexp(dist[i * n + j], 2 * e);
    }
  }
}

/// \brief Krum scores (Blanchard et al. 2017): score_i = sum of the q smallest squared
/// distances from row i to the other rows (Blanchard et al.: q = n - f - 2), summed in
/// ascending order; +inf for a row with a non-finite entry.
/// \param[in] dist (n, n) from pairwise_sq_distances. \param[out] score (n,).
/// Requires 0 <= q <= n - 1.
inline void krum_scores(const double* dist, const unsigned char* bad, std::size_t n,
                        std::size_t q, double* score) {
  require(n >= 1 && q + 1 <= n, "krum needs 0 <= q <= n - 1 neighbours");
  std::vector<double> d;
  for (std::size_t i = 0; i < n; ++i) {
    d.clear();
    for (std::size_t j = 0; j < n; ++j) {
      if (j != i) d.push_back(dist[i * n + j]);
    }
    // The q smallest, summed in ascending order: nth_element then an introsort of those q is
    // O(n + q log q), where a heap-based partial_sort costs O(n log q) with a large constant
    // (q is close to n for small f). Same values in the same order, so the same sum.
    const auto qth = d.begin() + static_cast<std::ptrdiff_t>(q);
    if (q > 0 && qth != d.end()) std::nth_element(d.begin(), qth - 1, d.end());
    std::sort(d.begin(), qth);
    double s = 0.0;
    for (std::size_t k = 0; k < q; ++k) s += d[k];
    score[i] = bad[i] ? std::numeric_limits<double>::infinity() : s;
  }
}

/// Neighbour-count conventions of Krum in the peer libraries, as a function of the row count n
/// (see krum_neighbors): Blanchard et al. (n - f - 2), ByzFL (n - f - 1), Flower (n - f - 2, at
/// least 1).
enum class KrumNeighbors { kBlanchard, kByzfl, kFlower };

/// "blanchard", "byzfl" or "flower"; throws std::invalid_argument for anything else.
inline KrumNeighbors parse_krum_neighbors(const std::string& name) {
  if (name == "blanchard") return KrumNeighbors::kBlanchard;
  if (name == "byzfl") return KrumNeighbors::kByzfl;
  if (name == "flower") return KrumNeighbors::kFlower;
  throw std::invalid_argument("neighbors must be 'blanchard', 'byzfl' or 'flower', got '" +
                              name + "'");
}

/// The neighbour count q of a convention for n rows and f, clamped to [0, n - 1] (Flower:
/// [min(1, n - 1), n - 1]).
inline std::size_t krum_neighbors(KrumNeighbors c, std::size_t n, std::size_t f) {
  const auto sn = static_cast<long long>(n), sf = static_cast<long long>(f);
  long long q = sn - sf - (c == KrumNeighbors::kByzfl ? 1 : 2);
  if (c == KrumNeighbors::kFlower) q = std::max(q, 1LL);
  q = std::min(std::max(q, 0LL), sn - 1);
  return static_cast<std::size_t>(q);
}

/// \brief Krum: the row with the lowest Krum score over q neighbours (ties: a row without
/// non-finite entries first, then the lowest index).
/// \tparam T float or double.
/// \param[in] x (n, D). \param q 0 <= q <= n - 1 neighbours (Blanchard et al.: n - f - 2; ByzFL
/// `Krum(f)`: n - f - 1; Flower: max(1, n - f - 2)). \param[out] out (D,) a copy of the row.
/// NaN policy: rows with a non-finite entry are at infinite distance; with at most f of them
/// and q <= n - f - 1 the selected row is finite. Complexity O(n^2 D) (one pass over x) + O(D).
template <typename T>
void krum(MatrixView<T> x, std::size_t q, T* out, int threads) {
  detail::check_matrix(x);
  require(q + 1 <= x.n, "krum needs 0 <= q <= n - 1 neighbours");
  std::vector<double> dist(x.n * x.n), score(x.n);
  std::vector<unsigned char> bad(x.n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  krum_scores(dist.data(), bad.data(), x.n, q, score.data());
  const std::size_t sel = detail::order_by(score, bad.data())[0];
  const T* r = x.row(sel);
  parallel_for(x.d, threads, grain_for(2 * sizeof(T)),
               [&](std::size_t lo, std::size_t hi) { std::copy(r + lo, r + hi, out + lo); });
}

/// \brief Multi-Krum: the mean (accumulated in double) of the m rows with the lowest Krum
/// scores over q neighbours (ties as in krum), averaged in double in a fixed order (set_means),
/// or weighted by `w` (n weights, finite and >= 0; the selected ones not all zero; null: equal
/// weights) as in weighted_mean.
/// \param[in] x (n, D), 0 <= q <= n - 1, 1 <= m <= n. \param[out] out (D,).
/// NaN policy: with at most f non-finite rows, q <= n - f - 1 and m <= n - f, the result is
/// finite. Complexity O(n^2 D + m D), two passes over x (the second reads m rows).
template <typename T>
void multi_krum(MatrixView<T> x, std::size_t q, std::size_t m, const double* w, T* out,
                int threads) {
  detail::check_matrix(x);
  require(q + 1 <= x.n, "multi_krum needs 0 <= q <= n - 1 neighbours");
  require(m >= 1 && m <= x.n, "multi_krum needs 1 <= m <= n");
  if (w != nullptr) {
    for (std::size_t i = 0; i < x.n; ++i) {
      require(std::isfinite(w[i]) && w[i] >= 0.0, "weights must be finite and >= 0");
    }
  }
  std::vector<double> dist(x.n * x.n), score(x.n);
  std::vector<unsigned char> bad(x.n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  krum_scores(dist.data(), bad.data(), x.n, q, score.data());
  auto order = detail::order_by(score, bad.data());
  std::vector<std::size_t> rows(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m));
  std::sort(rows.begin(), rows.end());
  if (w != nullptr) {
    detail::weighted_rows_mean(x, rows.data(), rows.size(), w, out, threads);
  } else {
    detail::set_means(x, {rows}, out, threads);
  }
}

/// \brief Closest-to-reference averaging: the mean (in double, rows in index order, set_means)
/// of the beta rows nearest (Euclidean) to the point `ref`. Ties: a row without non-finite
/// entries first, then the lowest row index.
/// \param[in] x (n, D). \param[in] ref (D,) finite (std::invalid_argument otherwise).
/// \param beta 1 <= beta <= n. \param[out] out (D,).
/// NaN policy: a row with a non-finite entry is at infinite distance; with at most n - beta
/// of them the result is finite. Distances are taken on scaled values when they would
/// overflow (point_sq_dists). Complexity O(nD) for the distances + O(beta D), two passes.
template <typename T>
void closest(MatrixView<T> x, const double* ref, std::size_t beta, T* out, int threads) {
  detail::check_matrix(x);
  require(beta >= 1 && beta <= x.n, "closest needs 1 <= beta <= n");
  double zmax = 0.0;
  bool finite = true;
  for (std::size_t k = 0; k < x.d; ++k) {
    finite = finite && std::isfinite(ref[k]);
    zmax = std::max(zmax, std::fabs(ref[k]));
  }
  require(finite, "reference must be finite");
  std::vector<double> d2(x.n);
  std::vector<unsigned char> bad(x.n);
  detail::point_sq_dists(x, ref, d2.data(), bad.data(), threads, zmax);  // order only
  for (double& v : d2) {
    if (std::isnan(v)) v = std::numeric_limits<double>::infinity();
  }
  const auto order = detail::order_by(d2, bad.data());
  std::vector<std::size_t> rows(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(beta));
  std::sort(rows.begin(), rows.end());
  detail::set_means(x, {rows}, out, threads);
}

/// How Bulyan selects its theta = n - 2f rows: Krum re-run on the remaining rows after each
/// removal (El Mhamdi et al. 2018; Flower's flwr.server.strategy.Bulyan), or the theta best
/// Krum scores of one pass (Flower's flwr.serverapp.strategy.Bulyan).
enum class BulyanSelection { kIterated, kMultiKrum };

/// "iterated" or "multi_krum"; throws std::invalid_argument for anything else.
inline BulyanSelection parse_bulyan_selection(const std::string& name) {
  if (name == "iterated") return BulyanSelection::kIterated;
  if (name == "multi_krum") return BulyanSelection::kMultiKrum;
  throw std::invalid_argument("selection must be 'iterated' or 'multi_krum', got '" + name +
                              "'");
}

/// \brief Bulyan (El Mhamdi et al. 2018): select theta = n - 2f rows by Krum (see
/// BulyanSelection; each Krum step over the rows still remaining, n' of them, scores over
/// krum_neighbors(conv, n', f) neighbours, at least one; ties as in krum), then per coordinate
/// average the
/// beta = theta - 2f selected values closest to the selected rows' coordinate-wise median
/// (closest_coordinates). The pairwise distances are computed once; the iterated selection
/// works on the distance matrix.
/// \param[in] x (n, D), n >= 4f + 3. \param[out] out (D,).
/// NaN policy: with at most f rows with a non-finite entry (or overflow-sized), every selected
/// row is finite (each Krum step has a finite row with a finite score left), so the result is
/// finite and in the honest rows' box. Complexity O(n^2 D) (one pass) + O(n^2 log n + theta n^2)
/// selection + O(D theta log^2 theta) (one read of the selected rows). Bit-identical for any
/// thread count.
template <typename T>
void bulyan(MatrixView<T> x, std::size_t f, BulyanSelection sel, KrumNeighbors conv, T* out,
            int threads) {
  detail::check_matrix(x);
  const std::size_t n = x.n;
  require(n >= 4 * f + 3, "bulyan needs n >= 4f + 3, got n=" + std::to_string(n) +
                              ", f=" + std::to_string(f));
  const std::size_t theta = n - 2 * f, beta = theta - 2 * f;
  std::vector<double> dist(n * n), score(n);
  std::vector<unsigned char> bad(n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  std::vector<std::size_t> rows;
  if (sel == BulyanSelection::kMultiKrum) {
    krum_scores(dist.data(), bad.data(), n, krum_neighbors(conv, n, f), score.data());
    const auto order = detail::order_by(score, bad.data());
    rows.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(theta));
  } else {
    // Each row's other rows sorted by distance once; a step sums the first q alive entries
    // of each list, so a score is the same sum, in the same ascending order, as krum_scores
    // over the alive rows (O(n) per row and step instead of a selection per row and step).
    std::vector<std::size_t> near(n * (n - 1));
    std::vector<double> near_d(n * (n - 1));  // the sorted distances, read in order
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t* o = near.data() + i * (n - 1);
      for (std::size_t j = 0, k = 0; j < n; ++j) {
        if (j != i) o[k++] = j;
      }
      std::stable_sort(o, o + (n - 1), [&](std::size_t a, std::size_t b) {
        return dist[i * n + a] < dist[i * n + b];
      });
      for (std::size_t k = 0; k + 1 < n; ++k) near_d[i * (n - 1) + k] = dist[i * n + o[k]];
    }
    std::vector<unsigned char> alive(n, 1);
    for (std::size_t t = 0; t < theta; ++t) {
      // At least one neighbour while two rows remain: a score over none would tie every row
      // (the paper's n' - f - 2 reaches 0 in the last step for f = 1).
      const std::size_t q =
          std::max(krum_neighbors(conv, n - t, f), std::min<std::size_t>(1, n - t - 1));
      std::size_t best = n;
      for (std::size_t i = 0; i < n; ++i) {
        if (!alive[i]) continue;
        double sc = std::numeric_limits<double>::infinity();
        if (!bad[i]) {
          sc = 0.0;
          const std::size_t* o = near.data() + i * (n - 1);
          const double* od = near_d.data() + i * (n - 1);
          for (std::size_t k = 0, taken = 0; taken < q; ++k) {
            if (!alive[o[k]]) continue;
            sc += od[k];
            ++taken;
          }
        }
        score[i] = sc;
        // (score, bad, index) order, as detail::order_by.
        if (best == n || score[i] < score[best] ||
            (score[i] == score[best] && bad[i] < bad[best])) {
          best = i;
        }
      }
      alive[best] = 0;
      rows.push_back(best);
    }
  }
  std::sort(rows.begin(), rows.end());
  closest_coordinates(x, rows.data(), rows.size(), nullptr, beta, out, threads);
}

/// \brief Nearest-neighbour mixing (Allouah et al. 2023): row i of the output is the mean of the
/// n - f rows nearest to row i, itself included (ties: rows without non-finite entries first,
/// then the lowest index), averaged in double in a fixed order (set_means).
/// \param[in] x (n, D), 0 <= f <= n - 1. \param[out] out (n, D) row-major.
/// NaN policy: a finite row's neighbours are finite whenever at most f rows are non-finite, so
/// its output row is finite; the output row of a non-finite row stays non-finite.
/// Complexity O(n^2 D) (one pass) + O(n (n - f) D) (a second pass writing n D values); output
/// rows with the same neighbour set are computed once, and the sums of overlapping sets share
/// partial sums (about f log(n / f) additions per output row instead of n - f - 1).
template <typename T>
void nnm(MatrixView<T> x, std::size_t f, T* out, int threads) {
  detail::check_matrix(x);
  require(f < x.n, "nnm needs 0 <= f <= n - 1");
  const std::size_t n = x.n, k = n - f;
  std::vector<double> dist(n * n);
  std::vector<unsigned char> bad(n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  std::vector<std::vector<std::size_t>> sets(n);
  std::vector<double> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < n; ++j) key[j] = dist[i * n + j];
    key[i] = -1.0;  // itself first, whatever its distances
    auto order = detail::order_by(key, bad.data());
    sets[i].assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    std::sort(sets[i].begin(), sets[i].end());
  }
  detail::set_means(x, sets, out, threads);
}

/// \brief Bucketing (Karimireddy et al. 2022): rows taken in the order `perm`, averaged (in
/// double) in consecutive groups of s; the last group may be smaller.
/// \param[in] x (n, D). \param[in] perm a permutation of 0..n-1. \param s >= 1.
/// \param[out] out (ceil(n / s), D). NaN policy: a group with a non-finite row is non-finite.
/// Complexity O(n D), one pass.
template <typename T>
void bucketing(MatrixView<T> x, const std::int64_t* perm, std::size_t s, T* out, int threads) {
  detail::check_matrix(x);
  require(s >= 1, "bucketing needs s >= 1");
  std::vector<unsigned char> seen(x.n, 0);
  for (std::size_t i = 0; i < x.n; ++i) {
    require(perm[i] >= 0 && static_cast<std::size_t>(perm[i]) < x.n &&
                !seen[static_cast<std::size_t>(perm[i])],
            "perm must be a permutation of 0..n-1");
    seen[static_cast<std::size_t>(perm[i])] = 1;
  }
  const std::size_t nout = (x.n + s - 1) / s;
  std::vector<std::vector<std::size_t>> sets(nout);
  for (std::size_t i = 0; i < x.n; ++i) sets[i / s].push_back(static_cast<std::size_t>(perm[i]));
  detail::set_means(x, sets, out, threads);
}

/// \brief Static clipping: rows with norm > tau scaled (in double) to norm tau.
/// \param[in] x (n, D), tau > 0 finite. \param[out] out (n, D); x is never modified.
/// NaN policy: a row with a non-finite entry has no defined norm or direction and is copied
/// unchanged (it stays poisoned, for the robust rule after it). A finite row whose squared norm
/// overflows double is still scaled to norm tau (its norm is taken on scaled values).
/// Complexity O(n D), two passes (three when a norm overflows).
template <typename T>
void clip(MatrixView<T> x, double tau, T* out, int threads) {
  detail::check_matrix(x);
  require(std::isfinite(tau) && tau > 0.0, "tau must be finite and > 0");
  std::vector<double> d2(x.n), s(x.n, 1.0);
  std::vector<unsigned char> bad(x.n);
  // Norms in units of 2^-e: the true norm is norm * 2^e (it may exceed the double maximum).
  const int e = detail::point_sq_dists(x, nullptr, d2.data(), bad.data(), threads);
  for (std::size_t i = 0; i < x.n; ++i) {
    const double norm = std::sqrt(d2[i]);
    if (!bad[i] && std::ldexp(norm, e) > tau) s[i] = std::ldexp(tau / norm, -e);
  }
  detail::scale_rows(x, s.data(), out, threads);
}

/// Number of rows ARC clips: floor(2 f (n - f) / n), in exact integer arithmetic.
inline std::size_t arc_clipped(std::size_t n, std::size_t f) { return 2 * f * (n - f) / n; }

/// \brief Adaptive robust clipping (Allouah et al. 2024): with k = floor(2 f (n - f) / n), every
/// row is clipped to the norm of the (k + 1)-th largest-norm row (only the k largest change).
/// \param[in] x (n, D), 0 <= 2 f < n. \param[out] out (n, D).
/// NaN policy: rows with a non-finite entry rank above every finite norm and are copied
/// unchanged; if more than k rows are non-finite the threshold is +inf (nothing is clipped).
/// Finite rows whose squared norms overflow double are ranked and clipped on scaled norms.
/// Complexity O(n D), two passes (three when a norm overflows).
template <typename T>
void arc(MatrixView<T> x, std::size_t f, T* out, int threads) {
  detail::check_matrix(x);
  require(2 * f < x.n, "arc needs 0 <= f < n / 2");
  const std::size_t n = x.n, k = arc_clipped(n, f);
  std::vector<double> d2(n), s(n, 1.0);
  std::vector<unsigned char> bad(n);
  detail::point_sq_dists(x, nullptr, d2.data(), bad.data(), threads);  // ratios only
  std::vector<double> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    key[i] = bad[i] ? std::numeric_limits<double>::infinity() : d2[i];
  }
  std::vector<double> sorted(key);
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const double thr = std::sqrt(sorted[k]);
  for (std::size_t i = 0; i < n; ++i) {
    const double norm = std::sqrt(key[i]);
    if (!bad[i] && norm > thr) s[i] = thr / norm;
  }
  detail::scale_rows(x, s.data(), out, threads);
}

/// \brief Geometric median by smoothed Weiszfeld iterations.
///
/// Start: the medoid m of the finite rows (least sum of distances to the other finite rows,
/// lowest index on ties) and z_0 = mean of the ceil(h / 2) finite rows nearest to it (h finite
/// rows), so the start is robust and not a data point. Step: w_i = 1 / max(eps, |z - x_i|),
/// z <- sum w_i x_i / sum w_i over finite rows, until |z_new - z| <= tol * max(1, |z|), or 64
/// steps in a row were no shorter than the shortest so far (the iterates cycle at double
/// precision, so tol = 0 terminates too), or max_iter steps. Each step is one pass over x that
/// also accumulates |z_new - x_i|^2 (blocked partials in block order).
/// \param[in] x (n, D). \param[out] out (D,). \return the number of Weiszfeld steps run.
/// NaN policy: rows with a non-finite entry get weight 0 (skipped). If every row is non-finite
/// the result is all NaN. Finite rows far enough apart for a squared distance to overflow
/// double (e.g. +-1e200 in float64) keep their exact Weiszfeld weight: every distance is then
/// taken on the values times a power of two (pairwise_sq_distances). Complexity O(n^2 D) for
/// the start + O(n D) per step; extra memory D doubles.
/// How geometric_median starts: from the medoid of the finite rows (one pairwise pass, O(n^2 D))
/// and the mean of the half nearest to it, or from the mean of the finite rows (one O(n D)
/// pass, the usual start; an outlier then pulls the start, not the limit).
enum class GmStart { kMedoid, kMean };

/// "medoid" or "mean"; throws std::invalid_argument for anything else.
inline GmStart parse_gm_start(const std::string& name) {
  if (name == "medoid") return GmStart::kMedoid;
  if (name == "mean") return GmStart::kMean;
  throw std::invalid_argument("start must be 'medoid' or 'mean', got '" + name + "'");
}

template <typename T>
std::size_t geometric_median(MatrixView<T> x, double eps, std::size_t max_iter, double tol,
                             T* out, int threads, GmStart start = GmStart::kMedoid) {
  detail::check_matrix(x);
  require(std::isfinite(eps) && eps > 0.0, "eps must be finite and > 0");
  require(max_iter >= 1, "max_iter must be >= 1");
  require(std::isfinite(tol) && tol >= 0.0, "tol must be finite and >= 0");
  const std::size_t n = x.n;
  std::vector<double> dist(start == GmStart::kMedoid ? n * n : 0);
  std::vector<unsigned char> bad(n);
  std::vector<double> beta(n, 0.0), d2(n, std::numeric_limits<double>::infinity());
  // Every distance below is in units of 2^-e (squared: 2^-2e); e > 0 only when finite rows
  // are so far apart (or, for the mean start, so far from the origin) that their squared
  // distances would overflow. z stays in the convex hull of the finite rows, so the same e
  // keeps every later distance finite.
  const int e = start == GmStart::kMedoid
                    ? detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads)
                    : detail::point_sq_dists(x, nullptr, d2.data(), bad.data(), threads);
  std::vector<std::size_t> good;
  for (std::size_t i = 0; i < n; ++i) {
    if (!bad[i]) good.push_back(i);
  }
  if (good.empty()) {
    std::fill(out, out + x.d, std::numeric_limits<T>::quiet_NaN());
    return 0;
  }
  std::vector<double> z(x.d, 0.0);
  if (start == GmStart::kMean) {
    for (std::size_t i : good) beta[i] = 1.0 / static_cast<double>(good.size());
  } else {
    // Medoid of the finite rows.
    std::size_t med = good[0];
    double best = std::numeric_limits<double>::infinity();
    for (std::size_t i : good) {
      double s = 0.0;
      for (std::size_t j : good) s += std::sqrt(dist[i * n + j]);
      if (s < best) {
        best = s;
        med = i;
      }
    }
    // Start: mean of the ceil(h / 2) finite rows nearest to the medoid. The start pass also
    // yields the distance of every finite row to z_0.
    std::vector<double> key(n);
    for (std::size_t j = 0; j < n; ++j) key[j] = dist[med * n + j];
    const auto order = detail::order_by(key, bad.data());
    const std::size_t half = (good.size() + 1) / 2;
    for (std::size_t r = 0; r < half; ++r) beta[order[r]] = 1.0 / static_cast<double>(half);
  }
  detail::affine_step(x, e, 0.0, beta.data(), bad.data(), true, z.data(), d2.data(), threads);
  // The weights are ratios, so scaled distances give the same weights; eps and the unit of
  // the stopping rule are scaled along (eps 2^-e is kept at least the smallest positive
  // double, so a tiny eps cannot underflow to 0). Each weight is taken relative to the largest
  // one (dmin / d_i <= 1), so neither the weights nor their sum can overflow, whatever eps.
  const double eps_s = std::max(std::ldexp(eps, -e), std::numeric_limits<double>::denorm_min());
  const double one_s = std::ldexp(1.0, -e);
  std::size_t it = 0;
  // In floating point the iterates can end in a cycle at the last bits instead of a fixed
  // point; with tol = 0 and a huge max_iter that would never end. Converging steps keep getting
  // shorter, a cycle's do not: the loop also stops once kStall steps in a row were no shorter
  // than the shortest step so far (convergence at the precision of double).
  constexpr std::size_t kStall = 64;
  double shortest = std::numeric_limits<double>::infinity();
  std::size_t stalled = 0;
  while (it < max_iter) {
    double dmin = std::numeric_limits<double>::infinity();
    for (std::size_t i : good) {
      beta[i] = std::max(eps_s, std::sqrt(d2[i]));
      dmin = std::min(dmin, beta[i]);
    }
    double wsum = 0.0;
    for (std::size_t i : good) {
      beta[i] = dmin / beta[i];
      wsum += beta[i];
    }
    for (std::size_t i : good) beta[i] /= wsum;
    ++it;
    auto [move, norm] = detail::affine_step(x, e, 0.0, beta.data(), bad.data(), true, z.data(),
                                            d2.data(), threads);
    if (move <= tol * std::max(one_s, norm)) break;
    if (move < shortest) {
      shortest = move;
      stalled = 0;
    } else if (++stalled == kStall) {
      break;
    }
  }
  detail::write_vector(z, out, threads);
  return it;
}

/// \brief Centered clipping (Karimireddy et al. 2021), stateless:
/// v <- v + (1/n) sum_i clip_tau(x_i - v), `iters` times, from v = center (or 0 if null), where
/// clip_tau(y) = y * min(1, tau / |y|).
/// \param[in] x (n, D). \param tau > 0 finite. \param iters >= 1. \param[in] center (D,) or null.
/// \param[out] out (D,).
/// NaN policy: a row with a non-finite entry has an undefined difference, which contributes the
/// zero vector (it is still counted in the 1/n). The result then stays in the box spanned by the
/// finite rows and the center, widened by iters * tau * (number of far finite outliers) / n.
/// Finite rows so far from v that a squared distance would overflow double still contribute
/// their exact clipped difference (distances are then taken on values times a power of two).
/// Complexity O(n D) per iteration plus one pass for the first distances (iters + 1 passes).
template <typename T>
void centered_clipping(MatrixView<T> x, double tau, std::size_t iters, const double* center,
                       T* out, int threads) {
  detail::check_matrix(x);
  require(std::isfinite(tau) && tau > 0.0, "tau must be finite and > 0");
  require(iters >= 1, "iters must be >= 1");
  const std::size_t n = x.n;
  std::vector<double> v(x.d, 0.0), d2(n), beta(n);
  if (center != nullptr) std::copy(center, center + x.d, v.begin());
  std::vector<unsigned char> bad(n);
  // Each step moves v by at most tau, so |v|_inf <= |center|_inf + iters * tau throughout and
  // no distance exceeds the first one plus iters * tau. When that bound could overflow a
  // squared distance, every distance is taken on the values times 2^-e (exact ratios below).
  const double* c0 = center != nullptr ? v.data() : nullptr;
  double drift = static_cast<double>(iters) * tau, vmax = 0.0;
  if (!std::isfinite(drift)) drift = std::numeric_limits<double>::max();
  if (center != nullptr) {
    for (std::size_t k = 0; k < x.d; ++k) vmax = std::max(vmax, std::fabs(center[k]));
  }
  vmax = std::min(vmax + drift, std::numeric_limits<double>::max());
  int e = detail::point_sq_dists(x, c0, d2.data(), bad.data(), threads, vmax);
  if (e == 0) {
    double dmax = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!bad[i]) dmax = std::max(dmax, std::sqrt(d2[i]));
    }
    if (!((dmax + drift) * (dmax + drift) <= detail::sq_dist_limit(n))) {
      e = detail::overflow_safe_exponent(std::max(detail::max_abs_rows(x, bad.data(), threads),
                                                  vmax),
                                         x.d, n);
      detail::point_pass(x, c0, e, d2.data(), bad.data(), threads);
    }
  }
  const double inv_n = 1.0 / static_cast<double>(n);
  for (std::size_t it = 0; it < iters; ++it) {
    double bsum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      // tau / |x_i - v| with |x_i - v| = sqrt(d2) 2^e, without overflowing either factor.
      const double c = bad[i] ? 0.0 : std::min(1.0, std::ldexp(tau / std::sqrt(d2[i]), -e));
      beta[i] = c * inv_n;
      bsum += beta[i];
    }
    detail::affine_step(x, e, 1.0 - bsum, beta.data(), bad.data(), it + 1 < iters, v.data(),
                        d2.data(), threads);
  }
  detail::write_vector(v, out, threads);
}

}  // namespace cyclad::kernels
