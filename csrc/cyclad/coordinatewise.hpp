// SPDX-License-Identifier: Apache-2.0
// Coordinate-wise aggregation rules over an (n, D) row-major block, (n, D) -> (D,): the mean and
// the order statistics median, trimmed mean and meamed (vectorised sorting networks across
// coordinates). NaN policy (DESIGN §4): NaN orders above +Inf. Distance-based rules and
// pre-aggregations live in distance.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"

namespace cyclad::kernels {

namespace detail {
// Coordinates per sweep: 16384 double accumulators (128 KB) stay in L2, and each row is read
// in long runs that the hardware prefetchers follow (measured: 2048 was 1.5x slower).
inline constexpr std::size_t kMeanBlock = 16384;

/// Sum of one coordinate over the rows in long double: the rare path for double sums that
/// overflow although the mean is finite (rows near the double maximum).
/// `row(i)` is the start of the i-th row averaged.
template <typename T, typename Row>
[[gnu::cold]] inline double mean_wide(const Row& row, std::size_t n, std::size_t j) {
  long double acc = 0;
  for (std::size_t i = 0; i < n; ++i) acc += static_cast<long double>(row(i)[j]);
  return static_cast<double>(acc / static_cast<long double>(n));
}

/// Rows folded into the accumulators per sweep of mean_block.
inline constexpr std::size_t kMeanRows = 8;

/// One sweep of mean_block over coordinates [0, len) of the R rows p[0], ..., p[R - 1]
/// (already offset to the block), added in row order; when Weighted, row k's values times
/// w[k]. First: the sweep starts the sums (no accumulator read); Last: it writes the means to
/// out, s * c (c = 1 / n) or, when Weighted, s / c (c = the weight sum), and, for double,
/// keeps the sums in acc for the overflow check.
template <std::size_t R, bool First, bool Last, bool Weighted, typename T>
CYCLAD_KERNEL void mean_sweep(const T* const* p, const double* w, std::size_t len, double c,
                              double* CYCLAD_RESTRICT acc, T* CYCLAD_RESTRICT out) {
  const T* CYCLAD_RESTRICT q[R];
  for (std::size_t k = 0; k < R; ++k) q[k] = p[k];
  const auto term = [&](std::size_t k, std::size_t j) CYCLAD_INLINE_LAMBDA {
    if constexpr (Weighted) {
      return static_cast<double>(q[k][j]) * w[k];
    } else {
      return static_cast<double>(q[k][j]);
    }
  };
  // R row streams, each restarting the hardware prefetcher at every page: prefetch each a few
  // lines ahead, one prefetch per 64-byte line (a prefetch past the row's end does not fault).
  constexpr std::size_t kLine = 64 / sizeof(T), kAhead = 2048 / sizeof(T);
  for (std::size_t j0 = 0; j0 < len; j0 += kLine) {
    __asm__ volatile("");
#pragma GCC unroll 8
    for (std::size_t k = 0; k < R; ++k) __builtin_prefetch(q[k] + j0 + kAhead);
    const std::size_t j1 = std::min(len, j0 + kLine);
    for (std::size_t j = j0; j < j1; ++j) {
      double s = First ? term(0, j) : acc[j] + term(0, j);
#pragma GCC unroll 8
      for (std::size_t k = 1; k < R; ++k) s += term(k, j);
      if constexpr (Last) {
        if constexpr (Weighted) {
          out[j] = static_cast<T>(s / c);
        } else {
          out[j] = static_cast<T>(s * c);
        }
        if constexpr (sizeof(T) == sizeof(double)) acc[j] = s;
      } else {
        acc[j] = s;
      }
    }
  }
}

/// mean_sweep with a run-time row count r in [1, kMeanRows].
template <bool First, bool Last, bool Weighted, typename T>
CYCLAD_KERNEL void mean_sweep_n(std::size_t r, const T* const* p, const double* w,
                                std::size_t len, double c, double* acc, T* out) {
  switch (r) {
    case 1: return mean_sweep<1, First, Last, Weighted>(p, w, len, c, acc, out);
    case 2: return mean_sweep<2, First, Last, Weighted>(p, w, len, c, acc, out);
    case 3: return mean_sweep<3, First, Last, Weighted>(p, w, len, c, acc, out);
    case 4: return mean_sweep<4, First, Last, Weighted>(p, w, len, c, acc, out);
    case 5: return mean_sweep<5, First, Last, Weighted>(p, w, len, c, acc, out);
    case 6: return mean_sweep<6, First, Last, Weighted>(p, w, len, c, acc, out);
    case 7: return mean_sweep<7, First, Last, Weighted>(p, w, len, c, acc, out);
    default: return mean_sweep<kMeanRows, First, Last, Weighted>(p, w, len, c, acc, out);
  }
}

/// The sweeps of a (weighted) mean over a block of `len` coordinates: rows row(0), ...,
/// row(n - 1) (already offset to the block), kMeanRows per sweep, the first sweep starting the
/// sums and the last writing the means (ceil(n / kMeanRows) sweeps in all).
template <bool Weighted, typename T, typename Row>
CYCLAD_KERNEL void mean_sweeps(const Row& row, const double* w, std::size_t n, std::size_t len,
                               double c, double* acc, T* out) {
  const T* p[kMeanRows];
  for (std::size_t i = 0; i < n; i += kMeanRows) {
    const std::size_t r = std::min(kMeanRows, n - i);
    for (std::size_t k = 0; k < r; ++k) p[k] = row(i + k);
    const double* wi = Weighted ? w + i : nullptr;
    const bool first = i == 0, last = i + r == n;
    if (first && last) {
      mean_sweep_n<true, true, Weighted>(r, p, wi, len, c, acc, out);
    } else if (first) {
      mean_sweep_n<true, false, Weighted>(r, p, wi, len, c, acc, out);
    } else if (last) {
      mean_sweep_n<false, true, Weighted>(r, p, wi, len, c, acc, out);
    } else {
      mean_sweep_n<false, false, Weighted>(r, p, wi, len, c, acc, out);
    }
  }
}

/// Mean over coordinates [lo, hi) of the n rows row(0), ..., row(n - 1) (pointers to column 0).
template <Isa I, typename T, typename Row>
CYCLAD_KERNEL void mean_block(const Row& row, std::size_t n, std::size_t lo, std::size_t hi,
                              T* CYCLAD_RESTRICT out, double* CYCLAD_RESTRICT acc) {
  // Accumulate rows in double, in a fixed order per coordinate: the sum is the same for any
  // partition, and float32 rows near the float32 maximum cannot overflow.
  // Up to kMeanRows rows per sweep of the accumulators (added in row order, so the order per
  // coordinate is still rows 0, 1, 2, ...); the first sweep starts the sums and the last writes
  // the means: ceil(n / kMeanRows) sweeps in all, one when n <= kMeanRows.
  const std::size_t len = hi - lo;
  const double inv = 1.0 / static_cast<double>(n);
  const auto at = [&](std::size_t i) CYCLAD_INLINE_LAMBDA { return row(i) + lo; };
  mean_sweeps<false, T>(at, nullptr, n, len, inv, acc, out + lo);
  if constexpr (sizeof(T) == sizeof(double)) {
    // A sum of finite doubles can overflow; redo such coordinates in long double (an infinite
    // input keeps its infinite sum there too, and NaN stays NaN without this branch).
    for (std::size_t j = 0; j < len; ++j) {
      if (std::isinf(acc[j])) out[lo + j] = static_cast<T>(mean_wide<T>(row, n, lo + j));
    }
  }
}

/// Mean of the rows rows[0], ..., rows[nr - 1] of x (all n rows in order when `rows` is null),
/// summed in double in that order, into out (D,): mean's kernel, for any subset of the rows
/// (Multi-Krum's selection). Bit-identical for any thread count.
template <typename T>
void rows_mean(MatrixView<T> x, const std::size_t* rows, std::size_t nr, T* out, int threads) {
  const auto row = [&](std::size_t i) {
    return x.data + (rows != nullptr ? rows[i] : i) * x.row_stride;
  };
  // Column blocks of kMeanBlock keep the accumulators in L2 while the rows stream through.
  parallel_for(x.d, threads, grain_for(nr * sizeof(T), 1 << 14), [&](std::size_t lo, std::size_t hi) {
    std::vector<double> acc(std::min(hi - lo, kMeanBlock));
    for (std::size_t b = lo; b < hi; b += kMeanBlock) {
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        mean_block<decltype(isa)::value, T>(row, nr, b, std::min(hi, b + kMeanBlock), out,
                                            acc.data());
      });
    }
  });
}
}  // namespace detail

/// \brief Coordinate-wise arithmetic mean (the non-robust baseline).
/// \tparam T float or double.
/// \param[in] x (n, D) block, n >= 1.
/// \param[out] out (D,) result.
/// \param threads 0 = all cores. Complexity O(nD), one read of x. Bit-identical for any thread
/// count. Sums accumulate in double (float32 rows near the float32 maximum give their finite
/// mean); a double sum that overflows is redone in long double for that coordinate, so the
/// mean of finite rows is finite. NaN/Inf propagate (mean is deliberately not robust).
template <typename T>
void mean(MatrixView<T> x, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  detail::rows_mean(x, nullptr, x.n, out, threads);
}

// --------------------------------------------------------------------------------------------
// Coordinate-wise order statistics: median, trimmed mean, meamed.
//
// Design: blocks of kLanes coordinates (256 bytes of each row) are sorted "vertically" across
// the n rows by a Batcher odd-even merge network whose every comparator is a lane-wise min/max
// of order-preserving unsigned integer keys (NaN canonicalised to +qNaN, which then sorts above
// +Inf), and finished lane-wise from the ranks the rule needs. The network is generated once per
// call and pruned backwards so that only comparators that influence the needed ranks remain.
// It runs in two phases (NetworkPlan): its merge levels below G = kRegisterGroup (32 rows on
// AVX-512, 16 on AVX2 and the baseline, whatever their register file holds) sort the aligned
// groups of G rows independently, each loaded straight from x (software-prefetched), keyed and
// sorted in registers by a compile-time unrolled copy of the network; the higher merge levels
// then run on the (n x kLanes) key block in L1. The same comparators run on every ISA, so
// results are bit-identical across ISAs and thread counts. The finish (sums in double, clamps,
// meamed's choice) is written on explicit vectors of the ISA's width. Above kNetworkMaxRows
// rows a per-column std::nth_element / std::sort path replaces the network (its size grows as
// n log^2 n).
// --------------------------------------------------------------------------------------------

