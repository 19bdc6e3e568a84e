// SPDX-License-Identifier: Apache-2.0
// Shared kernel vocabulary: matrix views, argument checks, runtime ISA dispatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// Hot per-block workers carry CYCLAD_MULTIVERSION: GCC/Clang emit an AVX-512, an AVX2 and a
// baseline clone and pick one at load time (ifunc), so a portable `pip install .` still runs the
// wide paths. Put it on the function that holds the inner loop, not on the one that opens the
// parallel region (OpenMP outlines that body into a function that would not inherit the target).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(CYCLAD_NO_MULTIVERSION) && !defined(__AVX512F__)
#define CYCLAD_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CYCLAD_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CYCLAD_RESTRICT __restrict__
#else
#define CYCLAD_RESTRICT
#endif

namespace cyclad::kernels {

/// The target_clones clone the hot kernels run on this CPU: "x86-64-v4" (AVX-512),
/// "x86-64-v3" (AVX2 + FMA) or "baseline", chosen by the same rule as the load-time resolver
/// (the first clone the CPU supports); "native" / "portable" when the build has no clones.
inline const char* isa_path() {
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(CYCLAD_NO_MULTIVERSION) && !defined(__AVX512F__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "baseline";
#elif defined(__AVX512F__)
  return "native";
#else
  return "portable";
#endif
}

/// Throw std::invalid_argument (-> Python ValueError) unless `ok`.
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

/// \brief Read-only view of an (n, d) row-major block; rows are `row_stride` elements apart.
/// `data` must be aligned to alignof(T): kernels load through typed pointers (the bindings
/// reject, and the Python layer copies, unaligned arrays).
template <typename T>
struct MatrixView {
  const T* data = nullptr;
  std::size_t n = 0;
  std::size_t d = 0;
  std::size_t row_stride = 0;

  MatrixView(const T* ptr, std::size_t rows, std::size_t cols)
      : data(ptr), n(rows), d(cols), row_stride(cols) {}
  MatrixView(const T* ptr, std::size_t rows, std::size_t cols, std::size_t stride)
      : data(ptr), n(rows), d(cols), row_stride(stride) {}

  const T* row(std::size_t i) const { return data + i * row_stride; }
};

}  // namespace cyclad::kernels
