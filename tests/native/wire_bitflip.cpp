// SPDX-License-Identifier: Apache-2.0
// Sanitizer driver: top-k selection (every fill pattern, k from 1 to D) and compress /
// decompress of every kind with every bit of the payload flipped, under ASan + UBSan. A flipped
// payload also goes through decode without validation: decode must stay in bounds on its own.
// Built and run by .ci/sanitize (tests/native/build.sh builds the fuzz targets).
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>
#include "cyclad/codec.hpp"
namespace k = cyclad::kernels;

template <typename T> void topk_cases(std::mt19937_64& g) {
  std::normal_distribution<double> nd;
  for (std::size_t D : {1u, 31u, 32u, 33u, 100u, 4095u, 4096u, 70001u, 300000u}) {
    for (int fill = 0; fill < 4; ++fill) {
      std::vector<T> x(D);
      for (std::size_t i = 0; i < D; ++i) {
        const double v = nd(g);
        x[i] = static_cast<T>(fill == 0 ? v : fill == 1 ? 0.0 : fill == 2 ? 1.0
                              : (i % 97 == 0 ? v : 0.0));
      }
      for (std::size_t kk : {std::size_t{1}, D / 100 + 1, D / 3 + 1, D - D / 2, D}) {
        if (kk > D) continue;
        std::vector<std::uint32_t> idx(kk);
        k::topk_select(x.data(), D, kk, idx.data(), 1);
      }
    }
  }
}

template <typename T> void wire_cases(std::mt19937_64& g) {
  std::normal_distribution<double> nd;
  for (std::size_t D : {1u, 13u, 1000u, 5000u}) {
    std::vector<T> x(D);
    for (auto& v : x) v = static_cast<T>(nd(g));
    for (int kind = 0; kind <= static_cast<int>(k::kMaxKind); ++kind) {
      for (int vc = 1; vc <= 3; ++vc) {
        // natural compression sends no values: its value code is the dense dtype's
        if (kind == 5 && vc != (sizeof(T) == 4 ? 2 : 3)) continue;
        for (int shared = 0; shared <= (kind == 2 ? 1 : 0); ++shared) {
          k::WireSpec spec;
          spec.kind = static_cast<k::Kind>(kind);
          spec.vcode = static_cast<k::ValueCode>(vc);
          spec.dense = k::dense_code_of<T>;
          spec.dim = D;
          spec.param = kind == 3 ? 5 : (D + 3) / 4;
          spec.bucket = kind == 3 ? (D < 7 ? D : 7) : kind == 6 ? (D < 5 ? D : 5) : 0;
          spec.shared = shared != 0;
          spec.seed = 9;
          const std::uint64_t size = k::payload_size(spec);
          std::vector<unsigned char> p(size);
          k::compress(spec, x.data(), p.data(), size, 1);
          std::vector<T> out(D);
          k::decompress(spec, p.data(), size, out.data(), 1);
          for (std::size_t bit = 0; bit < 8 * size && bit < 4096; ++bit) {
            p[bit / 8] ^= static_cast<unsigned char>(1U << (bit % 8));
            try {
              k::decompress(spec, p.data(), size, out.data(), 1);
            } catch (const std::invalid_argument&) {
            }
            try {
              k::decode(spec, p.data(), size, out.data(), 1);
            } catch (const std::invalid_argument&) {
            }
            p[bit / 8] ^= static_cast<unsigned char>(1U << (bit % 8));
          }
        }
      }
    }
  }
}

int main() {
  std::mt19937_64 g(1);
  topk_cases<float>(g);
  topk_cases<double>(g);
  wire_cases<float>(g);
  wire_cases<double>(g);
  std::puts("sanitizer driver ok");
  return 0;
}