namespace detail {

/// Order-preserving unsigned keys of IEEE floats: exact total order -Inf < ... < -0 < +0 < ...
/// < +Inf < NaN (every NaN is first canonicalised to the positive quiet NaN).
template <typename T>
struct OrderKey;

template <>
struct OrderKey<float> {
  using type = std::uint32_t;
  static constexpr type kSign = 0x80000000u;
  static constexpr type kInf = 0x7F800000u;
  static constexpr type kQNaN = 0x7FC00000u;
  static constexpr int kShift = 31;
};

template <>
struct OrderKey<double> {
  using type = std::uint64_t;
  static constexpr type kSign = 0x8000000000000000ull;
  static constexpr type kInf = 0x7FF0000000000000ull;
  static constexpr type kQNaN = 0x7FF8000000000000ull;
  static constexpr int kShift = 63;
};

template <typename T>
inline typename OrderKey<T>::type to_key(T v) {
  using OK = OrderKey<T>;
  using K = typename OK::type;
  K u;
  std::memcpy(&u, &v, sizeof u);
  u = ((u & ~OK::kSign) > OK::kInf) ? OK::kQNaN : u;
  // Negative: flip every bit (reverses their order); positive: flip the sign bit only.
  return u ^ (static_cast<K>(K{0} - (u >> OK::kShift)) | OK::kSign);
}

template <typename T>
inline T from_key(typename OrderKey<T>::type k) {
  using OK = OrderKey<T>;
  using K = typename OK::type;
  K u = k ^ (static_cast<K>((k >> OK::kShift) - K{1}) | OK::kSign);
  T v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

/// Midpoint of two values in double without overflow for finite inputs (float inputs are exact
/// in double; for double inputs the halves are added only when the plain sum overflows).
template <typename T>
inline double midpoint(T a, T b) {
  double m1 = (static_cast<double>(a) + static_cast<double>(b)) * 0.5;
  if constexpr (sizeof(T) == sizeof(double)) {
    double m2 = static_cast<double>(a) * 0.5 + static_cast<double>(b) * 0.5;
    return std::fabs(m1) <= std::numeric_limits<double>::max() ? m1 : m2;
  } else {
    return m1;
  }
}

/// One comparator of a vertical sorting network: afterwards row `lo` holds the lane-wise
/// minimum and row `hi` the maximum.
struct Comparator {
  std::uint32_t lo;
  std::uint32_t hi;
};

/// Batcher's odd-even merge sort on n wires (the power-of-two network with every comparator
/// touching a wire >= n dropped, which is exact: those wires act as +Inf padding). Calls
/// emit(lo, hi, p) for each comparator in network order, p being its merge level (the
/// comparators of the levels p < G, for a power of two G, sort the aligned groups of G wires
/// independently). This is the one generator of the network: batcher_network (run time, any n)
/// and StaticNetwork<N> (compile time, the register path) both take their comparators from it,
/// so the two can never disagree.
template <typename Emit>
constexpr void batcher_comparators_by_level(std::size_t n, Emit&& emit) {
  for (std::size_t p = 1; p < n; p <<= 1) {
    for (std::size_t k = p; k >= 1; k >>= 1) {
      for (std::size_t j = k % p; j + k < n; j += 2 * k) {
        for (std::size_t i = 0; i < std::min(k, n - j - k); ++i) {
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) emit(i + j, i + j + k, p);
        }
      }
    }
  }
}

/// batcher_comparators_by_level without the level: emit(lo, hi).
template <typename Emit>
constexpr void batcher_comparators(std::size_t n, Emit&& emit) {
  batcher_comparators_by_level(n, [&emit](std::size_t lo, std::size_t hi, std::size_t) {
    emit(lo, hi);
  });
}

/// The comparators of Batcher's network on n wires, in order (see batcher_comparators).
inline std::vector<Comparator> batcher_network(std::size_t n) {
  std::vector<Comparator> net;
  batcher_comparators(n, [&net](std::size_t lo, std::size_t hi) {
    net.push_back({static_cast<std::uint32_t>(lo), static_cast<std::uint32_t>(hi)});
  });
  return net;
}

/// Backward liveness pass: `label[r]` classes the output ranks (equal labels = the rule only
/// needs them as a multiset, e.g. the kept middle of a trimmed mean or the discarded tails). A
/// comparator whose two outputs carry the same label is a label-preserving permutation and is
/// dropped; a kept comparator makes its two inputs interchangeable (a fresh shared label).
/// Returns `keep[c]` = 1 for the comparators that survive.
inline std::vector<unsigned char> prune_flags(const std::vector<Comparator>& net,
                                              std::vector<std::size_t> label) {
  std::size_t fresh = label.empty() ? 0 : *std::max_element(label.begin(), label.end()) + 1;
  std::vector<unsigned char> keep(net.size(), 0);
  for (std::size_t c = net.size(); c-- > 0;) {
    if (label[net[c].lo] == label[net[c].hi]) continue;
    keep[c] = 1;
    label[net[c].lo] = label[net[c].hi] = fresh++;
  }
  return keep;
}

enum class CoordRule { kMedian, kTrimmedMean, kMeamed };

/// Rows above which the per-column path replaces the network.
inline constexpr std::size_t kNetworkMaxRows = 1024;

/// Labels of the output ranks for `rule` (see prune_flags).
inline std::vector<std::size_t> coordinate_labels(CoordRule rule, std::size_t n, std::size_t f) {
  const std::size_t lo = (n - 1) / 2, hi = n / 2;
  std::vector<std::size_t> label(n, 0);
  switch (rule) {
    case CoordRule::kMedian:  // the two middle ranks (one for odd n), averaged: a multiset
      label[lo] = label[hi] = 1;
      break;
    case CoordRule::kTrimmedMean:  // kept middle as a multiset; tails discarded
      for (std::size_t r = f; r < n - f; ++r) label[r] = 1;
      break;
    case CoordRule::kMeamed:  // median ranks, the rest of the middle, and every tail rank
      for (std::size_t r = 0; r < n; ++r) label[r] = (r >= f && r < n - f) ? 2 : 3 + r;
      label[lo] = label[hi] = 1;
      break;
  }
  return label;
}

/// Lanes per block: 256 bytes of each row, so an (n x kLanes) key block of up to ~100 rows
/// stays in L1 and each lane loop is a few full vectors.
template <typename T>
inline constexpr std::size_t kLanes = 256 / sizeof(T);

#if defined(__GNUC__) || defined(__clang__)
// 64-byte GNU vectors: one zmm, two ymm or four xmm depending on the clone being compiled.
typedef std::uint32_t VecU32x16 __attribute__((vector_size(64)));
typedef std::uint64_t VecU64x8 __attribute__((vector_size(64)));
template <typename K>
struct Vec64;
template <>
struct Vec64<std::uint32_t> {
  using type = VecU32x16;
};
template <>
struct Vec64<std::uint64_t> {
  using type = VecU64x8;
};
#endif

/// Lane-wise compare-exchange of two key rows of B lanes: a <- min(a, b), b <- max(a, b).
/// Written on explicit vectors: from plain loops GCC emits compare + branchy masked stores
/// instead of vpminud / vpmaxud.
template <typename K, std::size_t B>
inline void compare_exchange(K* CYCLAD_RESTRICT a, K* CYCLAD_RESTRICT b) {
#if defined(__GNUC__) || defined(__clang__)
  static_assert((B * sizeof(K)) % 64 == 0, "rows must be whole 64-byte vectors");
  using V = typename Vec64<K>::type;
  constexpr std::size_t kVecs = B * sizeof(K) / 64;
  constexpr std::size_t kPer = 64 / sizeof(K);
  for (std::size_t v = 0; v < kVecs; ++v) {
    V p, q;
    std::memcpy(&p, a + v * kPer, sizeof p);
    std::memcpy(&q, b + v * kPer, sizeof q);
    V lt = p < q ? p : q;
    V gt = p < q ? q : p;
    std::memcpy(a + v * kPer, &lt, sizeof lt);
    std::memcpy(b + v * kPer, &gt, sizeof gt);
  }
#else
  for (std::size_t l = 0; l < B; ++l) {
    K p = a[l], q = b[l];
    a[l] = std::min(p, q);
    b[l] = std::max(p, q);
  }
#endif
}

/// Wires per register group: the largest group whose rows stay in vector registers (32 zmm on
/// AVX-512, 16 ymm / xmm on AVX2 and the baseline). A power of two, so the groups are aligned
/// to the merge levels of Batcher's network.
template <Isa I>
inline constexpr std::size_t kRegisterGroup = I == Isa::v4 ? 32 : 16;

/// Largest register group of any ISA (the size of the compile-time network tables).
inline constexpr std::size_t kRegisterMaxRows = 32;

/// Bytes of one register-path vector: a whole zmm, ymm or xmm register of the ISA.
template <Isa I>
inline constexpr std::size_t kRegisterBytes = I == Isa::v4 ? 64 : I == Isa::v3 ? 32 : 16;

/// Number of comparators of Batcher's network on N wires, at compile time.
template <std::size_t N>
constexpr std::size_t batcher_size() {
  std::size_t c = 0;
  batcher_comparators(N, [&c](std::size_t, std::size_t) { ++c; });
  return c;
}

template <std::size_t N>
struct StaticNetwork {
  std::uint8_t lo[batcher_size<N>() + 1];
  std::uint8_t hi[batcher_size<N>() + 1];
};

/// Batcher's network on N wires as compile-time tables (the register path unrolls over them).
template <std::size_t N>
constexpr StaticNetwork<N> make_static_network() {
  StaticNetwork<N> net{};
  std::size_t c = 0;
  batcher_comparators(N, [&net, &c](std::size_t lo, std::size_t hi) {
    net.lo[c] = static_cast<std::uint8_t>(lo);
    net.hi[c] = static_cast<std::uint8_t>(hi);
    ++c;
  });
  return net;
}

template <std::size_t N>
inline constexpr StaticNetwork<N> kStaticNetwork = make_static_network<N>();

#if defined(__GNUC__) || defined(__clang__)
/// A GNU vector of `Bytes` bytes of keys K (one register of the ISA being compiled).
template <typename K, std::size_t Bytes>
struct KeyVec {
  typedef K type __attribute__((vector_size(Bytes)));
};

// Helpers of the register path are forced inline into the ISA clone that calls them (a plain
// call would run them in the baseline ISA with the rows spilled to memory).
#define CYCLAD_INLINE_VEC inline __attribute__((always_inline))

/// Software prefetch distance (bytes) of the register path's row streams.
inline constexpr std::size_t kPrefetchAhead = 1024;

/// Order-preserving keys of a whole vector of raw IEEE bits (the lane-wise to_key).
template <typename T, typename V>
CYCLAD_INLINE_VEC void to_key_vec(V& u) {
  using OK = OrderKey<T>;
  using K = typename OK::type;
  using SK = std::make_signed_t<K>;
  typedef SK SV __attribute__((vector_size(sizeof(V))));
  // |u| fits in the signed range, so the NaN test is a signed compare (x86 has no unsigned one
  // before AVX-512), and for 32-bit keys the negative mask is an arithmetic shift.
  const SV a = reinterpret_cast<SV>(u & static_cast<K>(~OK::kSign));
  u = a > static_cast<SK>(OK::kInf) ? static_cast<K>(OK::kQNaN) + (u & K{0}) : u;
  if constexpr (sizeof(K) == 4) {
    u ^= reinterpret_cast<V>(reinterpret_cast<SV>(u) >> OK::kShift) | OK::kSign;
  } else {
    u ^= (K{0} - (u >> OK::kShift)) | OK::kSign;
  }
}

template <typename V>
CYCLAD_INLINE_VEC void compare_exchange_vec(V& a, V& b) {
  const V t = a < b ? a : b;
  b = a < b ? b : a;
  a = t;
}

#if defined(__SSE2__)
// The baseline's value path. SSE2 has no lane-wise minimum or maximum of 32- or 64-bit
// integers, so a comparator of keys costs a compare, a sign flip and three logic operations per
// output, but it has one for floats and doubles (minps / maxps, minpd / maxpd). On values with
// no NaN and no -0 the float order is the key order and equal values have equal bits, so a
// network of value comparators leaves exactly the bits the key network leaves: the register
// groups of the baseline run on values when their loaded vectors pass that check, and convert
// to keys after the network.

/// Value compare-exchange on a 16-byte vector V holding T values: a <- min, b <- max.
template <typename T, typename V>
CYCLAD_INLINE_VEC void compare_exchange_val(V& a, V& b) {
  if constexpr (std::is_same_v<T, float>) {
    const __m128 p = reinterpret_cast<__m128>(a), q = reinterpret_cast<__m128>(b);
    a = reinterpret_cast<V>(_mm_min_ps(p, q));
    b = reinterpret_cast<V>(_mm_max_ps(p, q));
  } else {
    const __m128d p = reinterpret_cast<__m128d>(a), q = reinterpret_cast<__m128d>(b);
    a = reinterpret_cast<V>(_mm_min_pd(p, q));
    b = reinterpret_cast<V>(_mm_max_pd(p, q));
  }
}

/// Lane mask of the values of v that the value path cannot order: NaN or -0.
template <typename T, typename V>
CYCLAD_INLINE_VEC int unorderable_lanes(const V& v) {
  if constexpr (std::is_same_v<T, float>) {
    const __m128 p = reinterpret_cast<__m128>(v);
    const int zero_neg = _mm_movemask_ps(_mm_cmpeq_ps(p, _mm_setzero_ps())) & _mm_movemask_ps(p);
    return zero_neg | _mm_movemask_ps(_mm_cmpunord_ps(p, p));
  } else {
    const __m128d p = reinterpret_cast<__m128d>(v);
    const int zero_neg = _mm_movemask_pd(_mm_cmpeq_pd(p, _mm_setzero_pd())) & _mm_movemask_pd(p);
    return zero_neg | _mm_movemask_pd(_mm_cmpunord_pd(p, p));
  }
}

/// Raw values of rows 0 .. m-1 into v, the rest +Inf (padding); returns the OR of their
/// unorderable_lanes.
template <typename T, typename V, std::size_t... R>
CYCLAD_INLINE_VEC int load_vals_vec(V* v, const T* x, std::size_t stride, std::size_t m,
                                    std::index_sequence<R...>) {
  using K = typename OrderKey<T>::type;
  int bad = 0;
  ((R < m ? void((std::memcpy(&v[R], x + R * stride, sizeof(V)),
                  bad |= unorderable_lanes<T>(v[R])))
          : void(v[R] = V{} + static_cast<K>(OrderKey<T>::kInf))),
   ...);
  return bad;
}

/// Keys of the raw values in v (rows 0 .. m-1; padding rows become a key as large as any).
template <typename T, typename V, std::size_t... R>
CYCLAD_INLINE_VEC void keys_of_vals_vec(V* v, std::size_t m, std::index_sequence<R...>) {
  ((R < m ? to_key_vec<T>(v[R]) : void(v[R] = ~V{})), ...);
}

/// The raw values of `width` <= kLanes values of one row into a block row (padding lanes +0);
/// true when every value is orderable as a value (no NaN, no -0).
template <typename T>
CYCLAD_INLINE_VEC bool val_row(const T* CYCLAD_RESTRICT src, std::size_t width,
                               typename OrderKey<T>::type* CYCLAD_RESTRICT dst) {
  using K = typename OrderKey<T>::type;
  using V = typename KeyVec<K, 16>::type;
  constexpr std::size_t B = kLanes<T>, kPer = 16 / sizeof(K);
  if (width < B) std::memset(dst, 0, B * sizeof(K));
  std::memcpy(dst, src, width * sizeof(T));
  int bad = 0;
  for (std::size_t l = 0; l < B; l += kPer) {
    V v;
    std::memcpy(&v, dst + l, sizeof v);
    bad |= unorderable_lanes<T>(v);
  }
  return bad == 0;
}

/// compare_exchange on a block row of raw values (every lane orderable).
template <typename T>
CYCLAD_INLINE_VEC void compare_exchange_vals(typename OrderKey<T>::type* CYCLAD_RESTRICT a,
                                             typename OrderKey<T>::type* CYCLAD_RESTRICT b) {
  using K = typename OrderKey<T>::type;
  using V = typename KeyVec<K, 16>::type;
  constexpr std::size_t B = kLanes<T>, kPer = 16 / sizeof(K);
  for (std::size_t l = 0; l < B; l += kPer) {
    V p, q;
    std::memcpy(&p, a + l, sizeof p);
    std::memcpy(&q, b + l, sizeof q);
    compare_exchange_val<T>(p, q);
    std::memcpy(a + l, &p, sizeof p);
    std::memcpy(b + l, &q, sizeof q);
  }
}

/// Key the 16-byte registers of a block row whose bit is set in `mask` (they hold values).
template <typename T>
CYCLAD_INLINE_VEC void key_subs(typename OrderKey<T>::type* row, std::uint32_t mask) {
  using K = typename OrderKey<T>::type;
  using V = typename KeyVec<K, 16>::type;
  constexpr std::size_t B = kLanes<T>, kPer = 16 / sizeof(K);
  for (std::size_t l = 0; l < B; l += kPer) {
    if (((mask >> (l / kPer)) & 1u) == 0) continue;
    V v;
    std::memcpy(&v, row + l, sizeof v);
    to_key_vec<T>(v);
    std::memcpy(row + l, &v, sizeof v);
  }
}
#endif

/// Keys of rows 0 .. m-1 into v; the rest of v is padding (the largest key).
template <typename T, typename V, std::size_t... R>
CYCLAD_INLINE_VEC void load_keys_vec(V* v, const T* x, std::size_t stride, std::size_t m,
                                     std::index_sequence<R...>) {
  (((R < m) ? (std::memcpy(&v[R], x + R * stride, sizeof(V)), to_key_vec<T>(v[R]))
            : void(v[R] = ~V{})),
   ...);
}

template <typename T, std::size_t... R>
CYCLAD_INLINE_VEC void prefetch_rows(const T* x, std::size_t stride, std::size_t m,
                                     std::index_sequence<R...>) {
  // N concurrent row streams outrun the hardware prefetcher: fetch a few blocks ahead.
  ((R < m ? __builtin_prefetch(x + R * stride + kPrefetchAhead / sizeof(T)) : void()), ...);
}

template <typename K, typename V, std::size_t B, std::size_t... R>
CYCLAD_INLINE_VEC void store_keys_vec(const V* v, K* s, std::size_t m,
                                      std::index_sequence<R...>) {
  ((R < m ? void(std::memcpy(s + R * B, &v[R], sizeof(V))) : void()), ...);
}

/// The comparators of batcher_network(N) flagged in `keep`, or all of them when `All` (no
/// flag tests: the branches cost spills).
template <typename V, std::size_t N, bool All, std::size_t... I>
CYCLAD_INLINE_VEC void run_static_network(V* v, const unsigned char* keep,
                                          std::index_sequence<I...>) {
  constexpr const StaticNetwork<N>& net = kStaticNetwork<N>;
  (void)v;  // a group of one row has no comparator
  (void)keep;
  if constexpr (All) {
    (compare_exchange_vec(v[net.lo[I]], v[net.hi[I]]), ...);
  } else {
    ((keep[I] != 0 ? compare_exchange_vec(v[net.lo[I]], v[net.hi[I]]) : void()), ...);
  }
}

#if defined(__SSE2__)
/// run_static_network on raw T values (the baseline's value path).
template <typename T, typename V, std::size_t N, bool All, std::size_t... I>
CYCLAD_INLINE_VEC void run_static_network_vals(V* v, const unsigned char* keep,
                                               std::index_sequence<I...>) {
  constexpr const StaticNetwork<N>& net = kStaticNetwork<N>;
  (void)v;
  (void)keep;
  if constexpr (All) {
    (compare_exchange_val<T>(v[net.lo[I]], v[net.hi[I]]), ...);
  } else {
    ((keep[I] != 0 ? compare_exchange_val<T>(v[net.lo[I]], v[net.hi[I]]) : void()), ...);
  }
}
#endif
#undef CYCLAD_INLINE_VEC
#endif

/// Register-resident network for a group of m rows on P wires (P a power of two, m <= P):
/// loads kLanes<T> coordinates [j0, j0+width) of rows 0 .. m-1, converts them to keys, fills
/// wires m .. P-1 with the largest key (padding: a comparator that touches one leaves both
/// wires as they are, so the kept comparators of batcher_network(P) among the first m wires run
/// as if the padding did not exist), runs the comparators flagged in `keep`, and stores the m
/// rows as an (m x kLanes) key block `s` (padding lanes hold arbitrary keys). Works one
/// register of the ISA at a time. `All`: every comparator is flagged (and m == P).
template <Isa I, typename T, std::size_t P, bool All>
CYCLAD_KERNEL std::uint32_t register_network_block(const T* CYCLAD_RESTRICT x, std::size_t stride,
                                                std::size_t m, std::size_t j0,
                                                std::size_t width,
                                                const unsigned char* CYCLAD_RESTRICT keep,
                                                typename OrderKey<T>::type* CYCLAD_RESTRICT s,
                                                bool keep_vals) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  T pad[P * B];
  if (width < B) {  // last partial block: zero-padded copy (padding lanes are never output)
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t l = 0; l < B; ++l) pad[i * B + l] = l < width ? x[i * stride + j0 + l] : T(0);
    }
    x = pad;
    stride = B;
    j0 = 0;
  }
