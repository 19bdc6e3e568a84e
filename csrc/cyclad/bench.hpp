// SPDX-License-Identifier: Apache-2.0
// The memory-bandwidth baseline the bench suite measures every kernel against.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"

namespace cyclad::kernels {

namespace detail {
template <Isa I>
CYCLAD_KERNEL std::uint64_t read_block(const std::uint64_t* CYCLAD_RESTRICT p,
                                                    std::size_t count) {
  // XOR keeps the loop memory-bound (no FP dependency chain) and cannot be optimised away.
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= count; i += 4) {
    a0 ^= p[i];
    a1 ^= p[i + 1];
    a2 ^= p[i + 2];
    a3 ^= p[i + 3];
  }
  for (; i < count; ++i) a0 ^= p[i];
  return a0 ^ a1 ^ a2 ^ a3;
}
}  // namespace detail

/// \brief Multi-threaded read of `nbytes` bytes: the bandwidth reference of the bench suite.
/// \return an XOR checksum of the bytes (so the pass cannot be elided). Trailing bytes that do
/// not fill a 64-bit word are folded in one at a time.
inline std::uint64_t read_pass(const unsigned char* data, std::size_t nbytes, int threads) {
  const std::size_t words = nbytes / 8;
  const auto* w = reinterpret_cast<const std::uint64_t*>(data);
  const auto nt = static_cast<std::size_t>(resolve_threads(threads));
  std::vector<std::uint64_t> part(nt, 0);
  // One chunk per thread; XOR partials combine in any order to the same checksum.
  parallel_for(nt, static_cast<int>(nt), 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      std::size_t lo = words * c / nt, hi = words * (c + 1) / nt;
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA { part[c] = detail::read_block<decltype(isa)::value>(w + lo, hi - lo); });
    }
  });
  std::uint64_t acc = 0;
  for (auto v : part) acc ^= v;
  for (std::size_t i = words * 8; i < nbytes; ++i) acc ^= data[i];
  return acc;
}

}  // namespace cyclad::kernels
