// SPDX-License-Identifier: Apache-2.0
// double instantiations of the ops.hpp wrappers.
#define OPS_T double
#include "ops_impl.inc"