#if defined(__GNUC__) || defined(__clang__)
  using V = typename KeyVec<K, kRegisterBytes<I>>::type;
  constexpr std::size_t kPer = sizeof(V) / sizeof(K);
  // One prefetch per 64-byte line of each row (the empty volatile asm keeps GCC from deleting
  // a loop of prefetches alone, see distance.hpp).
  for (std::size_t line = 0; line < B * sizeof(T); line += 64) {
    __asm__ volatile("");
    prefetch_rows<T>(x + j0 + line / sizeof(T), stride, m, std::make_index_sequence<P>{});
  }
  std::uint32_t vals = 0;
  static_assert(B / kPer <= 32, "one mask bit per register of a row");
  for (std::size_t sub = 0; sub < B; sub += kPer) {
    V v[P];
#if defined(__SSE2__)
    if constexpr (I == Isa::baseline) {
      // Values when every loaded lane is orderable as a value (stored as values, bit
      // sub / kPer of the returned mask), keys otherwise: the same bits once keyed.
      if (load_vals_vec<T>(v, x + j0 + sub, stride, m, std::make_index_sequence<P>{}) == 0) {
        run_static_network_vals<T, V, P, All>(v, keep,
                                              std::make_index_sequence<batcher_size<P>()>{});
        if (keep_vals) {
          vals |= std::uint32_t{1} << (sub / kPer);
        } else {
          keys_of_vals_vec<T>(v, m, std::make_index_sequence<P>{});
        }
      } else {
        keys_of_vals_vec<T>(v, m, std::make_index_sequence<P>{});
        run_static_network<V, P, All>(v, keep, std::make_index_sequence<batcher_size<P>()>{});
      }
      store_keys_vec<K, V, B>(v, s + sub, m, std::make_index_sequence<P>{});
      continue;
    }
#endif
    load_keys_vec<T>(v, x + j0 + sub, stride, m, std::make_index_sequence<P>{});
    run_static_network<V, P, All>(v, keep, std::make_index_sequence<batcher_size<P>()>{});
    store_keys_vec<K, V, B>(v, s + sub, m, std::make_index_sequence<P>{});
  }
  return vals;
