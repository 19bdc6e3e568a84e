// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the wire decoder (validate_payload + decompress of csrc/cyclad/compress.hpp) on
// arbitrary message bytes. The input is a whole message; its header is parsed here exactly as
// cyclad.compression.Message.from_bytes parses it (the header parser lives in Python), then the
// payload is copied into an exact-size heap buffer and handed to the kernels.
//
// Contract checked (DESIGN.md section 4): every byte string either decodes or throws
// std::invalid_argument; no out-of-bounds read or write (ASan); no undefined behaviour (UBSan);
// validation and decompression agree; the result does not depend on the thread count; a
// decoded vector has the shape the header gives and the values the kind allows.
#include "harness.hpp"

namespace {

using harness::Buffer;
using harness::fail;
namespace k = cyclad::kernels;

/// Largest D the target decompresses (the output is D elements). Messages with a larger D
/// that validate are counted but not decoded: a 30-byte top-k message can claim D = 2^32 - 1,
/// and the kernels allocate nothing themselves (the caller allocates D elements).
constexpr std::uint64_t kMaxDecodeDim = std::uint64_t{1} << 20;

std::uint64_t le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct Parsed {
  k::WireSpec spec;
  bool float64 = false;
  std::size_t header = 0;
};

/// Mirror of Message.from_bytes up to the payload: false for a malformed header.
bool parse_header(const std::uint8_t* data, std::size_t size, Parsed& out) {
  if (size < 16) return false;
  if (data[0] != 'C' || data[1] != 'Z' || data[2] != 1) return false;
  const unsigned kind = data[3], dcode = data[4], vcode = data[5], flags = data[6];
  if (kind > 4 || dcode < 1 || dcode > 2 || vcode < 1 || vcode > 3) return false;
  const bool shared = (flags & 1U) != 0;
  if ((flags & ~1U) != 0 || (shared && kind != 2) || data[7] != 0) return false;
  const std::uint64_t d = le64(data + 8);
  if (d < 1 || d > k::kMaxDim) return false;
  std::size_t hsize = 32;
  if (kind == 0 || kind == 4) hsize = 16;
  else if (kind == 1 || (kind == 2 && !shared)) hsize = 24;
  if (size < hsize) return false;
  k::WireSpec s;
  s.kind = static_cast<k::Kind>(kind);
  s.vcode = static_cast<k::ValueCode>(vcode);
  s.dim = d;
  s.shared = shared;
  if (kind == 1 || kind == 2) {
    s.param = le64(data + 16);
    if (shared) s.seed = le64(data + 24);
  } else if (kind == 3) {
    s.param = le64(data + 16);
    s.bucket = le64(data + 24);
  }
  s.dense = dcode == 2 ? k::DenseCode::f64 : k::DenseCode::f32;  // the receiver's dtype
  out.spec = s;
  out.float64 = dcode == 2;
  out.header = hsize;
  return true;
}

template <typename T>
void check_values(const k::WireSpec& s, const Buffer<T>& out) {
  const std::size_t D = static_cast<std::size_t>(s.dim);
  if (s.kind == k::Kind::topk || (s.kind == k::Kind::randk)) {
    std::size_t nonzero = 0;
    for (std::size_t i = 0; i < D; ++i) nonzero += out.get(i) != T(0) || std::isnan(out.get(i));
    if (nonzero > s.param) fail("sparse message decoded to %zu nonzeros > k=%llu", nonzero,
                                static_cast<unsigned long long>(s.param));
  }
  if (s.kind == k::Kind::sign) {
    const T a = std::fabs(out.get(0));
    for (std::size_t i = 0; i < D; ++i) {
      if (std::fabs(out.get(i)) != a) fail("sign message decoded to unequal magnitudes");
    }
  }
  // QSGD norms and the sign scale are validated as finite, so the decoded vector must be
  // finite too (in the output dtype, not only in the value dtype).
  if (s.kind == k::Kind::qsgd || s.kind == k::Kind::sign) {
    for (std::size_t i = 0; i < D; ++i) {
      if (std::isfinite(out.get(i))) continue;
      HARNESS_CHECK(false, "decode-overflow",
                    "%s message (value dtype code %u) decoded to %g at coordinate %zu in %s",
                    s.kind == k::Kind::qsgd ? "QSGD" : "sign", static_cast<unsigned>(s.vcode),
                    static_cast<double>(out.get(i)), i, sizeof(T) == 4 ? "float32" : "float64");
      break;
    }
  }
}

template <typename T>
void decode(const Parsed& m, const Buffer<unsigned char>& payload, std::uint64_t psize,
            bool expect_ok) {
  const std::size_t D = static_cast<std::size_t>(m.spec.dim);
  Buffer<T> one(D), two(D);
  bool ok1 = HARNESS_TRY_ARGS(k::decompress<T>(m.spec, payload.data(), psize, one.data(), 1));
  bool ok2 = HARNESS_TRY_ARGS(k::decompress<T>(m.spec, payload.data(), psize, two.data(), 2));
  if (ok1 != expect_ok || ok2 != expect_ok) {
    fail("validate_payload says %d but decompress says %d (threads=1) / %d (threads=2)",
         expect_ok, ok1, ok2);
  }
  if (!ok1) return;
  if (std::memcmp(one.data(), two.data(), D * sizeof(T)) != 0) {
    fail("decompress differs between threads=1 and threads=2");
  }
  check_values(m.spec, one);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Parsed m;
  if (!parse_header(data, size, m)) return 0;
  std::uint64_t psize = 0;
  try {
    psize = k::payload_size(m.spec);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  if (psize != size - m.header) return 0;  // truncated or trailing bytes: rejected
  Buffer<unsigned char> payload(static_cast<std::size_t>(psize));
  std::memcpy(payload.data(), data + m.header, static_cast<std::size_t>(psize));
  const bool ok1 = HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize, 1));
  const bool ok2 = HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize, 2));
  if (ok1 != ok2) fail("validate_payload depends on the thread count");
  // A wrong size must always be rejected, whatever the contents.
  if (psize > 0 && HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize - 1, 1))) {
    fail("validate_payload accepted a payload one byte short");
  }
  if (m.spec.dim > kMaxDecodeDim) return 0;
  if (m.float64) {
    decode<double>(m, payload, psize, ok1);
  } else {
    decode<float>(m, payload, psize, ok1);
  }
  return 0;
}
