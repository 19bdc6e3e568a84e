// SPDX-License-Identifier: Apache-2.0
// Coordinate selection for sparse compression: exact top-k by magnitude and uniform rand-k
// masks (private or shared). Both return ascending indices, the order the wire format sends.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CYCLAD_X86_MASKS 1
#else
#define CYCLAD_X86_MASKS 0
#endif

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/random.hpp"
#include "cyclad/wire.hpp"

namespace cyclad::kernels {

namespace detail {

// ---------------------------------------------------------------------------------------------
// magnitude keys for top-k
// ---------------------------------------------------------------------------------------------

template <typename T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using K = std::int32_t;
  using U = std::uint32_t;
  static constexpr U kAbs = 0x7FFFFFFFU;
  static constexpr K kNan = 0x7F800001;  // every NaN ranks as this: just above +Inf
};
template <>
struct KeyTraits<double> {
  using K = std::int64_t;
  using U = std::uint64_t;
  static constexpr U kAbs = 0x7FFFFFFFFFFFFFFFULL;
  static constexpr K kNan = 0x7FF0000000000001LL;
};

/// Order-preserving integer key of |v|: the magnitude bits, with all NaNs equal and above Inf.
template <typename T>
inline typename KeyTraits<T>::K magnitude_key(T v) {
  using Tr = KeyTraits<T>;
  typename Tr::U u;
  std::memcpy(&u, &v, sizeof(T));
  const auto k = static_cast<typename Tr::K>(u & Tr::kAbs);
  return k < Tr::kNan ? k : Tr::kNan;
}

/// Candidates of a top-k filter: ascending indices and their magnitude keys.
template <typename T>
struct Candidates {
  std::vector<std::uint32_t> idx;
  std::vector<typename KeyTraits<T>::K> key;
};

/// One step of filter_block: bit j of the result is magnitude_key(x[j]) >= L for the 32
/// elements at x, and kb[j] = magnitude_key(x[j]) (the vector compare's lanes go straight to a
/// bit mask: movemask, not a horizontal OR of shifted lanes). L >= 1.
#if CYCLAD_X86_MASKS
// Compiled for AVX2 and called (inlined) only from the x86-64-v3 and v4 clones.
__attribute__((target("avx2"))) inline std::uint32_t magnitude_mask_avx2(
    const float* x, std::int32_t L, std::int32_t* kb) {
  const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i below = _mm256_set1_epi32(L - 1);
  const __m256i nan = _mm256_set1_epi32(KeyTraits<float>::kNan);
  std::uint32_t mask = 0;
  for (int q = 0; q < 4; ++q) {
    const __m256i v = _mm256_and_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * q)), abs);
    const __m256i hit = _mm256_cmpgt_epi32(v, below);
    mask |= static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(hit))) << (8 * q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(kb + 8 * q), _mm256_min_epi32(v, nan));
  }
  return mask;
}

__attribute__((target("avx2"))) inline std::uint32_t magnitude_mask_avx2(
    const double* x, std::int64_t L, std::int64_t* kb) {
  const __m256i abs = _mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL);
  const __m256i below = _mm256_set1_epi64x(L - 1);
  const __m256i nan = _mm256_set1_epi64x(KeyTraits<double>::kNan);
  std::uint32_t mask = 0;
  for (int q = 0; q < 8; ++q) {
    const __m256i v = _mm256_and_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 4 * q)), abs);
    const __m256i hit = _mm256_cmpgt_epi64(v, below);
    mask |= static_cast<std::uint32_t>(_mm256_movemask_pd(_mm256_castsi256_pd(hit))) << (4 * q);
    const __m256i key = _mm256_blendv_epi8(v, nan, _mm256_cmpgt_epi64(v, nan));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(kb + 4 * q), key);
  }
  return mask;
}