#else
  const StaticNetwork<P>& net = kStaticNetwork<P>;
  K k[P * B];
  for (std::size_t i = 0; i < P; ++i) {
    for (std::size_t l = 0; l < B; ++l) {
      k[i * B + l] = i < m ? to_key(x[i * stride + j0 + l]) : std::numeric_limits<K>::max();
    }
  }
  for (std::size_t c = 0; c < batcher_size<P>(); ++c) {
    if (All || keep[c]) compare_exchange<K, B>(k + net.lo[c] * B, k + net.hi[c] * B);
  }
  std::memcpy(s, k, m * B * sizeof(K));
  (void)keep_vals;
  return 0;
#endif
}

template <typename T>
using RegisterNetworkFn = std::uint32_t (*)(const T*, std::size_t, std::size_t, std::size_t,
                                            std::size_t, const unsigned char*,
                                            typename OrderKey<T>::type*, bool);

// The register networks are called through a table (one entry per power of two), so each ISA
// needs out-of-line entry points compiled for it.
template <Isa I>
struct RegisterNetworkEntry;
#if CYCLAD_ISA_DISPATCH
#define CYCLAD_REGNET_ENTRY(ISA, ATTR)                                                       \
  template <>                                                                                \
  struct RegisterNetworkEntry<ISA> {                                                         \
    template <typename T, std::size_t P, bool All>                                           \
    ATTR static std::uint32_t run(const T* x, std::size_t stride, std::size_t m,             \
                                  std::size_t j0, std::size_t width, const unsigned char* keep, \
                                  typename OrderKey<T>::type* s, bool keep_vals) {           \
      return register_network_block<ISA, T, P, All>(x, stride, m, j0, width, keep, s,        \
                                                    keep_vals);                              \
    }                                                                                        \
  };
CYCLAD_REGNET_ENTRY(Isa::v4, __attribute__((target("arch=x86-64-v4"))))
CYCLAD_REGNET_ENTRY(Isa::v3, __attribute__((target("arch=x86-64-v3"))))
CYCLAD_REGNET_ENTRY(Isa::baseline, )
#undef CYCLAD_REGNET_ENTRY
#else
template <>
struct RegisterNetworkEntry<kCompiledIsa> {
  template <typename T, std::size_t P, bool All>
  static std::uint32_t run(const T* x, std::size_t stride, std::size_t m, std::size_t j0,
                           std::size_t width, const unsigned char* keep,
                           typename OrderKey<T>::type* s, bool keep_vals) {
    return register_network_block<kCompiledIsa, T, P, All>(x, stride, m, j0, width, keep, s,
                                                           keep_vals);
  }
};
#endif

/// The register worker of ISA I on 2^e wires, 2^e <= kRegisterGroup<I>; `all`: the one without
/// flag tests, for a whole group of kRegisterGroup<I> rows whose comparators are all kept.
template <Isa I, typename T, std::size_t... E>
inline RegisterNetworkFn<T> register_network_for(std::size_t e, bool all,
                                                 std::index_sequence<E...>) {
  static constexpr RegisterNetworkFn<T> table[] = {
      &RegisterNetworkEntry<I>::template run<T, std::size_t{1} << E, false>...};
  if (all) return &RegisterNetworkEntry<I>::template run<T, kRegisterGroup<I>, true>;
  return table[e];
}

/// log2 of kRegisterGroup<I>.
template <Isa I>
inline constexpr std::size_t kRegisterGroupLog2 = kRegisterGroup<I> == 32 ? 5 : 4;

/// How a pruned network on n <= kNetworkMaxRows wires runs. The comparators of the merge
/// levels below G = kRegisterGroup sort the aligned groups of G wires independently; each group
/// is loaded from x into registers and sorted there by a worker on P wires (P = G, or the
/// smallest power of two >= n when n <= G; wires past the group's rows are padding, see
/// register_network_block). The kept comparators of the levels >= G (`rest`) then run
/// lane-wise on the (n x kLanes) key block in L1; a last group of at most G/4 rows is only
/// converted to keys, and its comparators run first there. Every comparator of the pruned
/// network runs, in an order that differs from the network's only between comparators on
/// disjoint wires, so the keys end up exactly as the network leaves them, on every ISA and for
/// every G.
template <typename T>
struct NetworkPlan {
  std::size_t group = 0;
  std::vector<RegisterNetworkFn<T>> fns;  // one per group (null: keys only, see below)
  std::vector<std::size_t> keep_at;       // start of each group's flags in `keep`
  std::vector<unsigned char> keep;        // flags over batcher_network(P) of each group
  std::vector<Comparator> rest;           // kept comparators of the levels >= G
};

/// `whole_groups`: the register groups run every comparator of their network, pruned ones
/// included. Exact for a rule that reads only its labels' multisets through a symmetric
/// function of each (the median's midpoint of its two middle ranks): a pruned comparator only
/// permutes wires of one label. It spares the groups their flag tests.
template <Isa I, typename T>
NetworkPlan<T> network_plan_for(std::vector<std::size_t> label, bool whole_groups) {
  const std::size_t n = label.size();
  constexpr std::size_t G = kRegisterGroup<I>;
  static_assert(G <= kRegisterMaxRows && (G & (G - 1)) == 0, "groups are powers of two");
  std::vector<Comparator> net;
  std::vector<std::size_t> level;
  batcher_comparators_by_level(n, [&](std::size_t lo, std::size_t hi, std::size_t p) {
    net.push_back({static_cast<std::uint32_t>(lo), static_cast<std::uint32_t>(hi)});
    level.push_back(p);
  });
  const std::vector<unsigned char> flags = prune_flags(net, std::move(label));
  NetworkPlan<T> plan;
  plan.group = G;
  const std::size_t ngroups = (n + G - 1) / G;
  std::vector<std::vector<std::size_t>> members(ngroups);  // comparator indices, in order
  for (std::size_t c = 0; c < net.size(); ++c) {
    if (level[c] >= G) {
      if (flags[c] != 0) plan.rest.push_back(net[c]);
    } else {
      members[net[c].lo / G].push_back(c);
    }
  }
  std::size_t e = 0;  // log2 of the group's wires
  while ((std::size_t{1} << e) < std::min(n, G)) ++e;
  std::vector<Comparator> head;  // a small last group's comparators, run on the key block
  for (std::size_t g = 0; g < ngroups; ++g) {
    const std::size_t base = g * G, m = std::min(G, n - base);
    plan.keep_at.push_back(plan.keep.size());
    if (n > G && m <= G / 4) {
      // A last group of a few rows has a few comparators spread over the whole network on G
      // wires: testing every flag in registers costs more than converting its rows into the
      // key block and running those comparators there, first of the block's comparators.
      for (std::size_t c : members[g]) {
        if (flags[c] != 0) head.push_back(net[c]);
      }
      plan.fns.push_back(nullptr);
      continue;
    }
    std::size_t next = 0;
    for (const Comparator& c : batcher_network(std::size_t{1} << e)) {
      if (c.hi >= m) {  // touches padding
        plan.keep.push_back(0);
        continue;
      }
      const bool same = next < members[g].size() && net[members[g][next]].lo == base + c.lo &&
                        net[members[g][next]].hi == base + c.hi;
      if (!same) throw std::logic_error("register group does not match Batcher's network");
      plan.keep.push_back(whole_groups ? 1 : flags[members[g][next]]);
      ++next;
    }
    if (next != members[g].size()) {
      throw std::logic_error("register group does not match Batcher's network");
    }
    const bool all = m == G && (std::size_t{1} << e) == G &&
                     std::all_of(plan.keep.begin() + static_cast<std::ptrdiff_t>(plan.keep_at[g]),
                                 plan.keep.end(), [](unsigned char k) { return k != 0; });
    plan.fns.push_back(register_network_for<I, T>(
        e, all, std::make_index_sequence<kRegisterGroupLog2<I> + 1>{}));
  }
  plan.rest.insert(plan.rest.begin(), head.begin(), head.end());
  return plan;
}

