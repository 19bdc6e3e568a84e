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
#include <utility>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"

namespace cyclad::kernels {

namespace detail {
// Coordinates per sweep: 16384 double accumulators (128 KB) stay in L2, and each row is read
// in long runs that the hardware prefetchers follow (measured: 2048 was 1.5x slower).
inline constexpr std::size_t kMeanBlock = 16384;

/// Sum of one coordinate over the rows in long double: the rare path for double sums that
/// overflow although the mean is finite (rows near the double maximum).
template <typename T>
[[gnu::cold]] inline double mean_wide(const T* x, std::size_t n, std::size_t stride,
                                      std::size_t j) {
  long double acc = 0;
  for (std::size_t i = 0; i < n; ++i) acc += static_cast<long double>(x[i * stride + j]);
  return static_cast<double>(acc / static_cast<long double>(n));
}

template <Isa I, typename T>
CYCLAD_KERNEL void mean_block(const T* CYCLAD_RESTRICT x, std::size_t n,
                                    std::size_t stride, std::size_t lo, std::size_t hi,
                                    T* CYCLAD_RESTRICT out, double* CYCLAD_RESTRICT acc) {
  // Accumulate rows in double, in a fixed order per coordinate: the sum is the same for any
  // partition, and float32 rows near the float32 maximum cannot overflow.
  // Four rows per sweep of the accumulators (added in row order, so the order per coordinate is
  // still rows 0, 1, 2, ...): a quarter of the accumulator loads and stores.
  const std::size_t len = hi - lo;
  for (std::size_t j = 0; j < len; ++j) acc[j] = static_cast<double>(x[lo + j]);
  std::size_t i = 1;
  for (; i + 4 <= n; i += 4) {
    const T* CYCLAD_RESTRICT r0 = x + i * stride + lo;
    const T* CYCLAD_RESTRICT r1 = r0 + stride;
    const T* CYCLAD_RESTRICT r2 = r1 + stride;
    const T* CYCLAD_RESTRICT r3 = r2 + stride;
    for (std::size_t j = 0; j < len; ++j) {
      acc[j] = (((acc[j] + static_cast<double>(r0[j])) + static_cast<double>(r1[j])) +
                static_cast<double>(r2[j])) +
               static_cast<double>(r3[j]);
    }
  }
  for (; i < n; ++i) {
    const T* r = x + i * stride + lo;
    for (std::size_t j = 0; j < len; ++j) acc[j] += static_cast<double>(r[j]);
  }
  const double inv = 1.0 / static_cast<double>(n);
  for (std::size_t j = 0; j < len; ++j) out[lo + j] = static_cast<T>(acc[j] * inv);
  if constexpr (sizeof(T) == sizeof(double)) {
    // A sum of finite doubles can overflow; redo such coordinates in long double (an infinite
    // input keeps its infinite sum there too, and NaN stays NaN without this branch).
    for (std::size_t j = 0; j < len; ++j) {
      if (std::isinf(acc[j])) out[lo + j] = static_cast<T>(mean_wide(x, n, stride, lo + j));
    }
  }
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
  // Column blocks of 4096 keep the output chunk in L1/L2 while the rows stream through.
  parallel_for(x.d, threads, grain_for(x.n * sizeof(T), 1 << 14), [&](std::size_t lo, std::size_t hi) {
    std::vector<double> acc(std::min(hi - lo, detail::kMeanBlock));
    for (std::size_t b = lo; b < hi; b += detail::kMeanBlock) {
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        detail::mean_block<decltype(isa)::value>(x.data, x.n, x.row_stride, b,
                                                 std::min(hi, b + detail::kMeanBlock), out,
                                                 acc.data());
      });
    }
  });
}

