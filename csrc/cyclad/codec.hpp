// SPDX-License-Identifier: Apache-2.0
// Compressed messages end to end: compress a vector into a payload, validate a received payload
// (once), and decode it. The per-kind pieces live in select.hpp (top-k, rand-k), quantize.hpp
// (QSGD, sign, natural compression, TernGrad) and wire.hpp (header, sizes, value codecs, bit packing); the format and its
// validation rules are documented in docs/wire-format.md.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/quantize.hpp"
#include "cyclad/select.hpp"
#include "cyclad/wire.hpp"

namespace cyclad::kernels {

namespace detail {

template <typename T, typename Get>
void encode_values_parallel(std::size_t n, ValueCode vc, unsigned char* out, int threads,
                            const Get& get) {
  const std::size_t vb = value_bytes(vc);
  parallel_for(n, threads, grain_for(sizeof(T) + vb), [&](std::size_t lo, std::size_t hi) {
    if (vc == ValueCode::f32 && std::is_same<T, float>::value) {
      for (std::size_t j = lo; j < hi; ++j) {
        const auto f = static_cast<float>(get(j));
        std::memcpy(out + j * 4, &f, 4);
      }
      return;
    }
    for (std::size_t j = lo; j < hi; ++j) store_value(get(j), vc, out + j * vb);
  });
}

template <typename T>
void sparse_compress(const WireSpec& spec, const T* x, const std::uint32_t* idx,
                     unsigned char* payload, int threads) {
  const std::size_t k = static_cast<std::size_t>(spec.param);
  unsigned char* vals = payload;
  if (!(spec.kind == Kind::randk && spec.shared)) {
    const unsigned w = index_bits(spec.dim);
    pack_parallel(k, w, payload, threads, [&](std::size_t lo, std::size_t hi, std::uint32_t* buf) {
      std::copy(idx + lo, idx + hi, buf);
    });
    vals += packed_bytes(k, w);
  }
  encode_values_parallel<T>(k, spec.vcode, vals, threads, [&](std::size_t j) { return x[idx[j]]; });
  if (spec.kind == Kind::randk) {
    // The receiver multiplies by D/k; a finite x_i whose scaled value overflows T would
    // decode to +-Inf (and such a message is rejected as malformed), so refuse to send it.
    const double scale = static_cast<double>(spec.dim) / static_cast<double>(k);
    check_dense_range(vals, k, spec.vcode, scale, dense_code_of<T>, threads,
                      "rand-k cannot send a value whose D/k-scaled value overflows");
  }
}

/// Decode the k packed indices of a sparse payload, checking range, strict increase and zero
/// padding. Throws std::invalid_argument on the first violation.
inline void read_indices(const unsigned char* sec, std::uint64_t k, std::uint64_t D,
                         std::uint32_t* idx) {
  const unsigned w = index_bits(D);
  require(padding_is_zero(sec, k, w), "malformed message: nonzero padding bits after the indices");
  unpack_block(sec, static_cast<std::size_t>(k), w, idx);
  std::uint64_t prev = 0;
  for (std::uint64_t j = 0; j < k; ++j) {
    const std::uint64_t i = idx[j];
    if (!(i < D)) {
      throw std::invalid_argument("malformed message: index " + std::to_string(i) + " out of range [0, " +
                       std::to_string(D) + ")");
    }
    if (!(j == 0 || i > prev)) {
      throw std::invalid_argument("malformed message: indices must be strictly increasing (index " +
                                    std::to_string(i) + " after " + std::to_string(prev) + ")");
    }
    prev = i;
  }
}

template <typename T>
void fill_zero(T* out, std::size_t D, int threads) {
  parallel_for(D, threads, grain_for(sizeof(T)), [&](std::size_t lo, std::size_t hi) {
    std::fill(out + lo, out + hi, T(0));
  });
}

template <typename T>
void decode_values_parallel(const unsigned char* in, std::size_t n, ValueCode vc, T* out,
                            int threads) {
  parallel_for(n, threads, grain_for(sizeof(T)), [&](std::size_t lo, std::size_t hi) {
    if (vc == ValueCode::f32 && std::is_same<T, float>::value) {
      std::memcpy(out + lo, in + lo * 4, (hi - lo) * 4);
      return;
    }
    const std::size_t vb = value_bytes(vc);
    for (std::size_t j = lo; j < hi; ++j) out[j] = static_cast<T>(load_value(in + j * vb, vc));
  });
}

/// The k packed indices of a sparse payload without the checks of read_indices, for a payload
/// validated before. Memory safety does not depend on that: an index >= D (possible only in a
/// payload that was never validated) throws instead of being used.
inline void unpack_indices(const unsigned char* sec, std::size_t k, std::size_t D,
                           std::uint32_t* idx) {
  unpack_block(sec, k, index_bits(D), idx);
  std::uint32_t mx = 0;
  dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA { mx = max_u32<decltype(isa)::value>(idx, k); });
  if (mx >= D) {
    throw std::invalid_argument("malformed message: index " + std::to_string(mx) +
                                " out of range [0, " + std::to_string(D) +
                                ") in an unvalidated payload");
  }
}

/// Validate a payload whose size matches its header (payload_size): the per-kind rules of
/// docs/wire-format.md. Allocates at most k indices (sparse kinds) or one 4096-entry buffer per
/// thread (QSGD); never O(D) for a sparse kind.
inline void validate_body(const WireSpec& spec, const unsigned char* p, int threads) {
  switch (spec.kind) {
    case Kind::identity:
      check_dense_range(p, static_cast<std::size_t>(spec.dim), spec.vcode, 1.0, spec.dense,
                        threads, "malformed message");
      return;
    case Kind::topk:
    case Kind::randk: {
      const auto k = static_cast<std::size_t>(spec.param);
      const unsigned char* vals = p;
      if (!(spec.kind == Kind::randk && spec.shared)) {
        std::vector<std::uint32_t> idx(k);
        read_indices(p, spec.param, spec.dim, idx.data());
        vals += packed_bytes(spec.param, index_bits(spec.dim));
      }
      const double scale = spec.kind == Kind::randk
                               ? static_cast<double>(spec.dim) / static_cast<double>(spec.param)
                               : 1.0;
      check_dense_range(vals, k, spec.vcode, scale, spec.dense, threads, "malformed message");
      return;
    }
    case Kind::qsgd:
      validate_qsgd(spec, p, threads);
      return;
    case Kind::sign:
      validate_sign(spec, p);
      return;
    case Kind::natural:
      validate_natural(spec, p);
      return;
    case Kind::terngrad:
      validate_terngrad(spec, p, threads);
      return;
  }
}

}  // namespace detail

