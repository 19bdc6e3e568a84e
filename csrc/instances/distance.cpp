// SPDX-License-Identifier: Apache-2.0
// The distance kernels (pairwise distances, Krum, Multi-Krum, closest-to-reference, Bulyan,
// geometric median, centered clipping, NNM, bucketing, clipping, ARC) for float and double, on
// every ISA (instances.hpp).
#include "instances/instances.hpp"

namespace cyclad::kernels {
CYCLAD_DISTANCE_KERNELS(, float)
CYCLAD_DISTANCE_KERNELS(, double)
}  // namespace cyclad::kernels
