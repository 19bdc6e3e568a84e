// SPDX-License-Identifier: Apache-2.0
// Distance-based robust aggregation rules and pre-aggregations over an (n, D) row-major block.
// A row with any non-finite entry is at infinite distance from every other row (DESIGN §4);
// distances accumulate in double so float32 inputs near the float32 maximum cannot overflow.
#pragma once

#include <cstddef>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"

namespace cyclad::kernels {}  // namespace cyclad::kernels