/// The SSE2 form (every x86-64 CPU), float only: SSE2 has no 64-bit integer compare.
inline std::uint32_t magnitude_mask_sse2(const float* x, std::int32_t L, std::int32_t* kb) {
  const __m128i abs = _mm_set1_epi32(0x7FFFFFFF);
  const __m128i below = _mm_set1_epi32(L - 1);
  const __m128i nan = _mm_set1_epi32(KeyTraits<float>::kNan);
  std::uint32_t mask = 0;
  for (int q = 0; q < 8; ++q) {
    const __m128i v =
        _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 4 * q)), abs);
    const __m128i hit = _mm_cmpgt_epi32(v, below);
    mask |= static_cast<std::uint32_t>(_mm_movemask_ps(_mm_castsi128_ps(hit))) << (4 * q);
    const __m128i over = _mm_cmpgt_epi32(v, nan);
    const __m128i key = _mm_or_si128(_mm_and_si128(over, nan), _mm_andnot_si128(over, v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(kb + 4 * q), key);
  }
  return mask;
}
#endif

/// Append to `c` every i in [lo, hi) with magnitude_key(x[i]) >= L, with its key (L <= kNan, so
/// NaN payloads above kNan need no clamping in the comparison).
template <Isa I, typename T>
CYCLAD_KERNEL void filter_block(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                      typename KeyTraits<T>::K L, std::size_t cap,
                                      Candidates<T>& c) {
  using Tr = KeyTraits<T>;
  using K = typename Tr::K;
  constexpr std::size_t kStep = 32;  // elements per mask word
  std::size_t o = c.idx.size();
  c.idx.resize(std::max<std::size_t>(o + 2 * kStep, cap));
  c.key.resize(c.idx.size());
  std::size_t i = lo;
  for (; i + kStep <= hi; i += kStep) {
    if (o + kStep > c.idx.size()) {
      c.idx.resize(2 * c.idx.size());
      c.key.resize(c.idx.size());
    }
    // One bit per element (a vector compare + mask move) and the block's keys; then write the
    // set bits without data-dependent branches for up to kFixed hits per word (the common
    // case). The fixed steps may run past the real hits: kFixed sentinel bits above the mask
    // keep every __builtin_ctzll argument nonzero (ctz of 0 is undefined) and point those steps
    // at the zeroed padding kb[kStep .. kStep + kFixed); what they write lies beyond the `cnt`
    // real entries (inside the kStep slots reserved above) and is overwritten or cut off.
    constexpr std::size_t kFixed = 4;
    std::uint32_t mask = 0;
    K kb[kStep + kFixed];
#if CYCLAD_X86_MASKS
    if constexpr (I == Isa::v3 || I == Isa::v4) {
      mask = magnitude_mask_avx2(x + i, L, kb);
    } else if constexpr (sizeof(T) == sizeof(float)) {
      mask = magnitude_mask_sse2(x + i, L, kb);
    } else
#endif
    {
      for (std::size_t j = 0; j < kStep; ++j) {
        typename Tr::U u;
        std::memcpy(&u, x + i + j, sizeof(T));
        const auto m = static_cast<K>(u & Tr::kAbs);
        mask |= static_cast<std::uint32_t>(m >= L) << j;
        kb[j] = m < Tr::kNan ? m : Tr::kNan;
      }
    }
    for (std::size_t j = kStep; j < kStep + kFixed; ++j) kb[j] = 0;
    const auto cnt = static_cast<std::size_t>(__builtin_popcount(mask));
    std::uint64_t bits = mask | (((std::uint64_t{1} << kFixed) - 1) << kStep);
    std::uint32_t* CYCLAD_RESTRICT po = c.idx.data() + o;
    K* CYCLAD_RESTRICT pk = c.key.data() + o;
    for (std::size_t t = 0; t < kFixed; ++t) {
      const auto j = static_cast<std::size_t>(__builtin_ctzll(bits));
      po[t] = static_cast<std::uint32_t>(i + j);
      pk[t] = kb[j];
      bits &= bits - 1;
    }
    for (std::size_t t = kFixed; t < cnt; ++t) {  // only real hits are left here
      const auto j = static_cast<std::size_t>(__builtin_ctzll(bits));
      po[t] = static_cast<std::uint32_t>(i + j);
      pk[t] = kb[j];
      bits &= bits - 1;
    }
    o += cnt;
  }
  c.idx.resize(o);
  c.key.resize(o);
  for (; i < hi; ++i) {
    const K m = magnitude_key(x[i]);
    if (m >= L) {
      c.idx.push_back(static_cast<std::uint32_t>(i));
      c.key.push_back(m);
    }
  }
}

