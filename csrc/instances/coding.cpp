// SPDX-License-Identifier: Apache-2.0
// The coding kernels (cyclic encoding) for float and double, on every ISA (instances.hpp).
#include "instances/instances.hpp"

namespace cyclad::kernels {
CYCLAD_CODING_KERNELS(, float)
CYCLAD_CODING_KERNELS(, double)
}  // namespace cyclad::kernels