/// The plan of the active ISA for a rule's labels (see coordinate_labels and
/// network_plan_for).
template <typename T>
NetworkPlan<T> network_plan(std::vector<std::size_t> label, bool whole_groups) {
#if CYCLAD_ISA_DISPATCH
  switch (active_isa()) {
    case Isa::v4: return network_plan_for<Isa::v4, T>(std::move(label), whole_groups);
    case Isa::v3: return network_plan_for<Isa::v3, T>(std::move(label), whole_groups);
    default: return network_plan_for<Isa::baseline, T>(std::move(label), whole_groups);
  }
#else
  return network_plan_for<kCompiledIsa, T>(std::move(label), whole_groups);
#endif
}

/// Per-column ordering for large n: leaves on each lane's rows the ranks `rule` needs.
template <typename T, CoordRule R>
void order_columns(typename OrderKey<T>::type* s, std::size_t n, std::size_t f,
                   std::size_t width, typename OrderKey<T>::type* col) {
  constexpr std::size_t B = kLanes<T>;
  const std::size_t lo = (n - 1) / 2, hi = n / 2;
  for (std::size_t l = 0; l < width; ++l) {
    for (std::size_t i = 0; i < n; ++i) col[i] = s[i * B + l];
    if constexpr (R == CoordRule::kMedian) {
      std::nth_element(col, col + hi, col + n);
      if (lo != hi) std::swap(col[lo], *std::max_element(col, col + hi));
    } else if constexpr (R == CoordRule::kTrimmedMean) {
      if (f > 0) {
        std::nth_element(col, col + f, col + n);
        std::nth_element(col + f, col + (n - f), col + n);
      }
    } else {
      std::sort(col, col + n);
    }
    for (std::size_t i = 0; i < n; ++i) s[i * B + l] = col[i];
  }
}

/// Mean of the kept values of one lane in long double (the rare double-overflow path).
template <typename T>
[[gnu::cold]] T kept_mean_wide(const typename OrderKey<T>::type* s, std::size_t l,
                               const std::size_t* rows, std::size_t k) {
  constexpr std::size_t B = kLanes<T>;
  long double acc = 0;
  for (std::size_t i = 0; i < k; ++i) acc += from_key<T>(s[rows[i] * B + l]);
  return static_cast<T>(acc / static_cast<long double>(k));
}

#if defined(__GNUC__) || defined(__clang__)
// The helpers pass GNU vectors by value; they are always inlined into the ISA's worker, so the
// vector-ABI note GCC gives for a call compiled without AVX does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define CYCLAD_FINISH_INLINE inline __attribute__((always_inline))
#endif

#if defined(__GNUC__) || defined(__clang__)
/// The finishes work on one register of keys (WK lanes; two xmm on the
/// baseline, whose 8-byte halves would otherwise be too narrow) at a time, so the integer work
/// (key -> value bits, key ranges, meamed's key choice) runs at the ISA's full width; the
/// values are widened to double in H halves of WD lanes (two for float, one for double).
template <Isa I, typename T>
struct WideFinish {
  using K = typename OrderKey<T>::type;
  using SK = std::make_signed_t<K>;
  static constexpr std::size_t WK = (I == Isa::baseline ? 32 : kRegisterBytes<I>) / sizeof(K);
  static constexpr std::size_t H = sizeof(double) / sizeof(T);
  static constexpr std::size_t WD = WK / H;
  typedef K KV __attribute__((vector_size(WK * sizeof(K))));
  typedef SK KM __attribute__((vector_size(WK * sizeof(K))));
  typedef T VK __attribute__((vector_size(WK * sizeof(T))));
  typedef T VH __attribute__((vector_size(WD * sizeof(T))));
  typedef SK MH __attribute__((vector_size(WD * sizeof(K))));
  typedef double D __attribute__((vector_size(WD * sizeof(double))));

  CYCLAD_FINISH_INLINE static void load(const K* p, KV& v) { std::memcpy(&v, p, sizeof v); }
  /// from_key, lane-wise: the value bits of the keys.
  CYCLAD_FINISH_INLINE static void bits(const KV& k, VK& t) {
    using OK = OrderKey<T>;
    const KV u = k ^ (((k >> OK::kShift) - K{1}) | OK::kSign);
    std::memcpy(&t, &u, sizeof t);
  }
  template <std::size_t Off, std::size_t... L>
  CYCLAD_FINISH_INLINE static void half(const VK& t, D& d, std::index_sequence<L...>) {
    const VH h = __builtin_shufflevector(t, t, (Off + L)...);
    if constexpr (I == Isa::v3) {
      // Lane by lane, which GCC turns into one full-width vcvtps2pd on x86-64-v3, where
      // __builtin_convertvector was split into half-width conversions, an insert and stack
      // spills (measured: meamed 1.2x, trimmed mean 1.1x faster). On x86-64-v4 the
      // conversion is the faster form (measured: the lane-by-lane one 1.25x slower).
      d = D{static_cast<double>(h[L])...};
    } else {
      d = __builtin_convertvector(h, D);
    }
  }
  /// The values of the keys widened to double: lanes [0, WD) into d0 and, for float, [WD, WK)
  /// into d1.
  CYCLAD_FINISH_INLINE static void values(const KV& k, D& d0, D& d1) {
    VK t;
    bits(k, t);
    widen(t, d0, d1);
  }
  CYCLAD_FINISH_INLINE static void widen(const VK& t, D& d0, D& d1) {
    if constexpr (H == 2) {
      half<0>(t, d0, std::make_index_sequence<WD>{});
      half<WD>(t, d1, std::make_index_sequence<WD>{});
    } else {
      d0 = __builtin_convertvector(t, D);
      d1 = D{};
    }
  }
  template <std::size_t... L>
  CYCLAD_FINISH_INLINE static void join(const VH& a, const VH& b, VK& out,
                                        std::index_sequence<L...>) {
    out = __builtin_shufflevector(a, b, L...);
  }
  template <std::size_t... L>
  CYCLAD_FINISH_INLINE static void join_mask(const MH& a, const MH& b, KM& out,
                                             std::index_sequence<L...>) {
    out = __builtin_shufflevector(a, b, L...);
  }
  /// The two halves rounded to T, at key width.
  CYCLAD_FINISH_INLINE static void narrow(const D& d0, const D& d1, VK& out) {
    if constexpr (H == 2) {
      join(__builtin_convertvector(d0, VH), __builtin_convertvector(d1, VH), out,
           std::make_index_sequence<WK>{});
    } else {
      out = __builtin_convertvector(d0, VK);
    }
  }
  /// A key-width mask from the two halves' double comparisons.
  template <typename M>
  CYCLAD_FINISH_INLINE static void key_mask(const M& m0, const M& m1, KM& out) {
    if constexpr (H == 2 && I == Isa::v3) {
      // Each 64-bit mask lane is all ones or all zeros, so either 32-bit half stands for it:
      // the even halves within each 128-bit lane, then the 64-bit quarters put in order
      // (vpshufd, vpblendd, vpermq; the conversion below took 14 shuffles and inserts here).
      static_assert(sizeof(M) == sizeof(KM) && WK == 8, "two AVX2 masks of 4 lanes");
      KM a, b;
      std::memcpy(&a, &m0, sizeof a);
      std::memcpy(&b, &m1, sizeof b);
      const KM t = __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14);
      typedef std::int64_t Q __attribute__((vector_size(32)));
      Q q;
      std::memcpy(&q, &t, sizeof q);
      q = __builtin_shufflevector(q, q, 0, 2, 1, 3);
      std::memcpy(&out, &q, sizeof out);
    } else if constexpr (H == 2) {
      join_mask(__builtin_convertvector(m0, MH), __builtin_convertvector(m1, MH), out,
                std::make_index_sequence<WK>{});
    } else {
      out = __builtin_convertvector(m0, KM);
    }
  }
  /// midpoint(), lane-wise.
  CYCLAD_FINISH_INLINE static void midpoint(const D& a, const D& b, D& out) {
    const D m1 = (a + b) * 0.5;
    if constexpr (sizeof(T) == sizeof(double)) {
      const D m2 = a * 0.5 + b * 0.5;
      const D abs1 = m1 < 0.0 ? -m1 : m1;
      out = abs1 <= std::numeric_limits<double>::max() ? m1 : m2;
    } else {
      out = m1;
    }
  }
};
#endif

