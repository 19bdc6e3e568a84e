// SPDX-License-Identifier: Apache-2.0
// The memory-bandwidth baseline the bench suite measures every kernel against.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/stream.hpp"

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
#if defined(__GNUC__) || defined(__clang__)
typedef double peak_d8 __attribute__((vector_size(64)));
typedef double peak_d4 __attribute__((vector_size(32)));
typedef double peak_d2 __attribute__((vector_size(16)));
template <Isa I>
struct PeakVec {
  using V = peak_d2;
};
template <>
struct PeakVec<Isa::v3> {
  using V = peak_d4;
};
template <>
struct PeakVec<Isa::v4> {
  using V = peak_d8;
};
#endif

/// Independent multiply-add chains in fma_chains: enough to hide the latency on two pipes,
/// few enough to stay in the 16 registers of AVX2 with the two operands.
inline constexpr std::size_t kPeakChains = 12;

/// `iters` steps of kPeakChains independent multiply-add chains of the active ISA's vectors;
/// returns a value that depends on every chain, so none can be elided.
template <Isa I>
CYCLAD_KERNEL double fma_chains(std::size_t iters) {
#if defined(__GNUC__) || defined(__clang__)
  using V = typename PeakVec<I>::V;
  constexpr std::size_t W = sizeof(V) / sizeof(double);
  V a[kPeakChains], m, c;
  for (std::size_t l = 0; l < W; ++l) {
    m[l] = 1.0 - 1e-12;
    c[l] = 1e-9;
  }
  for (std::size_t q = 0; q < kPeakChains; ++q) a[q] = m + static_cast<double>(q) * 1e-3;
  for (std::size_t t = 0; t < iters; ++t) {
    for (std::size_t q = 0; q < kPeakChains; ++q) a[q] = a[q] * m + c;
  }
  double s = 0.0;
  for (std::size_t q = 0; q < kPeakChains; ++q) {
    for (std::size_t l = 0; l < W; ++l) s += a[q][l];
  }
  return s;
#else
  double a = 1.0;
  for (std::size_t t = 0; t < iters; ++t) a = a * (1.0 - 1e-12) + 1e-9;
  return a;
#endif
}

}  // namespace detail

/// \brief Peak double-precision multiply-add throughput of the active ISA on `threads`
/// threads, in flops per second (a multiply-add counts 2): each thread runs independent
/// chains for about `seconds`. The bench sets compute-bound kernels against it.
inline double fma_peak_flops(int threads, double seconds) {
  const auto nt = static_cast<std::size_t>(resolve_threads(threads));
#if defined(__GNUC__) || defined(__clang__)
  const std::size_t W = active_isa() == Isa::v4 ? 8 : active_isa() == Isa::v3 ? 4 : 2;
#else
  const std::size_t W = 1;
#endif
  // Calibrate the step count on one thread, then time all threads together.
  std::size_t iters = 1 << 16;
  double dt = 0.0, sink = 0.0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    dispatch_fused([&](auto isa) CYCLAD_INLINE_LAMBDA {
      sink += detail::fma_chains<decltype(isa)::value>(iters);
    });
    dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds / 4 || iters > (std::size_t{1} << 40)) break;
    iters *= 4;
  }
  std::vector<double> part(nt, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  parallel_for(nt, static_cast<int>(nt), 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      dispatch_fused([&](auto isa) CYCLAD_INLINE_LAMBDA {
        part[c] = detail::fma_chains<decltype(isa)::value>(iters);
      });
    }
  });
  dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (double p : part) sink += p;
  if (sink == 42.0) dt *= 1.0;  // keep `sink` alive
  return 2.0 * static_cast<double>(detail::kPeakChains) * static_cast<double>(W) * static_cast<double>(iters) *
         static_cast<double>(nt) / dt;
}

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

/// \brief Multi-threaded copy of `nbytes` bytes from src to dst (not overlapping), written the
/// way the kernels write their outputs: with streaming stores when the output is at least
/// stream_threshold_bytes(). The bench's floor for a kernel that reads its input and writes an
/// output of the same size (one read of src, one write of dst). Threads split the bytes in
/// 64-byte aligned chunks.
inline void copy_pass(const unsigned char* src, unsigned char* dst, std::size_t nbytes,
                      int threads) {
  const auto nt = static_cast<std::size_t>(resolve_threads(threads));
  const bool stream = stream_output(nbytes);
  const std::size_t lines = (nbytes + 63) / 64;
  parallel_for(nt, static_cast<int>(nt), 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t lo = std::min(nbytes, lines * c / nt * 64);
      const std::size_t hi = std::min(nbytes, lines * (c + 1) / nt * 64);
      detail::stream_copy(dst + lo, src + lo, hi - lo, stream);
    }
    if (stream) detail::store_fence();
  });
}

}  // namespace cyclad::kernels