/// Per-calling-thread scratch of topk_select, reused across calls so that repeated compressions
/// do not page-fault fresh candidate buffers; buffers above kKeep entries are released after
/// each call (the guard below), so at most a few MB stay allocated per calling thread.
template <typename T>
struct TopkScratch {
  static constexpr std::size_t kKeep = std::size_t{1} << 18;
  std::vector<Candidates<T>> parts;
  Candidates<T> all;

  static void trim(Candidates<T>& c) {
    if (c.idx.capacity() > kKeep) std::vector<std::uint32_t>().swap(c.idx);
    if (c.key.capacity() > kKeep) std::vector<typename KeyTraits<T>::K>().swap(c.key);
  }
  struct Guard {
    TopkScratch& s;
    ~Guard() {
      for (auto& p : s.parts) trim(p);
      trim(s.all);
    }
  };
  static TopkScratch& get() {
    static thread_local TopkScratch s;
    return s;
  }
};

/// Indices i (ascending) with key(x[i]) >= L and their keys, gathered per chunk and
/// concatenated in chunk order (so the result does not depend on the thread count). The result
/// lives in `s` until the next call.
template <typename T>
const Candidates<T>& filter_indices(const T* x, std::size_t D, typename KeyTraits<T>::K L,
                                    std::size_t expect, int threads, TopkScratch<T>& s) {
  const auto nt = static_cast<std::size_t>(resolve_threads(threads));
  const std::size_t nchunks = std::max<std::size_t>(1, std::min(nt, D * sizeof(T) / kMinBytesPerThread));
  auto& parts = s.parts;
  if (parts.size() < nchunks) parts.resize(nchunks);
  parallel_for(nchunks, static_cast<int>(nchunks), 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t lo = D * c / nchunks, hi = D * (c + 1) / nchunks;
      const std::size_t cap = std::min(expect / nchunks, hi - lo) + 64;
      parts[c].idx.clear();
      parts[c].key.clear();
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA { filter_block<decltype(isa)::value>(x, lo, hi, L, cap, parts[c]); });
    }
  });
  if (nchunks == 1) return parts[0];
  std::size_t total = 0;
  for (std::size_t c = 0; c < nchunks; ++c) total += parts[c].idx.size();
  Candidates<T>& all = s.all;
  all.idx.clear();
  all.key.clear();
  all.idx.reserve(total);
  all.key.reserve(total);
  for (std::size_t c = 0; c < nchunks; ++c) {
    all.idx.insert(all.idx.end(), parts[c].idx.begin(), parts[c].idx.end());
    all.key.insert(all.key.end(), parts[c].key.begin(), parts[c].key.end());
  }
  return all;
}