/// Median finish: res[l] = the midpoint of the two middle ranks' values, as T.
template <Isa I, typename T>
CYCLAD_KERNEL void finish_median(const typename OrderKey<T>::type* CYCLAD_RESTRICT ra,
                                 const typename OrderKey<T>::type* CYCLAD_RESTRICT rb,
                                 T* CYCLAD_RESTRICT res) {
  constexpr std::size_t B = kLanes<T>;
#if defined(__GNUC__) || defined(__clang__)
  using F = WideFinish<I, T>;
  for (std::size_t l = 0; l < B; l += F::WK) {
    typename F::KV ka, kb;
    typename F::D a0, a1, b0, b1, m0, m1{};
    F::load(ra + l, ka);
    F::load(rb + l, kb);
    F::values(ka, a0, a1);
    F::values(kb, b0, b1);
    F::midpoint(a0, b0, m0);
    if constexpr (F::H == 2) F::midpoint(a1, b1, m1);
    typename F::VK m;
    F::narrow(m0, m1, m);
    std::memcpy(res + l, &m, sizeof m);
  }
#else
  for (std::size_t l = 0; l < B; ++l) {
    res[l] = static_cast<T>(midpoint(from_key<T>(ra[l]), from_key<T>(rb[l])));
  }
#endif
}

/// Trimmed-mean / meamed finish: the kept values of each lane summed in double in a fixed
/// order (the middle ranks f .. n-f-1 in row order, then for meamed the chosen tail value of
/// each pair a, a+n-f), their mean clamped to their key range; acc, kmin and kmax keep the sum
/// and range for the cold double-overflow path.
template <Isa I, typename T, CoordRule R>
CYCLAD_KERNEL void finish_mean(const typename OrderKey<T>::type* CYCLAD_RESTRICT s,
                               std::size_t n, std::size_t f, std::size_t mlo, std::size_t mhi,
                               double inv_k, T* CYCLAD_RESTRICT res, double* CYCLAD_RESTRICT acc,
                               typename OrderKey<T>::type* CYCLAD_RESTRICT kmin,
                               typename OrderKey<T>::type* CYCLAD_RESTRICT kmax) {
  constexpr std::size_t B = kLanes<T>;
#if defined(__GNUC__) || defined(__clang__)
  using F = WideFinish<I, T>;
  using D = typename F::D;
  using KV = typename F::KV;
  using VK = typename F::VK;
  using K = typename F::K;
  constexpr std::size_t W = F::WK;
  // Two chunks of W lanes at a time, their sums (two double halves each for float) and key
  // ranges held in named registers while the rows stream past (independent add chains hide the
  // add latency; four chunks spill on AVX2).
  struct Chunk {
    D sum0, sum1;
    KV lo, hi;
    D med0, med1;
  };
  static_assert(B % (2 * W) == 0, "lanes per block must be whole register chunks");
  for (std::size_t l0 = 0; l0 < B; l0 += 2 * W) {
    Chunk c0{D{}, D{}, ~KV{}, KV{}, D{}, D{}}, c1 = c0;
    auto keep_value = [](Chunk& c, const D& v0, const D& v1, const KV& kk)
                          CYCLAD_INLINE_LAMBDA {
      c.sum0 += v0;
      if constexpr (F::H == 2) c.sum1 += v1;
      c.lo = kk < c.lo ? kk : c.lo;
      c.hi = kk > c.hi ? kk : c.hi;
    };
    auto middle = [&](const K* row, Chunk& c) CYCLAD_INLINE_LAMBDA {
      KV kk;
      D v0, v1;
      F::load(row, kk);
      F::values(kk, v0, v1);
      keep_value(c, v0, v1, kk);
    };
    for (std::size_t r = f; r < n - f; ++r) {
      const K* row = s + r * B + l0;
      middle(row, c0);
      middle(row + W, c1);
    }
    if constexpr (R == CoordRule::kMeamed) {
      // The n-f values closest to the median are a window of the sorted order containing the
      // middle; tail rank a pairs with rank a+n-f and exactly one of each pair is kept: the
      // lower unless the upper is strictly closer (a NaN distance never wins).
      auto median_of = [&](std::size_t l, Chunk& c) CYCLAD_INLINE_LAMBDA {
        KV ka, kb;
        D a0, a1, b0, b1;
        F::load(s + mlo * B + l, ka);
        F::load(s + mhi * B + l, kb);
        F::values(ka, a0, a1);
        F::values(kb, b0, b1);
        F::midpoint(a0, b0, c.med0);
        F::midpoint(a1, b1, c.med1);
      };
      median_of(l0, c0);
      median_of(l0 + W, c1);
      auto tail = [&](const K* rl, const K* rh, Chunk& c) CYCLAD_INLINE_LAMBDA {
        KV kl, kh;
        D l0v, l1v, h0v, h1v;
        F::load(rl, kl);
        F::load(rh, kh);
        F::values(kl, l0v, l1v);
        F::values(kh, h0v, h1v);
        const auto up0 = (h0v - c.med0) < (c.med0 - l0v);
        const auto up1 = (h1v - c.med1) < (c.med1 - l1v);
        typename F::KM kup;
        F::key_mask(up0, up1, kup);
        const D v0 = up0 ? h0v : l0v;
        const D v1 = up1 ? h1v : l1v;
        const KV kk = kup ? kh : kl;
        keep_value(c, v0, v1, kk);
      };
      for (std::size_t a = 0; a < f; ++a) {
        const K* rl = s + a * B + l0;
        const K* rh = s + (a + n - f) * B + l0;
        tail(rl, rh, c0);
        tail(rl + W, rh + W, c1);
      }
    }
    auto finish = [&](std::size_t l, const Chunk& c) CYCLAD_INLINE_LAMBDA {
      if constexpr (sizeof(T) == sizeof(double)) {  // for the cold overflow path
        std::memcpy(acc + l, &c.sum0, sizeof c.sum0);
        std::memcpy(kmin + l, &c.lo, sizeof c.lo);
        std::memcpy(kmax + l, &c.hi, sizeof c.hi);
      }
      // Clamp to the kept range: rounding of the sum must not leave it (NaN stays NaN).
      VK m, vmin, vmax;
      F::narrow(c.sum0 * inv_k, c.sum1 * inv_k, m);
      F::bits(c.lo, vmin);
      F::bits(c.hi, vmax);
      m = m < vmin ? vmin : m;
      m = m > vmax ? vmax : m;
      std::memcpy(res + l, &m, sizeof m);
    };
    finish(l0, c0);
    finish(l0 + W, c1);
  }
#else
  using K = typename OrderKey<T>::type;
  for (std::size_t l = 0; l < B; ++l) {
    acc[l] = 0.0;
    kmin[l] = std::numeric_limits<K>::max();
    kmax[l] = 0;
  }
  for (std::size_t r = f; r < n - f; ++r) {
    const K* row = s + r * B;
    for (std::size_t l = 0; l < B; ++l) {
      acc[l] += static_cast<double>(from_key<T>(row[l]));
      kmin[l] = std::min(kmin[l], row[l]);
      kmax[l] = std::max(kmax[l], row[l]);
    }
  }
  if constexpr (R == CoordRule::kMeamed) {
    for (std::size_t a = 0; a < f; ++a) {
      const K* rl = s + a * B;
      const K* rh = s + (a + n - f) * B;
      for (std::size_t l = 0; l < B; ++l) {
        const double med = midpoint(from_key<T>(s[mlo * B + l]), from_key<T>(s[mhi * B + l]));
        const double vl = static_cast<double>(from_key<T>(rl[l]));
        const double vh = static_cast<double>(from_key<T>(rh[l]));
        const bool upper = (vh - med) < (med - vl);
        acc[l] += upper ? vh : vl;
        const K kk = upper ? rh[l] : rl[l];
        kmin[l] = std::min(kmin[l], kk);
        kmax[l] = std::max(kmax[l], kk);
      }
    }
  }
  for (std::size_t l = 0; l < B; ++l) {
    T m = static_cast<T>(acc[l] * inv_k);
    const T vmin = from_key<T>(kmin[l]), vmax = from_key<T>(kmax[l]);
    m = m < vmin ? vmin : m;
    res[l] = m > vmax ? vmax : m;
  }
#endif
}

#if defined(__GNUC__) || defined(__clang__)
#undef CYCLAD_FINISH_INLINE
#pragma GCC diagnostic pop
#endif

/// The keys of `width` <= kLanes values of one row into a key-block row; padding lanes get zero
/// keys (lanes never interact).
template <typename T>
CYCLAD_KERNEL void key_row(const T* CYCLAD_RESTRICT src, std::size_t width,
                           typename OrderKey<T>::type* CYCLAD_RESTRICT dst) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  if (width == B) {
    for (std::size_t l = 0; l < B; ++l) dst[l] = to_key(src[l]);
  } else {
    for (std::size_t l = 0; l < B; ++l) dst[l] = l < width ? to_key(src[l]) : K{0};
  }
}

