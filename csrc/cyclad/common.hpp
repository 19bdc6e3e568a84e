// SPDX-License-Identifier: Apache-2.0
// Shared kernel vocabulary: matrix views, argument checks, runtime ISA dispatch.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// ISA dispatch. Hot per-block workers are templates over an `Isa` (their first template
// parameter) marked CYCLAD_KERNEL (always inlined). `dispatch(fn)` calls `fn(IsaTag<I>{})` from
// a function compiled for the ISA that is active, so the whole worker is compiled once per ISA
// (AVX-512, AVX2 + FMA, baseline x86-64) inside one portable `pip install .`, and a worker can
// pick its vector width and register tiling per ISA with `if constexpr`. The active ISA is the
// best the CPU supports, or a lower one asked for with the CYCLAD_ISA environment variable or
// `set_isa` (tests run every kernel on each one). Call `dispatch` inside a parallel region's
// body, never around one: OpenMP outlines that body into a function that would not inherit the
// target.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(CYCLAD_NO_MULTIVERSION) && !defined(__AVX512F__) && !defined(__AVX2__)
#define CYCLAD_ISA_DISPATCH 1
#else
#define CYCLAD_ISA_DISPATCH 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CYCLAD_KERNEL inline __attribute__((always_inline))
#define CYCLAD_INLINE_LAMBDA __attribute__((always_inline))
#else
#define CYCLAD_KERNEL inline
#define CYCLAD_INLINE_LAMBDA
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CYCLAD_RESTRICT __restrict__
#else
#define CYCLAD_RESTRICT
#endif

namespace cyclad::kernels {

/// The instruction sets a kernel is compiled for (x86-64 microarchitecture levels).
enum class Isa : int { baseline = 0, v3 = 1, v4 = 2 };

template <Isa I>
struct IsaTag {
  static constexpr Isa value = I;
};

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::v4: return "x86-64-v4";
    case Isa::v3: return "x86-64-v3";
    default: return "baseline";
  }
}

/// The ISA of a build without dispatch: what the compiler flags enable.
inline constexpr Isa kCompiledIsa =
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__)
    Isa::v4;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__BMI2__)
    Isa::v3;
#else
    Isa::baseline;
#endif

/// The best ISA this CPU runs (kCompiledIsa without dispatch).
inline Isa best_isa() {
#if CYCLAD_ISA_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::v4;
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::v3;
  return Isa::baseline;
#else
  return kCompiledIsa;
#endif
}

namespace detail {
inline std::atomic<int>& active_isa_slot() {
  static std::atomic<int> slot{static_cast<int>(best_isa())};
  return slot;
}
}  // namespace detail

/// The ISA the kernels run on now.
inline Isa active_isa() {
  return static_cast<Isa>(detail::active_isa_slot().load(std::memory_order_relaxed));
}

/// Run the kernels on `isa` from now on. Throws std::invalid_argument for an ISA this CPU (or,
/// without dispatch, this build) cannot run.
inline void set_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_isa())) {
    throw std::invalid_argument(std::string("this ") +
                                (CYCLAD_ISA_DISPATCH ? "CPU" : "build") + " cannot run " +
                                isa_name(isa) + " kernels (best: " + isa_name(best_isa()) + ")");
  }
#if !CYCLAD_ISA_DISPATCH
  if (isa != kCompiledIsa) {
    throw std::invalid_argument(std::string("this build has only ") + isa_name(kCompiledIsa) +
                                " kernels (built without ISA dispatch)");
  }
#endif
  detail::active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// Parse an ISA name ("x86-64-v4", "x86-64-v3", "baseline"); throws std::invalid_argument.
inline Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::v4, Isa::v3, Isa::baseline}) {
    if (name == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("unknown ISA '" + name +
                              "': expected x86-64-v4, x86-64-v3 or baseline");
}

#if CYCLAD_ISA_DISPATCH
namespace detail {
template <typename F>
__attribute__((target("arch=x86-64-v4"), noinline)) void run_isa_v4(F& fn) {
  fn(IsaTag<Isa::v4>{});
}
template <typename F>
__attribute__((target("arch=x86-64-v3"), noinline)) void run_isa_v3(F& fn) {
  fn(IsaTag<Isa::v3>{});
}
template <typename F>
__attribute__((target("arch=x86-64-v4"), optimize("fp-contract=fast"), noinline)) void
run_isa_v4_fused(F& fn) {
  fn(IsaTag<Isa::v4>{});
}
template <typename F>
__attribute__((target("arch=x86-64-v3"), optimize("fp-contract=fast"), noinline)) void
run_isa_v3_fused(F& fn) {
  fn(IsaTag<Isa::v3>{});
}
template <typename F>
__attribute__((noinline)) void run_isa_baseline(F& fn) {
  fn(IsaTag<Isa::baseline>{});
}
}  // namespace detail
#endif

/// Call `fn(IsaTag<I>{})` compiled for the active ISA I. `fn` is a generic lambda marked
/// CYCLAD_INLINE_LAMBDA that calls CYCLAD_KERNEL workers with `decltype(tag)::value`.
template <typename F>
inline void dispatch(F&& fn) {
#if CYCLAD_ISA_DISPATCH
  switch (active_isa()) {
    case Isa::v4: detail::run_isa_v4(fn); break;
    case Isa::v3: detail::run_isa_v3(fn); break;
    default: detail::run_isa_baseline(fn); break;
  }
#else
  fn(IsaTag<kCompiledIsa>{});
#endif
}

/// `dispatch`, but `a * b + c` may become one fused multiply-add on the ISAs that have one
/// (x86-64-v3 and v4). The build turns contraction off everywhere else (-ffp-contract=off), so
/// every other kernel computes the same bits on every ISA; use this only for compute-bound
/// kernels, whose results then differ between baseline and the FMA ISAs by rounding.
template <typename F>
inline void dispatch_fused(F&& fn) {
#if CYCLAD_ISA_DISPATCH
  switch (active_isa()) {
    case Isa::v4: detail::run_isa_v4_fused(fn); break;
    case Isa::v3: detail::run_isa_v3_fused(fn); break;
    default: detail::run_isa_baseline(fn); break;
  }
#else
  fn(IsaTag<kCompiledIsa>{});
#endif
}

/// The ISA the hot kernels run on: "x86-64-v4" (AVX-512), "x86-64-v3" (AVX2 + FMA) or
/// "baseline"; "native (...)" for a build without dispatch (CYCLAD_NATIVE).
inline std::string isa_path() {
#if CYCLAD_ISA_DISPATCH
  return isa_name(active_isa());
#else
  return std::string("native (") + isa_name(kCompiledIsa) + ")";
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