// --------------------------------------------------------------------------------------------
// Coordinate-wise order statistics: median, trimmed mean, meamed.
//
// Design: blocks of kLanes coordinates are copied into an L1-resident (n x kLanes) scratch as
// order-preserving unsigned integer keys (NaN canonicalised to +qNaN, which then sorts above
// +Inf), sorted "vertically" across the n rows by a Batcher odd-even merge network whose every
// comparator is a lane-wise integer min/max (vpminud/vpmaxud), and finished lane-wise from the
// rows the rule needs. The network is generated once per call and pruned backwards so that only
// comparators that influence the needed ranks remain. Above kNetworkMaxRows rows a per-column
// std::nth_element / std::sort path replaces the network (its size grows as n log^2 n).
// For 2 <= n <= kRegisterMaxRows on AVX-512 CPUs the network runs register-resident instead: each 64-byte slice
// of a block is loaded straight from x (software-prefetched), keyed in registers and sorted by a
// compile-time unrolled copy of the Batcher network whose pruned-away comparators are skipped by
// per-comparator flags (so exactly the same comparators run and results are bit-identical to the
// scratch path); the block is stored once to the scratch for the lane-wise finish.
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
/// emit(lo, hi) for each comparator in network order. This is the one generator of the network:
/// batcher_network (run time, any n) and StaticNetwork<N> (compile time, the register path)
/// both take their comparators from it, so the two can never disagree.
template <typename Emit>
constexpr void batcher_comparators(std::size_t n, Emit&& emit) {
  for (std::size_t p = 1; p < n; p <<= 1) {
    for (std::size_t k = p; k >= 1; k >>= 1) {
      for (std::size_t j = k % p; j + k < n; j += 2 * k) {
        for (std::size_t i = 0; i < std::min(k, n - j - k); ++i) {
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) emit(i + j, i + j + k);
        }
      }
    }
  }
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

/// The subsequence of `net` that prune_flags keeps.
inline std::vector<Comparator> prune_network(const std::vector<Comparator>& net,
                                             std::vector<std::size_t> label) {
  const std::vector<unsigned char> keep = prune_flags(net, std::move(label));
  std::vector<Comparator> kept;
  for (std::size_t c = 0; c < net.size(); ++c) {
    if (keep[c] != 0) kept.push_back(net[c]);
  }
  return kept;
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

/// The pruned network that leaves the ranks `rule` needs on their rows.
inline std::vector<Comparator> coordinate_network(CoordRule rule, std::size_t n, std::size_t f) {
  return prune_network(batcher_network(n), coordinate_labels(rule, n, f));
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

/// Rows up to which a register-resident network path replaces the scratch-buffer network.
inline constexpr std::size_t kRegisterMaxRows = 32;

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
  const V a = u & static_cast<K>(~OK::kSign);
  u = a > static_cast<K>(OK::kInf) ? static_cast<K>(OK::kQNaN) + (u & K{0}) : u;
  u ^= (K{0} - (u >> OK::kShift)) | OK::kSign;
}

template <typename V>
CYCLAD_INLINE_VEC void compare_exchange_vec(V& a, V& b) {
  const V t = a < b ? a : b;
  b = a < b ? b : a;
  a = t;
}

template <typename T, typename V, std::size_t... R>
CYCLAD_INLINE_VEC void load_keys_vec(V* v, const T* x, std::size_t stride,
                                     std::index_sequence<R...>) {
  // N concurrent row streams outrun the hardware prefetcher: fetch a few blocks ahead.
  (__builtin_prefetch(x + R * stride + kPrefetchAhead / sizeof(T)), ...);
  ((std::memcpy(&v[R], x + R * stride, sizeof(V)), to_key_vec<T>(v[R])), ...);
}

template <typename K, typename V, std::size_t B, std::size_t... R>
CYCLAD_INLINE_VEC void store_keys_vec(const V* v, K* s, std::index_sequence<R...>) {
  (std::memcpy(s + R * B, &v[R], sizeof(V)), ...);
}

template <typename V, std::size_t N, std::size_t... I>
CYCLAD_INLINE_VEC void run_static_network(V* v, const unsigned char* keep,
                                          std::index_sequence<I...>) {
  constexpr const StaticNetwork<N>& net = kStaticNetwork<N>;
  ((keep[I] != 0 ? compare_exchange_vec(v[net.lo[I]], v[net.hi[I]]) : void()), ...);
}
#undef CYCLAD_INLINE_VEC
#endif

/// Register-resident network for N rows: loads kLanes<T> coordinates [j0, j0+width) of each row,
/// converts them to keys, runs the comparators of batcher_network(N) flagged in `keep`, and
/// stores the rows as an (N x kLanes) key block `s` (padding lanes hold arbitrary keys).
template <Isa I, typename T, std::size_t N>
CYCLAD_KERNEL void register_network_block(const T* CYCLAD_RESTRICT x, std::size_t stride,
                                                std::size_t j0, std::size_t width,
                                                const unsigned char* CYCLAD_RESTRICT keep,
                                                typename OrderKey<T>::type* CYCLAD_RESTRICT s) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  T pad[N * B];
  if (width < B) {  // last partial block: zero-padded copy (padding lanes are never output)
    for (std::size_t i = 0; i < N; ++i) {
      for (std::size_t l = 0; l < B; ++l) pad[i * B + l] = l < width ? x[i * stride + j0 + l] : T(0);
    }
    x = pad;
    stride = B;
    j0 = 0;
  }
#if defined(__GNUC__) || defined(__clang__)
  using V = typename Vec64<K>::type;
  constexpr std::size_t kPer = 64 / sizeof(K);
  for (std::size_t sub = 0; sub < B; sub += kPer) {
    V v[N];
    load_keys_vec<T>(v, x + j0 + sub, stride, std::make_index_sequence<N>{});
    run_static_network<V, N>(v, keep, std::make_index_sequence<batcher_size<N>()>{});
    store_keys_vec<K, V, B>(v, s + sub, std::make_index_sequence<N>{});
  }
#else
  const StaticNetwork<N>& net = kStaticNetwork<N>;
  for (std::size_t i = 0; i < N; ++i) {
    for (std::size_t l = 0; l < B; ++l) s[i * B + l] = to_key(x[i * stride + j0 + l]);
  }
  for (std::size_t c = 0; c < batcher_size<N>(); ++c) {
    if (keep[c]) compare_exchange<K, B>(s + net.lo[c] * B, s + net.hi[c] * B);
  }
#endif
}