/// The k-th largest of the n non-negative `keys` (1 <= k <= n) by an MSD radix select (11 bits
/// per pass; each pass keeps only the bucket holding rank k); `take` receives how many keys
/// equal to the result belong to the k largest. O(n) time, O(size of the first bucket) memory.
template <typename K>
K radix_kth_largest(const K* keys, std::size_t n, std::size_t k, std::size_t& take) {
  using U = std::make_unsigned_t<K>;
  constexpr unsigned kRadix = 11;
  std::vector<U> buf;
  const U* src = reinterpret_cast<const U*>(keys);
  std::size_t hist[std::size_t{1} << kRadix];
  std::size_t rank = k;
  U prefix = 0;
  unsigned top = 8 * sizeof(K) - 1;  // keys are non-negative: bits [0, top) are undecided
  while (top > 0) {
    const unsigned shift = top > kRadix ? top - kRadix : 0;
    const U mask = static_cast<U>((U{1} << (top - shift)) - 1);
    std::fill(hist, hist + mask + 1, std::size_t{0});
    for (std::size_t j = 0; j < n; ++j) ++hist[static_cast<std::size_t>((src[j] >> shift) & mask)];
    auto b = static_cast<std::size_t>(mask);
    while (hist[b] < rank) rank -= hist[b--];
    prefix = static_cast<U>(prefix | (static_cast<U>(b) << shift));
    top = shift;
    if (top == 0 || hist[b] == n) continue;  // done, or every key is in this bucket
    if (buf.empty()) buf.resize(hist[b]);
    std::size_t m = 0;
    for (std::size_t j = 0; j < n && m < hist[b]; ++j) {
      const U v = src[j];
      buf[m] = v;
      m += static_cast<std::size_t>(((v >> shift) & mask) == b);
    }
    src = buf.data();
    n = m;
  }
  take = rank;
  return static_cast<K>(prefix);
}

