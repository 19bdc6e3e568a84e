// SPDX-License-Identifier: Apache-2.0
// Deterministic work partitioning. Work is split by output coordinate or by fixed-size block,
// never by reduction order, so every result is bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>

#ifdef CYCLAD_HAS_OPENMP
#include <omp.h>
#endif

namespace cyclad::kernels {

/// Coordinates per block in blocked reductions. Fixed (never derived from the thread count), so
/// the order in which partial sums are combined does not depend on how many threads run.
inline constexpr std::size_t kReduceBlock = 8192;

/// Bytes of input a thread must have before a second thread is woken. Below it, starting and
/// joining a thread costs more than it saves, and worse: on a machine whose other cores are
/// busy, a woken thread waits for a time slice (milliseconds), and after the region it keeps
/// spinning, taking a core from the next serial call. Measured on 2 cores with the other one
/// busy: a (10, 4810) float32 trimmed mean took 4.3 ms with 2 threads and 74 us with one.
/// (A build may set CYCLAD_MIN_BYTES_PER_THREAD to measure the crossover.)
#ifndef CYCLAD_MIN_BYTES_PER_THREAD
#define CYCLAD_MIN_BYTES_PER_THREAD (std::size_t{1} << 20)
#endif
inline constexpr std::size_t kMinBytesPerThread = CYCLAD_MIN_BYTES_PER_THREAD;

/// \brief The grain (items per chunk) of `parallel_for` that gives every thread at least
/// `kMinBytesPerThread` of input, for items of `bytes_per_item` bytes (at least `floor` items).
inline std::size_t grain_for(std::size_t bytes_per_item, std::size_t floor = 1) {
  const std::size_t b = std::max<std::size_t>(bytes_per_item, 1);
  return std::max(floor, (kMinBytesPerThread + b - 1) / b);
}

/// Number of threads to use: `threads <= 0` means all cores.
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
#ifdef CYCLAD_HAS_OPENMP
  return std::max(1, omp_get_num_procs());
#else
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
#endif
}

inline bool has_openmp() {
#ifdef CYCLAD_HAS_OPENMP
  return true;
#else
  return false;
#endif
}

/// \brief Run `fn(lo, hi)` over a static partition of [0, count) into contiguous chunks.
///
/// Each chunk is at least `grain` items (tiny work stays serial). Exceptions thrown by workers
/// are captured and the first one is rethrown after the join. `fn` must write only to outputs
/// indexed by [lo, hi) so that the partition does not change any result.
template <typename Fn>
void parallel_for(std::size_t count, int threads, std::size_t grain, Fn&& fn) {
  if (count == 0) return;
  grain = std::max<std::size_t>(grain, 1);
  std::size_t max_chunks = (count + grain - 1) / grain;
  auto nt = static_cast<std::size_t>(resolve_threads(threads));
  nt = std::min(nt, max_chunks);
  if (nt <= 1) {
    fn(std::size_t{0}, count);
    return;
  }
#ifdef CYCLAD_HAS_OPENMP
  std::exception_ptr error = nullptr;
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(static, 1)
  for (long long c = 0; c < static_cast<long long>(nt); ++c) {
    auto uc = static_cast<std::size_t>(c);
    std::size_t lo = count * uc / nt;
    std::size_t hi = count * (uc + 1) / nt;
    try {
      fn(lo, hi);
    } catch (...) {
#pragma omp critical(cyclad_parallel_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
#else
  fn(std::size_t{0}, count);
#endif
}

/// \brief Blocked deterministic reduction helper: calls `fn(block, lo, hi)` for each block of
/// `kReduceBlock` coordinates in [0, count); blocks are spread over threads. The caller stores
/// per-block partials and combines them in block order afterwards.
template <typename Fn>
void parallel_blocks(std::size_t count, int threads, Fn&& fn) {
  std::size_t nblocks = (count + kReduceBlock - 1) / kReduceBlock;
  parallel_for(nblocks, threads, 1, [&](std::size_t b0, std::size_t b1) {
    for (std::size_t b = b0; b < b1; ++b) {
      std::size_t lo = b * kReduceBlock;
      std::size_t hi = std::min(count, lo + kReduceBlock);
      fn(b, lo, hi);
    }
  });
}

inline std::size_t num_blocks(std::size_t count) {
  return (count + kReduceBlock - 1) / kReduceBlock;
}

}  // namespace cyclad::kernels