template <typename T>
using RegisterNetworkFn = void (*)(const T*, std::size_t, std::size_t, std::size_t,
                                   const unsigned char*, typename OrderKey<T>::type*);

// The register networks are called through a table (one entry per n), so each ISA needs
// out-of-line entry points compiled for it.
template <Isa I>
struct RegisterNetworkEntry;
#if CYCLAD_ISA_DISPATCH
#define CYCLAD_REGNET_ENTRY(ISA, ATTR)                                                       \
  template <>                                                                                \
  struct RegisterNetworkEntry<ISA> {                                                         \
    template <typename T, std::size_t N>                                                     \
    ATTR static void run(const T* x, std::size_t stride, std::size_t j0, std::size_t width,  \
                         const unsigned char* keep, typename OrderKey<T>::type* s) {         \
      register_network_block<ISA, T, N>(x, stride, j0, width, keep, s);                      \
    }                                                                                        \
  };
CYCLAD_REGNET_ENTRY(Isa::v4, __attribute__((target("arch=x86-64-v4"))))
CYCLAD_REGNET_ENTRY(Isa::v3, __attribute__((target("arch=x86-64-v3"))))
CYCLAD_REGNET_ENTRY(Isa::baseline, )
#undef CYCLAD_REGNET_ENTRY
#else
template <>
struct RegisterNetworkEntry<kCompiledIsa> {
  template <typename T, std::size_t N>
  static void run(const T* x, std::size_t stride, std::size_t j0, std::size_t width,
                  const unsigned char* keep, typename OrderKey<T>::type* s) {
    register_network_block<kCompiledIsa, T, N>(x, stride, j0, width, keep, s);
  }
};
#endif

template <Isa I, typename T, std::size_t... N>
inline RegisterNetworkFn<T> register_network_for(std::size_t n, std::index_sequence<N...>) {
  static constexpr RegisterNetworkFn<T> table[] = {
      &RegisterNetworkEntry<I>::template run<T, N + 2>...};
  return (n >= 2 && n - 2 < sizeof...(N)) ? table[n - 2] : nullptr;
}