/// \brief Compress x into the payload described by `spec` (the header is written separately,
/// by pack_header). \param[in] x (D,) with D = spec.dim. \param[out] payload exactly
/// payload_size(spec) bytes (`size` is checked). \param threads 0 = all cores.
///
/// Non-finite inputs: identity, top-k and rand-k carry raw values (NaN/Inf round-trip; a NaN
/// ranks above +Inf in top-k); QSGD and scaled sign throw std::invalid_argument when a norm or
/// ||x||_1 is not finite, natural compression and TernGrad when any value is not finite (and
/// natural compression when max |x| could round up past the dtype's range). Narrowing (float64 data to float32/float16 values, float32 to
/// float16) rounds to nearest and throws if a finite value overflows the value dtype.
/// Bit-identical for any thread count.
template <typename T>
void compress(const WireSpec& spec, const T* x, unsigned char* payload, std::uint64_t size,
              int threads) {
  require(payload_size(spec) == size, "payload buffer has the wrong size");
  require(spec.dense == dense_code_of<T>, "spec.dense does not match the input dtype");
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  switch (spec.kind) {
    case Kind::identity:
      detail::encode_values_parallel<T>(D, spec.vcode, payload, threads,
                                        [&](std::size_t j) { return x[j]; });
      return;
    case Kind::topk:
    case Kind::randk: {
      std::vector<std::uint32_t> idx(static_cast<std::size_t>(spec.param));
      if (spec.kind == Kind::topk) {
        topk_select(x, D, idx.size(), idx.data(), threads);
      } else {
        randk_select(spec.seed, D, idx.size(), idx.data());
      }
      detail::sparse_compress(spec, x, idx.data(), payload, threads);
      return;
    }
    case Kind::qsgd:
      detail::qsgd_compress(spec, x, payload, threads);
      return;
    case Kind::sign:
      detail::sign_compress(spec, x, payload, threads);
      return;
    case Kind::natural:
      detail::natural_compress(spec, x, payload, threads);
      return;
    case Kind::terngrad:
      detail::terngrad_compress(spec, x, payload, threads);
      return;
  }
}

