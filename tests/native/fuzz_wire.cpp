// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the wire decoder of csrc/cyclad/ (parse_header / parse_message of wire.hpp and
// codec.hpp, validate_payload, decode, decompress) on arbitrary message bytes. The input is a
// whole message, copied into an exact-size heap buffer and parsed by the same parser that
// cyclad.compression.Message.from_bytes calls; the payload is then copied into its own
// exact-size buffer and handed to the kernels.
//
// Contract checked (DESIGN.md section 4): every byte string either decodes or throws
// std::invalid_argument; no out-of-bounds read or write (ASan); no undefined behaviour (UBSan);
// parse_message, validate_payload and decompress agree; decode of a validated payload equals
// decompress; an accepted header re-packs to the same bytes (one encoding per message); the
// result does not depend on the thread count; a decoded vector has the shape the header gives
// and the values the kind allows.
#include "harness.hpp"

namespace {

using harness::Buffer;
using harness::fail;
namespace k = cyclad::kernels;

/// Largest D the target decompresses (the output is D elements). Messages with a larger D
/// that validate are counted but not decoded: a 30-byte top-k message can claim D = 2^32 - 1,
/// and the kernels allocate nothing themselves (the caller allocates D elements).
constexpr std::uint64_t kMaxDecodeDim = std::uint64_t{1} << 20;

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
  // Natural compression decodes to +-0 or +-2^j; TernGrad to 0 or +-(the bucket's scale).
  if (s.kind == k::Kind::natural) {
    for (std::size_t i = 0; i < D; ++i) {
      const T v = std::fabs(out.get(i));
      int e = 0;
      if (v != T(0) && std::frexp(v, &e) != T(0.5)) fail("natural message decoded to %g", static_cast<double>(v));
    }
  }
  if (s.kind == k::Kind::terngrad) {
    const std::size_t b = static_cast<std::size_t>(s.bucket);
    for (std::size_t i = 0; i < D; ++i) {
      const T v = std::fabs(out.get(i));
      if (v == T(0)) continue;
      for (std::size_t j = i - i % b; j < std::min(D, i - i % b + b); ++j) {
        const T w = std::fabs(out.get(j));
        if (w != T(0) && w != v) fail("TernGrad bucket decoded to unequal magnitudes");
      }
    }
  }
  // QSGD norms, the sign scale, TernGrad scales and the natural window are validated, so the
  // decoded vector must be finite too (in the output dtype, not only in the value dtype).
  if (s.kind == k::Kind::qsgd || s.kind == k::Kind::sign || s.kind == k::Kind::natural ||
      s.kind == k::Kind::terngrad) {
    for (std::size_t i = 0; i < D; ++i) {
      if (std::isfinite(out.get(i))) continue;
      HARNESS_CHECK(false, "decode-overflow",
                    "%s message (value dtype code %u) decoded to %g at coordinate %zu in %s",
                    k::kind_name(s.kind), static_cast<unsigned>(s.vcode),
                    static_cast<double>(out.get(i)), i, sizeof(T) == 4 ? "float32" : "float64");
      break;
    }
  }
}

template <typename T>
void decode(const k::Header& m, const Buffer<unsigned char>& payload, std::uint64_t psize,
            bool expect_ok) {
  const std::size_t D = static_cast<std::size_t>(m.spec.dim);
  Buffer<T> one(D), two(D), trusted(D);
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
  if (!HARNESS_TRY_ARGS(k::decode<T>(m.spec, payload.data(), psize, trusted.data(), 2)) ||
      std::memcmp(one.data(), trusted.data(), D * sizeof(T)) != 0) {
    fail("decode of a validated payload differs from decompress");
  }
  check_values(m.spec, one);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Buffer<unsigned char> msg(size);
  if (size > 0) std::memcpy(msg.data(), data, size);
  k::Header m;
  if (!HARNESS_TRY_ARGS(m = k::parse_header(msg.data(), size, k::ReceiveLimits{}))) return 0;
  unsigned char head[k::kMaxHeaderBytes];
  if (k::pack_header(m.spec, head) != m.header_bytes ||
      std::memcmp(head, msg.data(), m.header_bytes) != 0) {
    fail("an accepted header does not re-pack to the same bytes");
  }
  const std::uint64_t psize = m.payload_bytes;
  if (psize != size - m.header_bytes) fail("parse_header accepted a wrong total length");
  Buffer<unsigned char> payload(static_cast<std::size_t>(psize));
  std::memcpy(payload.data(), data + m.header_bytes, static_cast<std::size_t>(psize));
  const bool ok1 = HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize, 1));
  const bool ok2 = HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize, 2));
  if (ok1 != ok2) fail("validate_payload depends on the thread count");
  if (HARNESS_TRY_ARGS(k::parse_message(msg.data(), size, k::ReceiveLimits{}, 2)) != ok1) {
    fail("parse_message and validate_payload disagree");
  }
  // A wrong size must always be rejected, whatever the contents.
  if (psize > 0 && HARNESS_TRY_ARGS(k::validate_payload(m.spec, payload.data(), psize - 1, 1))) {
    fail("validate_payload accepted a payload one byte short");
  }
  if (size > 0 && HARNESS_TRY_ARGS(k::parse_header(msg.data(), size - 1, k::ReceiveLimits{}))) {
    fail("parse_header accepted a message one byte short");
  }
  if (m.spec.dim > kMaxDecodeDim) return 0;
  if (m.spec.dense == k::DenseCode::f64) {
    decode<double>(m, payload, psize, ok1);
  } else {
    decode<float>(m, payload, psize, ok1);
  }
  return 0;
}