/// Hot worker: coordinates [lo, hi) of the rule. Chunks of `chunk` coordinates are converted
/// to keys first (long contiguous runs per row stream well from memory), laid out as blocks of
/// (n x kLanes); each block is then ordered and finished while it sits in L1.
template <Isa I, typename T, CoordRule R>
CYCLAD_KERNEL void coordinate_rule_block(
    const T* CYCLAD_RESTRICT x, std::size_t n, std::size_t stride, std::size_t lo,
    std::size_t hi, std::size_t chunk, const NetworkPlan<T>* plan, std::size_t f,
    typename OrderKey<T>::type* CYCLAD_RESTRICT scratch,
    typename OrderKey<T>::type* CYCLAD_RESTRICT col, T* CYCLAD_RESTRICT out) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  const std::size_t mlo = (n - 1) / 2, mhi = n / 2;
  const std::size_t k = (R == CoordRule::kMeamed) ? n - f : n - 2 * f;  // values averaged
  const double inv_k = 1.0 / static_cast<double>(k);
  std::vector<std::size_t> kept_rows;  // used only on the cold overflow path
  // Per register group: its 16-byte registers stored as values (the baseline's value path).
  std::vector<std::uint32_t> vals(plan != nullptr ? plan->fns.size() : 0);
  constexpr std::uint32_t kAllSubs = (std::uint32_t{1} << (B * sizeof(K) / 16)) - 1;

  for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
    const std::size_t cw = std::min(chunk, hi - c0);
    const std::size_t nb = (cw + B - 1) / B;
    // 1. Per-column path: keys into scratch block by block (padding lanes get zero keys; lanes
    // never interact).
    for (std::size_t i = 0; plan == nullptr && i < n; ++i) {
      const T* src = x + i * stride + c0;
      for (std::size_t b = 0; b < nb; ++b) {
        key_row(src + b * B, std::min(B, cw - b * B), scratch + (b * n + i) * B);
      }
    }
    for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t j0 = c0 + b * B;
    const std::size_t width = std::min(B, cw - b * B);
    K* s = scratch + (plan != nullptr ? 0 : b * n * B);
    // 2. Order the ranks the rule needs: the network's register groups straight from x, then
    // its higher merge levels on the key block; or per column.
    if (plan != nullptr) {
      const std::size_t G = plan->group;
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
      // The baseline keeps the block in values through the higher merge levels too when
      // every loaded lane is orderable as a value (see compare_exchange_val), and keys it
      // after them; otherwise the value parts are keyed first and the levels run on keys.
      constexpr bool kValueBlock = I == Isa::baseline;
#else
      constexpr bool kValueBlock = false;
#endif
      // More than one group: there are merge levels above the groups to run on values.
      const bool keep_vals = kValueBlock && plan->fns.size() > 1;
      bool all_vals = keep_vals;
      for (std::size_t g = 0; g < plan->fns.size(); ++g) {
        const std::size_t m = std::min(G, n - g * G);
        if (plan->fns[g] != nullptr) {
          vals[g] = plan->fns[g](x + g * G * stride, stride, m, j0, width,
                                 plan->keep.data() + plan->keep_at[g], s + g * G * B,
                                 keep_vals);
          all_vals = all_vals && vals[g] == kAllSubs;
          continue;
        }
        for (std::size_t i = g * G; i < g * G + m; ++i) {  // keys only (see NetworkPlan)
          // Prefetched like the register groups' rows: with them the row streams outnumber
          // the hardware prefetcher's, and these loads would wait on memory.
#if defined(__GNUC__) || defined(__clang__)
          for (std::size_t line = 0; line < B * sizeof(T); line += 64) {
            __builtin_prefetch(x + i * stride + j0 + (kPrefetchAhead + line) / sizeof(T));
          }
#endif
          if constexpr (kValueBlock) {
            if (keep_vals) {
              all_vals = val_row(x + i * stride + j0, width, s + i * B) && all_vals;
              continue;
            }
          }
          key_row(x + i * stride + j0, width, s + i * B);
        }
      }
      if constexpr (kValueBlock) {
        if (all_vals) {
          for (const Comparator& c : plan->rest) {
            compare_exchange_vals<T>(s + static_cast<std::size_t>(c.lo) * B,
                                     s + static_cast<std::size_t>(c.hi) * B);
          }
          for (std::size_t i = 0; i < n; ++i) key_subs<T>(s + i * B, kAllSubs);
        } else if (keep_vals) {
          for (std::size_t g = 0; g < plan->fns.size(); ++g) {
            const std::size_t m = std::min(G, n - g * G);
            const std::uint32_t mask = plan->fns[g] != nullptr ? vals[g] : kAllSubs;
            for (std::size_t i = g * G; i < g * G + m; ++i) key_subs<T>(s + i * B, mask);
          }
        }
      }
      if (!kValueBlock || !all_vals) {
        for (const Comparator& c : plan->rest) {
          compare_exchange<K, B>(s + static_cast<std::size_t>(c.lo) * B,
                                 s + static_cast<std::size_t>(c.hi) * B);
        }
      }
    } else {
      order_columns<T, R>(s, n, f, width, col);
    }
    // 3. Finish lane-wise.
    T res[B];
    if constexpr (R == CoordRule::kMedian) {
      finish_median<I, T>(s + mlo * B, s + mhi * B, res);
    } else {
      double acc[B];
      K kmin[B], kmax[B];
      finish_mean<I, T, R>(s, n, f, mlo, mhi, inv_k, res, acc, kmin, kmax);
      if constexpr (sizeof(T) == sizeof(double)) {
        // Finite kept values whose double sum overflowed: redo that lane in long double.
        for (std::size_t l = 0; l < width; ++l) {
          if (std::isfinite(acc[l]) || !std::isfinite(from_key<T>(kmin[l])) ||
              !std::isfinite(from_key<T>(kmax[l]))) {
            continue;
          }
          kept_rows.clear();
          for (std::size_t r = f; r < n - f; ++r) kept_rows.push_back(r);
          if constexpr (R == CoordRule::kMeamed) {
            double m = midpoint(from_key<T>(s[mlo * B + l]), from_key<T>(s[mhi * B + l]));
            for (std::size_t a = 0; a < f; ++a) {
              double vl = static_cast<double>(from_key<T>(s[a * B + l]));
              double vh = static_cast<double>(from_key<T>(s[(a + n - f) * B + l]));
              kept_rows.push_back((vh - m) < (m - vl) ? a + n - f : a);
            }
          }
          T m = kept_mean_wide<T>(s, l, kept_rows.data(), kept_rows.size());
          T vmin = from_key<T>(kmin[l]), vmax = from_key<T>(kmax[l]);
          m = m < vmin ? vmin : m;
          res[l] = m > vmax ? vmax : m;
        }
      }
    }
    for (std::size_t l = 0; l < width; ++l) out[j0 + l] = res[l];
    }
  }
}

template <typename T, CoordRule R>
void coordinate_rule(MatrixView<T> x, std::size_t f, T* out, int threads) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  const std::size_t n = x.n;
  const bool columns = n > kNetworkMaxRows;
  NetworkPlan<T> plan;
  if (!columns) plan = network_plan<T>(coordinate_labels(R, n, f), R == CoordRule::kMedian);
  const std::size_t nblocks = (x.d + B - 1) / B;
  // Per-column path: conversion chunks of ~192 KiB of keys (L2-resident), at least one block.
  // The network path needs one (n x kLanes) key block.
  const std::size_t chunk =
      columns ? B * std::max<std::size_t>(1, (std::size_t{192} << 10) / (n * B * sizeof(K))) : B;
  const std::size_t grain = grain_for(n * B * sizeof(T));
  parallel_for(nblocks, threads, grain, [&](std::size_t b0, std::size_t b1) {
    const std::size_t lo = b0 * B, hi = std::min(x.d, b1 * B);
    std::vector<K> scratch(n * std::min(chunk, (hi - lo + B - 1) / B * B));
    std::vector<K> col(columns ? n : 0);
    dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
      coordinate_rule_block<decltype(isa)::value, T, R>(x.data, n, x.row_stride, lo, hi, chunk,
                                                        columns ? nullptr : &plan, f,
                                                        scratch.data(), col.data(), out);
    });
  });
}

inline void require_f(std::size_t n, std::size_t f) {
  require(2 * f < n, "f must be in [0, " + std::to_string((n - 1) / 2) + "] (n > 2f) for n=" +
                         std::to_string(n) + ", got f=" + std::to_string(f));
}

}  // namespace detail

/// \brief Coordinate-wise median; the mean of the two middle values when n is even.
/// \tparam T float or double.
/// \param[in] x (n, D) block, n >= 1.
/// \param[out] out (D,) result.
/// \param threads 0 = all cores.
/// NaN policy: every NaN is canonicalised and ordered above +Inf, so with fewer than n/2
/// poisoned rows (NaN, +-Inf, huge) the result is finite and within the honest rows' range.
/// Complexity O(D n log^2 n) lane-wise integer min/max (a pruned Batcher network, vectorised
/// across coordinates), O(nD) for n > 1024; one read of x. Bit-identical for any thread count.
template <typename T>
void median(MatrixView<T> x, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  detail::coordinate_rule<T, detail::CoordRule::kMedian>(x, 0, out, threads);
}

/// \brief Coordinate-wise trimmed mean: per coordinate drop the f smallest and the f largest
/// values and average the remaining n - 2f (accumulated in double, clamped to their range).
/// \param[in] x (n, D) block. \param f 0 <= f, n > 2f. \param[out] out (D,) result.
/// \param threads 0 = all cores.
/// NaN policy: NaN orders above +Inf, so with at most f poisoned rows the result is finite and
/// within the honest rows' range. Complexity as median. Bit-identical for any thread count
/// (the kept values are summed in network order, so permuting rows may change the rounding).
template <typename T>
void trimmed_mean(MatrixView<T> x, std::size_t f, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  detail::require_f(x.n, f);
  detail::coordinate_rule<T, detail::CoordRule::kTrimmedMean>(x, f, out, threads);
}

/// \brief Coordinate-wise mean around the median (Xie et al.): per coordinate the mean of the
/// n - f values closest to the median.
/// \param[in] x (n, D) block. \param f 0 <= f, n > 2f. \param[out] out (D,) result.
/// \param threads 0 = all cores.
/// Ties: the kept values are a window of the sorted values holding the middle n - 2f; each
/// further value is chosen as the lower candidate unless the upper one is strictly closer to
/// the median (so among equidistant values the lower wins). NaN policy as trimmed_mean (a NaN
/// is never closer than any number). Complexity as median. Bit-identical for any thread count.
template <typename T>
void meamed(MatrixView<T> x, std::size_t f, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  detail::require_f(x.n, f);
  detail::coordinate_rule<T, detail::CoordRule::kMeamed>(x, f, out, threads);
}

// --------------------------------------------------------------------------------------------
// Weighted means and coordinate-wise closest-value means (Bulyan's second stage).
// --------------------------------------------------------------------------------------------

