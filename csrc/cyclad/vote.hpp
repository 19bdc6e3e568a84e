// SPDX-License-Identifier: Apache-2.0
// signSGD with majority vote (Bernstein et al. 2019): the coordinate-wise majority of n packed
// sign-bit sections (the sign bits of sign messages, docs/wire-format.md), counted with
// bit-sliced vertical counters on 64-bit words.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/wire.hpp"

namespace cyclad::kernels {

namespace detail {

/// Words of 64 coordinates counted together: one vector of counter planes per group.
inline constexpr std::size_t kVoteWords = 8;
/// Largest number of counter planes: counts up to 2^kVotePlanes - 1 voters.
inline constexpr unsigned kVotePlanes = 32;

/// 64-bit word `w` of a bit section of `nbytes` bytes, zero-padded past its end.
inline std::uint64_t load_word(const unsigned char* p, std::size_t nbytes, std::size_t w) {
  std::uint64_t v = 0;
  const std::size_t at = w * 8;
  if (at + 8 <= nbytes) {
    std::memcpy(&v, p + at, 8);
  } else if (at < nbytes) {
    std::memcpy(&v, p + at, nbytes - at);
  }
  return v;
}

/// Count the set bits of the n sections per lane over `kVoteWords` words starting at word w0
/// (bit-sliced: plane j holds bit j of each lane's count), then write, for the coordinates
/// [lo, hi) the group covers, -1 where more than half the voters have the sign bit set,
/// 0 on a tie (n even, exactly n/2) and +1 otherwise.
template <Isa I, typename T>
CYCLAD_KERNEL void vote_group(const unsigned char* const* bits, std::size_t n,
                              std::size_t nbytes, std::size_t w0, unsigned planes,
                              std::size_t lo, std::size_t hi, T* CYCLAD_RESTRICT out) {
  std::uint64_t c[kVotePlanes][kVoteWords] = {};
  for (std::size_t r = 0; r < n; ++r) {
    std::uint64_t carry[kVoteWords];
    for (std::size_t t = 0; t < kVoteWords; ++t) carry[t] = load_word(bits[r], nbytes, w0 + t);
    for (unsigned j = 0; j < planes; ++j) {
      for (std::size_t t = 0; t < kVoteWords; ++t) {
        const std::uint64_t s = c[j][t] & carry[t];
        c[j][t] ^= carry[t];
        carry[t] = s;
      }
    }
  }
  // Lanes with count > h (h = floor(n/2)) and count == h, compared from the top plane down.
  const std::uint64_t h = n / 2;
  std::uint64_t gt[kVoteWords] = {}, eq[kVoteWords];
  for (std::size_t t = 0; t < kVoteWords; ++t) eq[t] = ~std::uint64_t{0};
  for (unsigned j = planes; j-- > 0;) {
    const bool hb = ((h >> j) & 1U) != 0;
    for (std::size_t t = 0; t < kVoteWords; ++t) {
      if (hb) {
        eq[t] &= c[j][t];
      } else {
        gt[t] |= eq[t] & c[j][t];
        eq[t] &= ~c[j][t];
      }
    }
  }
  const std::uint64_t tie = n % 2 == 0 ? ~std::uint64_t{0} : 0;
  const std::size_t base = w0 * 64;
  for (std::size_t i = lo; i < hi; ++i) {
    const std::size_t lane = i - base;
    const auto neg = static_cast<unsigned>((gt[lane / 64] >> (lane % 64)) & 1U);
    const auto zero = static_cast<unsigned>(((eq[lane / 64] & tie) >> (lane % 64)) & 1U);
    out[i] = T(1) - T(2) * static_cast<T>(neg) - static_cast<T>(zero);
  }
}

}  // namespace detail

/// \brief Coordinate-wise majority vote of n sign-bit sections (signSGD with majority vote,
/// Bernstein et al. 2019).
/// \tparam T float or double (the output dtype).
/// \param[in] bits n pointers, each to a section of exactly ceil(D/8) bytes holding D sign bits
///   LSB-first (1 = negative), as in a sign message's payload after its scale. Bits past D are
///   ignored.
/// \param[in] n number of voters, 1 <= n < 2^32.
/// \param[in] D coordinates.
/// \param[out] out (D,): -1 where more than n/2 voters are negative, +1 where more than n/2
///   are non-negative, 0 on a tie (n even). Integer counting: exact, and bit-identical for any
///   thread count and ISA.
/// \param threads 0 = all cores.
/// O(n D / 64) word operations times log2(n) planes; reads each section once. Thread-safe.
template <typename T>
void sign_majority(const unsigned char* const* bits, std::size_t n, std::size_t D, T* out,
                   int threads) {
  require(n >= 1 && n < (std::size_t{1} << detail::kVotePlanes),
          "majority vote needs 1 <= n < 2^32 voters, got " + std::to_string(n));
  require(D >= 1, "majority vote needs D >= 1");
  const std::size_t nbytes = static_cast<std::size_t>(packed_bytes(D, 1));
  const auto planes = static_cast<unsigned>(bit_length(n));
  constexpr std::size_t group = detail::kVoteWords * 64;
  const std::size_t ngroups = (D + group - 1) / group;
  parallel_for(ngroups, threads, grain_for(n * group / 8 + group * sizeof(T)),
               [&](std::size_t g0, std::size_t g1) {
    for (std::size_t g = g0; g < g1; ++g) {
      const std::size_t lo = g * group, hi = std::min(D, lo + group);
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        detail::vote_group<decltype(isa)::value, T>(bits, n, nbytes, g * detail::kVoteWords,
                                                    planes, lo, hi, out);
      });
    }
  });
}

}  // namespace cyclad::kernels
