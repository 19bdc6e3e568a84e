// SPDX-License-Identifier: Apache-2.0
// The bench references (read pass, copy pass, multiply-add peak) on every ISA (instances.hpp).
#include "instances/instances.hpp"

#include "cyclad/bench.hpp"

namespace cyclad::compiled {

std::uint64_t read_pass(const unsigned char* data, std::size_t nbytes, int threads) {
  return kernels::read_pass(data, nbytes, threads);
}

void copy_pass(const unsigned char* src, unsigned char* dst, std::size_t nbytes, int threads) {
  kernels::copy_pass(src, dst, nbytes, threads);
}

double fma_peak_flops(int threads, double seconds) {
  return kernels::fma_peak_flops(threads, seconds);
}

}  // namespace cyclad::compiled