namespace detail {

/// Scaled weights of a weighted mean: (row, p) for every row with a positive weight, p = w
/// times the power of two 2^-e that brings the largest weight into [1, 2) (exact, so integer
/// weights such as sample counts stay exact), and their sum (at most 2 n: neither it nor a
/// product p * x can overflow). Throws std::invalid_argument for a non-finite or negative
/// weight, or when every weight is zero.
inline double scale_weights(const double* w, const std::size_t* rows, std::size_t nr,
                            std::vector<std::size_t>& kept, std::vector<double>& p) {
  double wmax = 0.0;
  for (std::size_t r = 0; r < nr; ++r) {
    const double v = w[rows != nullptr ? rows[r] : r];
    require(std::isfinite(v) && v >= 0.0, "weights must be finite and >= 0");
    wmax = std::max(wmax, v);
  }
  require(wmax > 0.0, rows != nullptr ? "the weights of the selected rows are all zero"
                                      : "weights must not all be zero");
  const int e = std::ilogb(wmax);
  kept.clear();
  p.clear();
  double sum = 0.0;
  for (std::size_t r = 0; r < nr; ++r) {
    const std::size_t i = rows != nullptr ? rows[r] : r;
    if (w[i] > 0.0) {
      kept.push_back(i);
      p.push_back(std::ldexp(w[i], -e));
      sum += p.back();
    }
  }
  return sum;
}

/// sum_r p[r] * x[rows[r]] / psum over coordinates [lo, hi), in double, rows in the given
/// order.
template <Isa I, typename T>
CYCLAD_KERNEL void weighted_mean_block(const T* CYCLAD_RESTRICT x, std::size_t stride,
                                       const std::size_t* rows, const double* p, std::size_t nr,
                                       double psum, std::size_t lo, std::size_t hi,
                                       T* CYCLAD_RESTRICT out, double* CYCLAD_RESTRICT acc) {
  const std::size_t len = hi - lo;
  // The mean's sweeps, each row's values times its weight: the same terms, added in the
  // same order, as one sweep per row.
  const auto at = [&](std::size_t r) CYCLAD_INLINE_LAMBDA { return x + rows[r] * stride + lo; };
  mean_sweeps<true, T>(at, p, nr, len, psum, acc, out + lo);
  if constexpr (sizeof(T) == sizeof(double)) {
    // A double sum of finite terms can overflow although the mean is finite: redo such
    // coordinates in long double (non-finite inputs keep their Inf / NaN).
    for (std::size_t j = 0; j < len; ++j) {
      if (!std::isinf(acc[j])) continue;
      long double s = 0;
      bool finite = true;
      for (std::size_t r = 0; r < nr && finite; ++r) {
        const T v = x[rows[r] * stride + lo + j];
        finite = std::isfinite(v);
        s += static_cast<long double>(v) * static_cast<long double>(p[r]);
      }
      if (finite) out[lo + j] = static_cast<T>(s / static_cast<long double>(psum));
    }
  }
}

/// Weighted mean of the rows `rows` (nr of them, weights w indexed by row); see weighted_mean.
template <typename T>
void weighted_rows_mean(MatrixView<T> x, const std::size_t* rows, std::size_t nr,
                        const double* w, T* out, int threads) {
  std::vector<std::size_t> kept;
  std::vector<double> p;
  const double psum = scale_weights(w, rows, nr, kept, p);
  parallel_for(x.d, threads, grain_for(kept.size() * sizeof(T), 1 << 14),
               [&](std::size_t lo, std::size_t hi) {
                 std::vector<double> acc(std::min(hi - lo, kMeanBlock));
                 for (std::size_t b = lo; b < hi; b += kMeanBlock) {
                   dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
                     weighted_mean_block<decltype(isa)::value>(
                         x.data, x.row_stride, kept.data(), p.data(), kept.size(), psum, b,
                         std::min(hi, b + kMeanBlock), out, acc.data());
                   });
                 }
               });
}

/// The finish of closest_coordinates for one coordinate: `key(a)` is the a-th smallest key of
/// the nr values, m the reference (NaN: use the median).
template <typename T, typename Key>
inline T closest_finish(Key key, std::size_t nr, double m, std::size_t beta) {
  auto val = [&](std::size_t a) { return static_cast<double>(from_key<T>(key(a))); };
  if (std::isnan(m)) m = midpoint(from_key<T>(key((nr - 1) / 2)), from_key<T>(key(nr / 2)));
  // The beta values closest to m form a window [s, s + beta) of the sorted values; sliding it
  // one step right swaps value s for value s + beta, which is better exactly when the new
  // value is strictly closer. v_s + v_{s+beta} only grows with s, so the test holds for a
  // prefix of s: the first failure ends the slide (ties keep the lower window).
  std::size_t s = 0;
  while (s + beta < nr && (val(s + beta) - m) < (m - val(s))) ++s;
  double acc = 0.0;
  for (std::size_t a = s; a < s + beta; ++a) acc += val(a);
  const T vlo = from_key<T>(key(s)), vhi = from_key<T>(key(s + beta - 1));
  T mean = static_cast<T>(acc / static_cast<double>(beta));
  if (!std::isfinite(acc) && std::isfinite(vlo) && std::isfinite(vhi)) {
    long double w = 0;
    for (std::size_t a = s; a < s + beta; ++a) w += static_cast<long double>(from_key<T>(key(a)));
    mean = static_cast<T>(w / static_cast<long double>(beta));
  }
  // Clamp to the window's range (rounding cannot push the mean outside it).
  if (std::isfinite(vlo) && std::isfinite(vhi)) {
    mean = mean < vlo ? vlo : mean;
    mean = mean > vhi ? vhi : mean;
  }
  return mean;
}

/// One block [lo, hi) (at most kLanes<T> coordinates) of closest_coordinates: the selected rows'
/// keys laid out as an (nr x kLanes) block `s`, sorted lane-wise by Batcher's network `net` (or,
/// when `net` is null, per lane with std::sort: the order is the same exact total order), then
/// finished lane by lane.
template <Isa I, typename T>
CYCLAD_KERNEL void closest_coordinates_block(const T* CYCLAD_RESTRICT x, std::size_t stride,
                                             const std::size_t* rows, std::size_t nr,
                                             const double* ref, std::size_t beta,
                                             std::size_t lo, std::size_t hi,
                                             const std::vector<Comparator>* net, T* out,
                                             typename OrderKey<T>::type* CYCLAD_RESTRICT s,
                                             typename OrderKey<T>::type* CYCLAD_RESTRICT col) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  const std::size_t width = hi - lo;
  for (std::size_t r = 0; r < nr; ++r) key_row(x + rows[r] * stride + lo, width, s + r * B);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (net != nullptr) {
    for (const Comparator& c : *net) {
      compare_exchange<K, B>(s + static_cast<std::size_t>(c.lo) * B,
                             s + static_cast<std::size_t>(c.hi) * B);
    }
    for (std::size_t l = 0; l < width; ++l) {
      out[lo + l] = closest_finish<T>([&](std::size_t a) { return s[a * B + l]; }, nr,
                                      ref != nullptr ? ref[lo + l] : nan, beta);
    }
    return;
  }
  for (std::size_t l = 0; l < width; ++l) {
    for (std::size_t r = 0; r < nr; ++r) col[r] = s[r * B + l];
    std::sort(col, col + nr);
    out[lo + l] = closest_finish<T>([&](std::size_t a) { return col[a]; }, nr,
                                    ref != nullptr ? ref[lo + l] : nan, beta);
  }
}

}  // namespace detail

/// \brief Weighted coordinate-wise mean: sum_i w_i x_i / sum_i w_i.
/// \param[in] x (n, D). \param[in] w (n,) finite, >= 0, not all zero (std::invalid_argument
/// otherwise). \param[out] out (D,).
/// Rows with weight 0 are not read (a non-finite zero-weight row does not propagate); the others
/// are summed in double in row order, weighted by w_i 2^-e (the power of two that brings the
/// largest weight into [1, 2): exact, and neither the weight sum nor a product can overflow),
/// and divided by the scaled weight sum; a double sum that overflows is redone in long double. NaN / Inf of a positive-weight row propagate (the mean is not robust).
/// Complexity O(nD), one read of x. Bit-identical for any thread count and ISA.
template <typename T>
void weighted_mean(MatrixView<T> x, const double* w, T* out, int threads) {
  require(x.n >= 1, "X must have at least one row");
  detail::weighted_rows_mean(x, nullptr, x.n, w, out, threads);
}

/// \brief Per coordinate, the mean of the `beta` values of the rows `rows` closest to ref[j]
/// (ref null: to the coordinate-wise median of those rows, the midpoint of the two middle values
/// for an even count). Bulyan's second stage (El Mhamdi et al. 2018).
/// \param[in] x (n, D). \param[in] rows nr distinct row indices. \param[in] ref (D,) or null.
/// \param beta 1 <= beta <= nr. \param[out] out (D,).
/// Ties: the chosen values are a window of the sorted values; among equidistant candidates the
/// lower value is kept. NaN orders above +Inf and is never closer than a number, and an
/// infinite value is never closer than a finite one, so a coordinate with at least beta finite
/// values (and a finite reference) averages finite values only; the mean (in double, in sorted
/// order) is clamped to the kept values' range.
/// Complexity O(D nr log^2 nr) lane-wise integer min/max (Batcher's network across coordinates,
/// as median), O(D nr log nr) above 1024 rows; one read of the selected rows. Bit-identical
/// for any thread count and ISA (the sort is exact; each coordinate's sum is in a fixed order).
template <typename T>
void closest_coordinates(MatrixView<T> x, const std::size_t* rows, std::size_t nr,
                         const double* ref, std::size_t beta, T* out, int threads) {
  require(nr >= 1 && beta >= 1 && beta <= nr, "closest_coordinates needs 1 <= beta <= rows");
  using K = typename detail::OrderKey<T>::type;
  constexpr std::size_t B = detail::kLanes<T>;
  const bool columns = nr > detail::kNetworkMaxRows;
  std::vector<detail::Comparator> net;
  if (!columns) net = detail::batcher_network(nr);
  const std::size_t nblocks = (x.d + B - 1) / B;
  parallel_for(nblocks, threads, grain_for(nr * B * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<K> s(nr * B), col(columns ? nr : 0);
    for (std::size_t b = b0; b < b1; ++b) {
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        detail::closest_coordinates_block<decltype(isa)::value>(
            x.data, x.row_stride, rows, nr, ref, beta, b * B, std::min(x.d, (b + 1) * B),
            columns ? nullptr : &net, out, s.data(), col.data());
      });
    }
  });
}


}  // namespace cyclad::kernels
