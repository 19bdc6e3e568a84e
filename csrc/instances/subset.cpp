// SPDX-License-Identifier: Apache-2.0
// The subset kernels (MDA, SMEA, CAF) for float and double (instances.hpp).
#include "instances/instances.hpp"

namespace cyclad::kernels {
CYCLAD_SUBSET_KERNELS(, float)
CYCLAD_SUBSET_KERNELS(, double)
}  // namespace cyclad::kernels
