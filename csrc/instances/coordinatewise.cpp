// SPDX-License-Identifier: Apache-2.0
// The coordinatewise kernels (mean, weighted mean, median, trimmed mean, meamed,
// closest-value means) for float and double, on every ISA (instances.hpp).
#include "instances/instances.hpp"

namespace cyclad::kernels {
CYCLAD_COORDINATEWISE_KERNELS(, float)
CYCLAD_COORDINATEWISE_KERNELS(, double)
}  // namespace cyclad::kernels
