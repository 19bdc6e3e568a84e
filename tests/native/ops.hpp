// SPDX-License-Identifier: Apache-2.0
// The kernels the fuzz_kernels target calls, behind out-of-line wrappers. Their instantiations
// live in ops_f32.cpp and ops_f64.cpp, so the heavy kernel templates (the sorting networks of
// coordinatewise.hpp above all) compile as two translation units in parallel, and the target itself
// stays quick to rebuild.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cyclad/common.hpp"

namespace cyclad::kernels {
struct WireSpec;
}

namespace ops {

template <typename T>
using MV = cyclad::kernels::MatrixView<T>;
using Spec = cyclad::kernels::WireSpec;

template <typename T> void mean(MV<T> x, T* out, int threads);
template <typename T> void median(MV<T> x, T* out, int threads);
template <typename T> void trimmed_mean(MV<T> x, std::size_t f, T* out, int threads);
template <typename T> void meamed(MV<T> x, std::size_t f, T* out, int threads);
template <typename T> void krum(MV<T> x, std::size_t q, T* out, int threads);
template <typename T> void multi_krum(MV<T> x, std::size_t q, std::size_t m, T* out, int threads);
template <typename T>
std::size_t geometric_median(MV<T> x, double eps, std::size_t max_iter, double tol, T* out,
                             int threads);
template <typename T>
void centered_clipping(MV<T> x, double tau, std::size_t iters, const double* center, T* out,
                       int threads);
template <typename T> void nnm(MV<T> x, std::size_t f, T* out, int threads);
template <typename T>
void bucketing(MV<T> x, const std::int64_t* perm, std::size_t s, T* out, int threads);
template <typename T> void clip(MV<T> x, double tau, T* out, int threads);
template <typename T> void arc(MV<T> x, std::size_t f, T* out, int threads);
template <typename T> void weighted_mean(MV<T> x, const double* w, T* out, int threads);
template <typename T>
void closest(MV<T> x, const double* ref, std::size_t beta, T* out, int threads);
template <typename T>
void closest_coordinates(MV<T> x, const std::size_t* rows, std::size_t nr, const double* ref,
                         std::size_t beta, T* out, int threads);
// selection: 0 iterated, 1 multi_krum; neighbors: 0 blanchard, 1 byzfl, 2 flower.
template <typename T>
void bulyan(MV<T> x, std::size_t f, unsigned selection, unsigned neighbors, T* out, int threads);
template <typename T>
void pairwise_sq_distances(MV<T> x, double* dist, unsigned char* bad, int threads);
template <typename T>
void encode(MV<T> G, const std::int64_t* assignment, std::size_t n, std::size_t d,
            const T* weights, bool per_row, T* out, int threads);
template <typename T>
void compress(const Spec& spec, const T* x, unsigned char* payload, std::uint64_t size,
              int threads);
template <typename T>
void decompress(const Spec& spec, const unsigned char* p, std::uint64_t size, T* out,
                int threads);
template <typename T>
void topk_select(const T* x, std::size_t D, std::size_t k, std::uint32_t* idx, int threads);

}  // namespace ops
