// SPDX-License-Identifier: Apache-2.0
// Where each kernel is compiled. bindings.cpp, the one pybind11 unit, includes this header: the
// `extern template` declarations below keep it from instantiating the kernels, and each unit in
// csrc/instances/ instantiates one area's kernels (every ISA clone of each, for float and
// double), so ninja compiles the areas in parallel and none of them twice. The lists are
// written once, as macros over the value type T; EXTERN is `extern` here and empty in the unit
// that defines the instances. No pybind11 here either (tests/test_layout.py).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cyclad/codec.hpp"
#include "cyclad/coding.hpp"
#include "cyclad/common.hpp"
#include "cyclad/coordinatewise.hpp"
#include "cyclad/distance.hpp"
#include "cyclad/vote.hpp"
#include "cyclad/subset.hpp"

// coordinatewise.cpp
#define CYCLAD_COORDINATEWISE_KERNELS(EXTERN, T)                               \
  EXTERN template void mean<T>(MatrixView<T>, T*, int);                      \
  EXTERN template void median<T>(MatrixView<T>, T*, int);                    \
  EXTERN template void trimmed_mean<T>(MatrixView<T>, std::size_t, T*, int); \
  EXTERN template void meamed<T>(MatrixView<T>, std::size_t, T*, int);                      \
  EXTERN template void weighted_mean<T>(MatrixView<T>, const double*, T*, int);              \
  EXTERN template void closest_coordinates<T>(MatrixView<T>, const std::size_t*, std::size_t, \
                                              const double*, std::size_t, T*, int);

// distance.cpp
#define CYCLAD_DISTANCE_KERNELS(EXTERN, T)                                                       \
  EXTERN template void pairwise_sq_distances<T>(MatrixView<T>, double*, unsigned char*, int);  \
  EXTERN template void krum<T>(MatrixView<T>, std::size_t, T*, int);                           \
  EXTERN template void multi_krum<T>(MatrixView<T>, std::size_t, std::size_t, const double*,  \
                                     T*, int);                                                 \
  EXTERN template void closest<T>(MatrixView<T>, const double*, std::size_t, T*, int);         \
  EXTERN template void bulyan<T>(MatrixView<T>, std::size_t, BulyanSelection, KrumNeighbors,   \
                                 T*, int);                                                     \
  EXTERN template std::size_t geometric_median<T>(MatrixView<T>, double, std::size_t, double,  \
                                                  T*, int, GmStart);                           \
  EXTERN template void centered_clipping<T>(MatrixView<T>, double, std::size_t, const double*, \
                                            T*, int);                                          \
  EXTERN template void nnm<T>(MatrixView<T>, std::size_t, T*, int);                            \
  EXTERN template void bucketing<T>(MatrixView<T>, const std::int64_t*, std::size_t, T*, int); \
  EXTERN template void clip<T>(MatrixView<T>, double, T*, int);                                \
  EXTERN template void arc<T>(MatrixView<T>, std::size_t, T*, int);

// subset.cpp
#define CYCLAD_SUBSET_KERNELS(EXTERN, T)                                                     \
  EXTERN template void mda<T>(MatrixView<T>, std::size_t, T*, std::vector<std::size_t>&, int);  \
  EXTERN template void smea<T>(MatrixView<T>, std::size_t, T*, std::vector<std::size_t>&, int); \
  EXTERN template void caf<T>(MatrixView<T>, std::size_t, std::size_t, T*, std::size_t&, int);

// coding.cpp
#define CYCLAD_CODING_KERNELS(EXTERN, T)                                                      \
  EXTERN template void encode<T>(MatrixView<T>, const std::int64_t*, std::size_t, std::size_t, \
                                 const T*, bool, T*, int);

// codec.cpp
#define CYCLAD_CODEC_KERNELS(EXTERN, T)                                                            \
  EXTERN template void compress<T>(const WireSpec&, const T*, unsigned char*, std::uint64_t, int); \
  EXTERN template void decode<T>(const WireSpec&, const unsigned char*, std::uint64_t, T*, int);   \
  EXTERN template void topk_select<T>(const T*, std::size_t, std::size_t, std::uint32_t*, int); \
  EXTERN template void sign_majority<T>(const unsigned char* const*, std::size_t, std::size_t, T*, \
                                        int);

namespace cyclad::kernels {
CYCLAD_COORDINATEWISE_KERNELS(extern, float)
CYCLAD_COORDINATEWISE_KERNELS(extern, double)
CYCLAD_DISTANCE_KERNELS(extern, float)
CYCLAD_DISTANCE_KERNELS(extern, double)
CYCLAD_SUBSET_KERNELS(extern, float)
CYCLAD_SUBSET_KERNELS(extern, double)
CYCLAD_CODING_KERNELS(extern, float)
CYCLAD_CODING_KERNELS(extern, double)
CYCLAD_CODEC_KERNELS(extern, float)
CYCLAD_CODEC_KERNELS(extern, double)
}  // namespace cyclad::kernels

/// Out-of-line entry points of the heavy kernels that are inline functions, not templates (an
/// `extern template` cannot keep those out of bindings.cpp). Each calls the kernel of the same
/// name in cyclad::kernels.
namespace cyclad::compiled {
// codec.cpp
void validate_payload(const kernels::WireSpec& spec, const unsigned char* p, std::uint64_t size,
                      int threads);
kernels::Header parse_message(const unsigned char* data, std::uint64_t len,
                              const kernels::ReceiveLimits& lim, int threads);
// bench.cpp
std::uint64_t read_pass(const unsigned char* data, std::size_t nbytes, int threads);
void copy_pass(const unsigned char* src, unsigned char* dst, std::size_t nbytes, int threads);
double fma_peak_flops(int threads, double seconds);
}  // namespace cyclad::compiled