/// Whether the register path runs with 32 wide registers (the AVX-512 kernels). With 16
/// registers (AVX2 and baseline) the rows spill and the path is ~3x slower than the scratch
/// network.
inline bool register_network_supported() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return active_isa() == Isa::v4;
#else
  return false;
#endif
}

/// The register-resident worker for n rows, or nullptr outside [2, kRegisterMaxRows] or without
/// AVX-512.
template <typename T>
inline RegisterNetworkFn<T> register_network(std::size_t n) {
  if (!register_network_supported()) return nullptr;
#if CYCLAD_ISA_DISPATCH
  return register_network_for<Isa::v4, T>(n, std::make_index_sequence<kRegisterMaxRows - 1>{});
#else
  return register_network_for<kCompiledIsa, T>(n,
                                                std::make_index_sequence<kRegisterMaxRows - 1>{});
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

/// Hot worker: coordinates [lo, hi) of the rule. Chunks of `chunk` coordinates are converted
/// to keys first (long contiguous runs per row stream well from memory), laid out as blocks of
/// (n x kLanes); each block is then ordered and finished while it sits in L1.
template <Isa I, typename T, CoordRule R>
CYCLAD_KERNEL void coordinate_rule_block(
    const T* CYCLAD_RESTRICT x, std::size_t n, std::size_t stride, std::size_t lo,
    std::size_t hi, std::size_t chunk, const Comparator* net, std::size_t ncmp, bool columns,
    std::size_t f, RegisterNetworkFn<T> regnet, const unsigned char* keep,
    typename OrderKey<T>::type* CYCLAD_RESTRICT scratch,
    typename OrderKey<T>::type* CYCLAD_RESTRICT col, T* CYCLAD_RESTRICT out) {
  using K = typename OrderKey<T>::type;
  constexpr std::size_t B = kLanes<T>;
  const std::size_t mlo = (n - 1) / 2, mhi = n / 2;
  const std::size_t k = (R == CoordRule::kMeamed) ? n - f : n - 2 * f;  // values averaged
  const double inv_k = 1.0 / static_cast<double>(k);
  std::vector<std::size_t> kept_rows;  // used only on the cold overflow path

  for (std::size_t c0 = lo; c0 < hi; c0 += chunk) {
    const std::size_t cw = std::min(chunk, hi - c0);
    const std::size_t nb = (cw + B - 1) / B;
    // 1. Keys into scratch block by block (padding lanes get zero keys; lanes never interact).
    for (std::size_t i = 0; regnet == nullptr && i < n; ++i) {
      const T* src = x + i * stride + c0;
      for (std::size_t b = 0; b < nb; ++b) {
        K* dst = scratch + (b * n + i) * B;
        const T* sb = src + b * B;
        const std::size_t width = std::min(B, cw - b * B);
        if (width == B) {
          for (std::size_t l = 0; l < B; ++l) dst[l] = to_key(sb[l]);
        } else {
          for (std::size_t l = 0; l < B; ++l) dst[l] = l < width ? to_key(sb[l]) : K{0};
        }
      }
    }
    for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t j0 = c0 + b * B;
    const std::size_t width = std::min(B, cw - b * B);
    K* s = scratch + (regnet != nullptr ? 0 : b * n * B);
    // 2. Order the ranks the rule needs (straight from x for a register-resident network).
    if (regnet != nullptr) {
      regnet(x, stride, j0, width, keep, s);
    } else if (columns) {
      order_columns<T, R>(s, n, f, width, col);
    } else {
      for (std::size_t c = 0; c < ncmp; ++c) {
        compare_exchange<K, B>(s + static_cast<std::size_t>(net[c].lo) * B,
                               s + static_cast<std::size_t>(net[c].hi) * B);
      }
    }
    // 3. Finish lane-wise.
    T res[B];
    if constexpr (R == CoordRule::kMedian) {
      const K* ra = s + mlo * B;
      const K* rb = s + mhi * B;
      for (std::size_t l = 0; l < B; ++l) {
        res[l] = static_cast<T>(midpoint(from_key<T>(ra[l]), from_key<T>(rb[l])));
      }
    } else {
      double acc[B];
      K kmin[B], kmax[B];
      for (std::size_t l = 0; l < B; ++l) {
        acc[l] = 0.0;
        kmin[l] = std::numeric_limits<K>::max();
        kmax[l] = 0;
      }
      // The always-kept middle ranks f .. n-f-1, in row order (fixed summation order).
      for (std::size_t r = f; r < n - f; ++r) {
        const K* row = s + r * B;
        for (std::size_t l = 0; l < B; ++l) {
          const K kk = row[l], lo_k = kmin[l], hi_k = kmax[l];  // values: std::min of two
          acc[l] += static_cast<double>(from_key<T>(kk));        // memory refs won't vectorise
          kmin[l] = std::min(lo_k, kk);
          kmax[l] = std::max(hi_k, kk);
        }
      }
      if constexpr (R == CoordRule::kMeamed) {
        // The n-f values closest to the median are a window of the sorted order containing the
        // middle; tail rank a pairs with rank a+n-f and exactly one of each pair is kept: the
        // lower unless the upper is strictly closer (a NaN distance never wins).
        double med[B];
        const K* ra = s + mlo * B;
        const K* rb = s + mhi * B;
        for (std::size_t l = 0; l < B; ++l) med[l] = midpoint(from_key<T>(ra[l]), from_key<T>(rb[l]));
        for (std::size_t a = 0; a < f; ++a) {
          const K* rl = s + a * B;
          const K* rh = s + (a + n - f) * B;
          for (std::size_t l = 0; l < B; ++l) {
            double vl = static_cast<double>(from_key<T>(rl[l]));
            double vh = static_cast<double>(from_key<T>(rh[l]));
            bool upper = (vh - med[l]) < (med[l] - vl);
            acc[l] += upper ? vh : vl;
            const K kk = upper ? rh[l] : rl[l], lo_k = kmin[l], hi_k = kmax[l];
            kmin[l] = std::min(lo_k, kk);
            kmax[l] = std::max(hi_k, kk);
          }
        }
      }
      for (std::size_t l = 0; l < B; ++l) {
        // Clamp to the kept range: rounding of the sum must not leave it (NaN stays NaN).
        T m = static_cast<T>(acc[l] * inv_k);
        T vmin = from_key<T>(kmin[l]), vmax = from_key<T>(kmax[l]);
        m = m < vmin ? vmin : m;
        res[l] = m > vmax ? vmax : m;
      }
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
  std::vector<Comparator> net;
  if (!columns) net = coordinate_network(R, n, f);
  const RegisterNetworkFn<T> regnet = register_network<T>(n);
  const std::vector<unsigned char> keep =
      regnet != nullptr ? prune_flags(batcher_network(n), coordinate_labels(R, n, f))
                        : std::vector<unsigned char>{};
  const std::size_t nblocks = (x.d + B - 1) / B;
  // Conversion chunks of ~192 KiB of keys (L2-resident), at least one block.
  const std::size_t chunk = B * std::max<std::size_t>(1, (std::size_t{192} << 10) / (n * B * sizeof(K)));
  const std::size_t grain = grain_for(n * B * sizeof(T));
  parallel_for(nblocks, threads, grain, [&](std::size_t b0, std::size_t b1) {
    const std::size_t lo = b0 * B, hi = std::min(x.d, b1 * B);
    std::vector<K> scratch(n * std::min(chunk, (hi - lo + B - 1) / B * B));
    std::vector<K> col(columns ? n : 0);
    dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
      coordinate_rule_block<decltype(isa)::value, T, R>(x.data, n, x.row_stride, lo, hi, chunk,
                                                        net.data(), net.size(), columns, f,
                                                        regnet, keep.data(), scratch.data(),
                                                        col.data(), out);
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


}  // namespace cyclad::kernels