/// \brief Validate a payload against its header fields `spec` (docs/wire-format.md,
/// "Validation"): exact size, index range and strict increase, QSGD level codes <= s, finite
/// non-negative QSGD norms and sign scale, zero padding bits, and the range of every decoded
/// value in the dense dtype `spec.dense`. Raw top-k / rand-k / identity values may be NaN or
/// +-Inf (they are data), but a finite raw value must stay finite in the dense dtype (times D/k
/// for rand-k), and QSGD norms and the sign scale must decode to finite values: compress never
/// produces anything else, so such a message is malformed.
/// Throws std::invalid_argument ("malformed message: ...") on the first violation; reads only
/// inside [payload, payload + size). Allocates at most k indices (k <= size / value bytes,
/// since size is checked first) and one word per 65536 values; never O(D) for a sparse kind.
inline void validate_payload(const WireSpec& spec, const unsigned char* p, std::uint64_t size,
                             int threads) {
  const std::uint64_t want = payload_size(spec);
  require(size == want, "malformed message: payload is " + std::to_string(size) +
                            " bytes, the header implies " + std::to_string(want));
  detail::validate_body(spec, p, threads);
}

/// \brief Parse and fully validate the whole message `data[0, len)`: parse_header (header,
/// receiver limits, exact length), then the payload rules of validate_payload, each once. The
/// payload starts at `data + header_bytes`. Throws std::invalid_argument.
inline Header parse_message(const unsigned char* data, std::uint64_t len, const ReceiveLimits& lim,
                            int threads) {
  const Header h = parse_header(data, len, lim);
  detail::validate_body(h.spec, data + h.header_bytes, threads);
  return h;
}

/// \brief Decode a payload that was validated before (parse_message or validate_payload) into
/// the dense (D,) vector `out` (D = spec.dim; T must match spec.dense), with no second
/// validation pass. Top-k: x_hat[i] = value at kept i, 0 elsewhere. Rand-k: T(value * D/k) at
/// kept i (the mask of a shared message is regenerated from spec.seed, with a D/8-byte bitmap).
/// QSGD: sign * T(level * (norm / s)). Sign: +-scale (sign bit 1 = negative). Natural:
/// +-2^(emin + code - 1) (+-0 for code 0). TernGrad: 0 or +-T(s_j). Identity: the values. Memory-safe for any payload of payload_size(spec) bytes (`size` is checked, and an
/// index >= D throws); the other rules are not re-checked. Bit-identical for any thread count.
/// Besides `out` it allocates O(k + D/8) bytes (sparse kinds) or one 4096-entry buffer per
/// thread (QSGD, sign).
template <typename T>
void decode(const WireSpec& spec, const unsigned char* p, std::uint64_t size, T* out,
            int threads) {
  if (spec.dense != dense_code_of<T>) {
    throw std::invalid_argument("spec.dense does not match the output dtype");
  }
  if (size != payload_size(spec)) {
    throw std::invalid_argument("payload size does not match the header fields");
  }
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const ValueCode vc = spec.vcode;
  const std::size_t vb = value_bytes(vc);
  switch (spec.kind) {
    case Kind::identity:
      detail::decode_values_parallel(p, D, vc, out, threads);
      return;
    case Kind::topk:
    case Kind::randk: {
      const std::size_t k = static_cast<std::size_t>(spec.param);
      std::vector<std::uint32_t> idx(k);
      const unsigned char* vals = p;
      if (spec.kind == Kind::randk && spec.shared) {
        randk_select(spec.seed, D, k, idx.data());
      } else {
        detail::unpack_indices(p, k, D, idx.data());
        vals += packed_bytes(k, index_bits(D));
      }
      detail::fill_zero(out, D, threads);
      const double scale =
          spec.kind == Kind::randk ? static_cast<double>(D) / static_cast<double>(k) : 1.0;
      for (std::size_t j = 0; j < k; ++j) {
        const double v = detail::load_value(vals + j * vb, vc);
        out[idx[j]] = static_cast<T>(scale == 1.0 ? v : v * scale);
      }
      return;
    }
    case Kind::qsgd:
      detail::qsgd_decode(spec, p, out, threads);
      return;
    case Kind::sign:
      detail::sign_decode(spec, p, out, threads);
      return;
    case Kind::natural:
      detail::natural_decode(spec, p, out, threads);
      return;
    case Kind::terngrad:
      detail::terngrad_decode(spec, p, out, threads);
      return;
  }
}

/// \brief Validate (validate_payload) and decode (decode) an untrusted payload: any byte string
/// either decodes or throws std::invalid_argument, and a finite field never decodes to +-Inf.
template <typename T>
void decompress(const WireSpec& spec, const unsigned char* p, std::uint64_t size, T* out,
                int threads) {
  require(spec.dense == dense_code_of<T>, "spec.dense does not match the output dtype");
  validate_payload(spec, p, size, threads);
  decode<T>(spec, p, size, out, threads);
}

}  // namespace cyclad::kernels
