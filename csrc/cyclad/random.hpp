// SPDX-License-Identifier: Apache-2.0
// Counter-based random streams: every random number is a pure function of (seed, stream,
// counter), so a kernel may draw the number for coordinate i on any thread, in any order, and
// get the same bits for any thread count.
#pragma once

#include <cstdint>

namespace cyclad::kernels {

/// Weyl increment of splitmix64 (2^64 / golden ratio, odd).
inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

/// \brief splitmix64 finaliser (Steele, Lea & Flood 2014; Stafford's "Mix13" constants).
/// A bijection of 64-bit words with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// Independent-stream identifiers: each consumer of randomness draws from its own stream so
/// that, e.g., rand-k masks and QSGD dithers of the same seed are unrelated.
enum class Stream : std::uint64_t { randk = 1, qsgd = 2, natural = 3, terngrad = 4 };

/// \brief Key of a random stream: mixes the user seed with the stream identifier.
/// The training loop folds the round (and, for private streams, the device) into `seed` before
/// calling a kernel (python: `cyclad.compression.derive_seed`).
constexpr std::uint64_t stream_key(std::uint64_t seed, Stream stream) {
  return mix64(seed ^ mix64(static_cast<std::uint64_t>(stream) * kGolden));
}

/// \brief The `counter`-th 64-bit output of the splitmix64 sequence started at `key`:
/// `mix64(key + (counter + 1) * kGolden)`. O(1) for any counter, so draws are thread-count
/// independent by construction.
constexpr std::uint64_t random_at(std::uint64_t key, std::uint64_t counter) {
  return mix64(key + (counter + 1) * kGolden);
}

/// Uniform double in [0, 1) from the top 53 bits.
constexpr double uniform53(std::uint64_t h) {
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

/// Uniform float in [0, 1) from the top 24 bits.
constexpr float uniform24(std::uint64_t h) {
  return static_cast<float>(h >> 40) * 0x1.0p-24f;
}

/// \brief Integer in [0, bound) by Lemire's multiply-shift: floor(h * bound / 2^64). The bias
/// is at most bound / 2^64 (< 2^-32 for bound < 2^32), far below anything a test can see.
inline std::uint64_t bounded(std::uint64_t h, std::uint64_t bound) {
#if defined(__SIZEOF_INT128__)
  __extension__ typedef unsigned __int128 u128;
  return static_cast<std::uint64_t>((static_cast<u128>(h) * bound) >> 64);
#else
  const std::uint64_t a = h >> 32, b = h & 0xFFFFFFFFULL;
  const std::uint64_t c = bound >> 32, d = bound & 0xFFFFFFFFULL;
  const std::uint64_t ac = a * c, ad = a * d, bc = b * c, bd = b * d;
  const std::uint64_t mid = (bd >> 32) + (ad & 0xFFFFFFFFULL) + (bc & 0xFFFFFFFFULL);
  return ac + (ad >> 32) + (bc >> 32) + (mid >> 32);
#endif
}

}  // namespace cyclad::kernels