/// Exact top-k among the ascending candidates `c` (which must contain the top-k of x): the
/// threshold key T is the k-th largest candidate key; keep every key > T and the lowest-index
/// keys == T. Writes k ascending indices to `idx`.
template <typename T>
void select_among(const Candidates<T>& c, std::size_t k, std::uint32_t* idx) {
  using K = typename KeyTraits<T>::K;
  std::size_t take = 0;
  const K thr = radix_kth_largest(c.key.data(), c.key.size(), k, take);
  std::size_t o = 0;
  for (std::size_t j = 0; j < c.key.size(); ++j) {
    const K key = c.key[j];
    if (key > thr || (key == thr && take > 0)) {
      if (key == thr) --take;
      idx[o++] = c.idx[j];
    }
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// selection kernels
// ---------------------------------------------------------------------------------------------

/// \brief Exact top-k by magnitude.
/// \tparam T float or double.
/// \param[in] x (D,) vector, 1 <= D <= 2^32 - 1.
/// \param k 1 <= k <= D.
/// \param[out] idx (k,) indices of the k largest |x_i|, ascending.
/// \param threads 0 = all cores.
///
/// Order: |x| compared as IEEE magnitudes, every NaN ranks above +Inf (a NaN is "the largest");
/// among equal magnitudes (and among NaNs) the lower index wins. -0.0 and 0.0 are equal.
/// Method: a fixed, strided sample of up to 32768 magnitudes gives a threshold L that at least k
/// elements exceed with high probability; one filtering pass over x (vectorised, memory-bound)
/// collects the candidates >= L; an exact selection among them applies the tie rule. If fewer
/// than k pass the filter (unlucky sample, or more zeros than D - k) the filter reruns with the
/// nonzero magnitudes and zeros fill in by lowest index, so the result is always exact.
/// Complexity O(D) expected, one read of x (plus O(candidates) work). The output depends on x
/// and k only, so it is bit-identical for any thread count.
template <typename T>
void topk_select(const T* x, std::size_t D, std::size_t k, std::uint32_t* idx, int threads) {
  using K = typename detail::KeyTraits<T>::K;
  require(D >= 1 && D <= kMaxDim, "D must be in [1, 2^32 - 1]");
  require(k >= 1 && k <= D, "k must be in [1, D]");
  if (k == D) {
    for (std::size_t i = 0; i < D; ++i) idx[i] = static_cast<std::uint32_t>(i);
    return;
  }
  // Sample: up to 1024 runs of 32 consecutive magnitudes (about D/8 of them for D < 262144).
  constexpr std::size_t kRun = 32;
  const std::size_t kBlocks = std::min<std::size_t>(1024, D / (8 * kRun));
  const std::size_t kSample = kBlocks * kRun;
  K L = 1;  // the nonzero-magnitude filter
  std::size_t expect = D;
  if (kBlocks >= 16) {
    std::vector<K> s(kSample);
    for (std::size_t b = 0; b < kBlocks; ++b) {
      const std::size_t start = (D - kRun) * b / (kBlocks - 1);
      for (std::size_t j = 0; j < kRun; ++j) s[b * kRun + j] = detail::magnitude_key(x[start + j]);
    }
    const double r = static_cast<double>(k) * static_cast<double>(kSample) / static_cast<double>(D);
    const double rank = std::ceil(r + 4.0 * std::sqrt(r) + 8.0);
    if (rank < static_cast<double>(kSample)) {
      std::size_t ties = 0;
      const K sk = detail::radix_kth_largest(s.data(), kSample, static_cast<std::size_t>(rank), ties);
      L = std::max<K>(sk, 1);
      expect = static_cast<std::size_t>(rank / static_cast<double>(kSample) *
                                        static_cast<double>(D) * 1.25);
    }
  }
  auto& scratch = detail::TopkScratch<T>::get();
  const typename detail::TopkScratch<T>::Guard guard{scratch};
  const detail::Candidates<T>* found = &detail::filter_indices(x, D, L, expect, threads, scratch);
  if (found->idx.size() < k && L > 1) {
    found = &detail::filter_indices(x, D, K{1}, D, threads, scratch);
  }
  if (found->idx.size() >= k) {
    detail::select_among(*found, k, idx);
    return;
  }
  const std::vector<std::uint32_t>& cand = found->idx;
  // Fewer than k nonzero magnitudes: all of them, plus the lowest-index zeros.
  std::size_t need = k - cand.size(), o = 0, c = 0;
  for (std::size_t i = 0; i < D && o < k; ++i) {
    if (c < cand.size() && cand[c] == i) {
      idx[o++] = cand[c++];
    } else if (need > 0) {
      idx[o++] = static_cast<std::uint32_t>(i);
      --need;
    }
  }
}

/// \brief Uniform random k-subset of [0, D) without replacement (Floyd's algorithm).
/// \param seed stream seed (the caller folds the round, and for private masks the device, in).
/// \param[out] idx (k,) ascending indices.
/// Step j (j = D-k .. D-1) draws t uniform in [0, j] from random_at(key, j) and keeps t, or j if
/// t was already kept. Serial and a pure function of (seed, D, k): thread-count independent and
/// identical on every device holding the same seed. O(k + D/64) time, D/8 bytes of bitmap.
inline void randk_select(std::uint64_t seed, std::size_t D, std::size_t k, std::uint32_t* idx) {
  require(D >= 1 && D <= kMaxDim, "D must be in [1, 2^32 - 1]");
  require(k >= 1 && k <= D, "k must be in [1, D]");
  if (k == D) {
    for (std::size_t i = 0; i < D; ++i) idx[i] = static_cast<std::uint32_t>(i);
    return;
  }
  const std::uint64_t key = stream_key(seed, Stream::randk);
  std::vector<std::uint64_t> bits((D + 63) / 64, 0);
  for (std::size_t j = D - k; j < D; ++j) {
    const auto t = static_cast<std::size_t>(bounded(random_at(key, j), j + 1));
    const bool taken = (bits[t >> 6] >> (t & 63)) & 1U;
    const std::size_t pick = taken ? j : t;
    bits[pick >> 6] |= std::uint64_t{1} << (pick & 63);
  }
  std::size_t o = 0;
  for (std::size_t w = 0; w < bits.size(); ++w) {
    std::uint64_t b = bits[w];
    while (b != 0) {
      const auto tz = static_cast<std::size_t>(__builtin_ctzll(b));
      idx[o++] = static_cast<std::uint32_t>(w * 64 + tz);
      b &= b - 1;
    }
  }
}

}  // namespace cyclad::kernels
