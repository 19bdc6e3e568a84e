// SPDX-License-Identifier: Apache-2.0
// Shared helpers of the native sanitizer harness (tests/native/): a deterministic RNG, a
// byte-stream reader for fuzz inputs, exact-size heap buffers (so AddressSanitizer sees any
// access one element past an input or output), poison values, and the failure report.
//
// The harness includes the kernel headers directly: no Python, no pybind11. Every target is a
// libFuzzer entry point (LLVMFuzzerTestOneInput); driver_main.cpp supplies a main() for builds
// without libFuzzer (g++), which replays a corpus and runs a bounded number of mutations.
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <memory>
#include <stdexcept>
#include <vector>

#include "cyclad/codec.hpp"
#include "cyclad/coding.hpp"
#include "cyclad/coordinatewise.hpp"
#include "cyclad/distance.hpp"

namespace harness {

namespace k = cyclad::kernels;

/// A property violation (not a sanitizer report): print and abort, so libFuzzer and the
/// standalone driver both record the input that caused it.
[[noreturn]] inline void fail(const char* fmt, ...) {
  std::fprintf(stderr, "\n==HARNESS== PROPERTY FAILURE: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  std::abort();
}

/// Known defects: checks that fail on today's code and are tolerated, one by one, when their id
/// is listed in the environment variable CYCLAD_FUZZ_KNOWN (comma-separated). A tolerated hit
/// is printed the first time and counted; the counts are printed at exit. Nothing is tolerated
/// unless listed, and .ci/sanitize prints its list, so the tolerance is never silent. Remove an
/// id from the list once the defect is fixed.
inline bool known(const char* id) {
  static const std::string list = [] {
    const char* e = std::getenv("CYCLAD_FUZZ_KNOWN");
    return "," + std::string(e ? e : "") + ",";
  }();
  return list.find("," + std::string(id) + ",") != std::string::npos;
}

struct KnownCounts {
  std::map<std::string, unsigned long long> hits;
  ~KnownCounts() {
    for (const auto& [id, n] : hits) {
      std::fprintf(stderr, "==HARNESS== known defect '%s' tolerated %llu times\n", id.c_str(), n);
    }
  }
};
inline KnownCounts& known_counts() {
  static KnownCounts c;
  return c;
}

/// Report a property failure with id `id`: tolerated (counted) when listed as known, else fail().
#define HARNESS_CHECK(ok, id, ...)                                                   \
  do {                                                                               \
    if (!(ok)) {                                                                     \
      if (::harness::known(id)) {                                                    \
        if (::harness::known_counts().hits[id]++ == 0) {                             \
          std::fprintf(stderr, "==HARNESS== known defect '%s' (tolerated): ", id);   \
          std::fprintf(stderr, __VA_ARGS__);                                         \
          std::fprintf(stderr, "\n");                                                \
        }                                                                            \
      } else {                                                                       \
        ::harness::fail(__VA_ARGS__);                                                \
      }                                                                              \
    }                                                                                \
  } while (0)

/// splitmix64: deterministic, platform-independent.
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double normal() {  // Box-Muller, good enough for test data
    double u = uniform(), v = uniform();
    if (u < 1e-300) u = 1e-300;
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

/// Reads structured choices from a fuzz input; past the end it returns zeros, so every byte
/// string is a valid input.
struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::size_t pos = 0;
  Reader(const std::uint8_t* data, std::size_t size) : p(data), n(size) {}
  std::uint8_t u8() { return pos < n ? p[pos++] : 0; }
  // Little-endian; the reads are sequenced (operands of | are unordered in C++).
  std::uint16_t u16() {
    const unsigned lo = u8();
    return static_cast<std::uint16_t>(lo | (static_cast<unsigned>(u8()) << 8));
  }
  std::uint32_t u32() {
    const std::uint32_t lo = u16();
    return lo | (static_cast<std::uint32_t>(u16()) << 16);
  }
  std::uint64_t u64() {
    const std::uint64_t lo = u32();
    return lo | (static_cast<std::uint64_t>(u32()) << 32);
  }
  std::size_t left() const { return n - pos; }
};

/// An exact-size heap array of T placed at `offset` bytes from a fresh allocation. With
/// offset 0 it is naturally aligned; a nonzero offset makes a deliberately misaligned pointer.
/// The allocation ends exactly at the last element, so ASan reports any read past it.
template <typename T>
struct Buffer {
  std::unique_ptr<unsigned char[]> raw;
  T* ptr = nullptr;
  std::size_t count = 0;
  Buffer(std::size_t n, std::size_t offset = 0) : count(n) {
    raw.reset(new unsigned char[n * sizeof(T) + offset + (n == 0 ? 1 : 0)]);
    ptr = reinterpret_cast<T*>(raw.get() + offset);
  }
  T* data() { return ptr; }
  const T* data() const { return ptr; }
  // Element access through memcpy: the harness itself must not perform misaligned loads.
  T get(std::size_t i) const {
    T v;
    std::memcpy(&v, reinterpret_cast<const unsigned char*>(ptr) + i * sizeof(T), sizeof(T));
    return v;
  }
  void set(std::size_t i, T v) {
    std::memcpy(reinterpret_cast<unsigned char*>(ptr) + i * sizeof(T), &v, sizeof(T));
  }
};

/// Poison values a Byzantine device may send, for float32 (index < 9) and float64 (all).
template <typename T>
inline T poison(unsigned which) {
  using L = std::numeric_limits<T>;
  switch (which % (sizeof(T) == 4 ? 9 : 11)) {
    case 0: return L::quiet_NaN();
    case 1: return -L::quiet_NaN();
    case 2: return L::infinity();
    case 3: return -L::infinity();
    case 4: return L::max();
    case 5: return -L::max();
    case 6: return static_cast<T>(3e38);
    case 7: return static_cast<T>(-3e38);
    case 8: return L::denorm_min();
    case 9: return static_cast<T>(1e300);
    default: return static_cast<T>(-1e300);
  }
}

template <typename T>
inline bool is_finite(T v) {
  return std::isfinite(v);
}

/// True when the exception type is one a kernel is allowed to throw on bad input.
#define HARNESS_TRY_ARGS(stmt)                                  \
  [&]() -> bool {                                               \
    try {                                                       \
      stmt;                                                     \
      return true;                                              \
    } catch (const std::invalid_argument&) {                    \
      return false;                                             \
    }                                                           \
  }()

}  // namespace harness
