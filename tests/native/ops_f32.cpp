// SPDX-License-Identifier: Apache-2.0
// float instantiations of the ops.hpp wrappers.
#define OPS_T float
#include "ops_impl.inc"
