// SPDX-License-Identifier: Apache-2.0
// The compression kernels (compress, decode, top-k selection, the sign majority vote) for
// float and double, and the payload validation, on every ISA (instances.hpp).
#include "instances/instances.hpp"

namespace cyclad::kernels {
CYCLAD_CODEC_KERNELS(, float)
CYCLAD_CODEC_KERNELS(, double)
}  // namespace cyclad::kernels

namespace cyclad::compiled {

void validate_payload(const kernels::WireSpec& spec, const unsigned char* p, std::uint64_t size,
                      int threads) {
  kernels::validate_payload(spec, p, size, threads);
}

kernels::Header parse_message(const unsigned char* data, std::uint64_t len,
                              const kernels::ReceiveLimits& lim, int threads) {
  return kernels::parse_message(data, len, lim, threads);
}

}  // namespace cyclad::compiled
