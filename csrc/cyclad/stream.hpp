// SPDX-License-Identifier: Apache-2.0
// Non-temporal ("streaming") stores for large outputs. A kernel that writes an (n, D) output
// larger than the cache would otherwise pay a read-for-ownership of every destination line
// before writing it: twice the output's bytes of memory traffic. Streaming stores bypass the
// cache and skip that read. They store the same bits as ordinary stores; only where the bytes
// travel changes.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <unistd.h>
#endif

namespace cyclad::kernels {

namespace detail {
inline std::size_t default_stream_threshold() {
  std::size_t b = std::size_t{1} << 24;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (llc > 0) b = std::max(b, static_cast<std::size_t>(llc) / 2);
#endif
  return b;
}
inline std::atomic<std::size_t>& stream_threshold_ref() {
  static std::atomic<std::size_t> bytes{default_stream_threshold()};
  return bytes;
}
}  // namespace detail

/// Outputs at least this large (bytes) are written with streaming stores: 16 MiB, or half the
/// last-level cache when the system reports a larger one (an output that fits in the cache is
/// left there for the caller, who usually reads it next).
inline std::size_t stream_threshold_bytes() {
  return detail::stream_threshold_ref().load(std::memory_order_relaxed);
}

/// Set the threshold of stream_threshold_bytes (0: stream every output; tests use it to run
/// the streaming paths on small inputs); returns the previous one.
inline std::size_t set_stream_threshold_bytes(std::size_t bytes) {
  return detail::stream_threshold_ref().exchange(bytes, std::memory_order_relaxed);
}

/// Whether an output of `bytes` bytes is written with streaming stores.
inline bool stream_output(std::size_t bytes) { return bytes >= stream_threshold_bytes(); }

namespace detail {

/// True when streaming 16-byte stores can start at p (it is 16-byte aligned).
inline bool stream_aligned(const void* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15) == 0;
}

/// Copy `bytes` bytes (a multiple of 16) from src to the 16-byte aligned dst with streaming
/// stores (ordinary stores where SSE2 is not available).
inline void stream_bytes(void* dst, const void* src, std::size_t bytes) {
#if defined(__SSE2__)
  for (std::size_t j = 0; j < bytes / 16; ++j) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + j);
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst) + j, v);
  }
#else
  std::memcpy(dst, src, bytes);
#endif
}

/// dst[0, len) = src[0, len), with streaming stores when `stream` (bit-exact either way).
template <typename T>
inline void stream_copy(T* dst, const T* src, std::size_t len, bool stream) {
#if defined(__SSE2__)
  if (stream) {
    std::size_t c = 0;
    for (; c < len && !stream_aligned(dst + c); ++c) dst[c] = src[c];
    const std::size_t body = (len - c) * sizeof(T) / 16 * 16;
    stream_bytes(dst + c, src + c, body);
    for (c += body / sizeof(T); c < len; ++c) dst[c] = src[c];
    return;
  }
#else
  (void)stream;
#endif
  std::copy(src, src + len, dst);
}

/// Order the streaming stores of this thread before anything it does next (call it once at the
/// end of a thread's share of the work, before the parallel region joins).
inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace detail
}  // namespace cyclad::kernels
