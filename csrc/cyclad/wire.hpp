// SPDX-License-Identifier: Apache-2.0
// The wire format of compressed messages (version 1): codes, header packing and parsing, exact
// payload sizes, value codecs and fixed-width bit packing. The format table and the validation
// rules are documented once, in docs/wire-format.md; this file is its implementation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cyclad's wire format is little-endian; big-endian hosts are not supported"
#endif

// Payload sizes and offsets are computed in 64-bit arithmetic and then used as std::size_t.
static_assert(sizeof(std::size_t) >= 8, "cyclad's wire code needs a 64-bit std::size_t");

// Layout, sizes and validation rules: docs/wire-format.md (the one description of the format).
// Why fixed-width bit-packed indices rather than delta / Elias-Fano codes: the size is a
// closed-form function of (D, k), so the length check happens before any decoding; packing
// and unpacking are branch-free and parallel; validation is one linear scan.

namespace cyclad::kernels {

enum class Kind : std::uint8_t {
  identity = 0,
  topk = 1,
  randk = 2,
  qsgd = 3,
  sign = 4,
  natural = 5,
  terngrad = 6
};
/// Largest kind code.
inline constexpr unsigned kMaxKind = 6;
enum class ValueCode : std::uint8_t { f16 = 1, f32 = 2, f64 = 3 };
/// Dtype of the dense vector (header byte 4): what decompress writes.
enum class DenseCode : std::uint8_t { f32 = 1, f64 = 2 };

/// Largest supported dimension: indices travel in at most 32 bits.
inline constexpr std::uint64_t kMaxDim = 0xFFFFFFFFULL;
/// Largest number of QSGD levels: level codes take at most 16 bits.
inline constexpr std::uint64_t kMaxLevels = 65535;
/// Natural compression: exponent codes 1..255 stand for 2^(emin + code - 1), code 0 for zero.
inline constexpr int kNaturalCodes = 255;
/// Bytes of the natural-compression payload before the sign bits: emin as a little-endian int16.
inline constexpr std::size_t kNaturalEminBytes = 2;

/// \brief Everything that determines a payload: the header fields plus the compress-only
/// options (`seed` of private streams, `scaled` sign).
struct WireSpec {
  Kind kind = Kind::identity;
  ValueCode vcode = ValueCode::f32;
  DenseCode dense = DenseCode::f64;  ///< dense dtype: validation checks values against it
  std::uint64_t dim = 0;
  std::uint64_t param = 0;   ///< k (top-k, rand-k) or s (QSGD); unused otherwise
  std::uint64_t bucket = 0;  ///< QSGD / TernGrad bucket size
  bool shared = false;       ///< rand-k: mask drawn from `seed` only and not sent
  std::uint64_t seed = 0;    ///< rand-k mask / QSGD, natural, TernGrad dither stream
  bool scaled = true;        ///< sign: scale by ||x||_1 / D (compress only)
};

inline unsigned bit_length(std::uint64_t v) {
  unsigned n = 0;
  while (v != 0) {
    ++n;
    v >>= 1;
  }
  return n;
}

inline unsigned index_bits(std::uint64_t dim) { return std::max(1U, bit_length(dim - 1)); }
inline unsigned level_bits(std::uint64_t s) { return bit_length(s); }
inline std::uint64_t packed_bytes(std::uint64_t count, unsigned w) { return (count * w + 7) / 8; }

inline std::size_t value_bytes(ValueCode vc) {
  switch (vc) {
    case ValueCode::f16:
      return 2;
    case ValueCode::f32:
      return 4;
    case ValueCode::f64:
      return 8;
  }
  throw std::invalid_argument("value dtype code must be 1 (float16), 2 (float32) or 3 (float64)");
}

template <typename T>
inline constexpr DenseCode dense_code_of = std::is_same<T, float>::value ? DenseCode::f32
                                                                          : DenseCode::f64;

inline const char* dense_name(DenseCode dc) { return dc == DenseCode::f32 ? "float32" : "float64"; }

/// \brief Whether `v` converts to a finite value of the dense dtype `dc`: false for NaN and
/// +-Inf, and (float32) for |v| >= 2^128 - 2^103, the rounding boundary above FLT_MAX beyond
/// which round-to-nearest gives Inf.
inline bool finite_in(DenseCode dc, double v) {
  if (dc == DenseCode::f64) return std::isfinite(v);
  return std::fabs(v) < 0x1.ffffffp127;
}

/// \brief The range of the natural-compression window start `emin` for the dense dtype `dc`:
/// the smallest power 2^emin is representable (subnormals included) and the largest,
/// 2^(emin + 254), is finite: [-149, -127] for float32, [-1074, 769] for float64.
inline int natural_emin_lo(DenseCode dc) { return dc == DenseCode::f32 ? -149 : -1074; }
inline int natural_emin_hi(DenseCode dc) {
  return (dc == DenseCode::f32 ? 127 : 1023) - (kNaturalCodes - 1);
}

/// \brief Check the header fields of `spec` (ranges of D, k, s, bucket, kind, value code,
/// dense code). Throws std::invalid_argument naming the field and its allowed range.
inline void check_spec(const WireSpec& spec) {
  const auto kind = static_cast<unsigned>(spec.kind);
  require(kind <= kMaxKind, "kind must be 0..6, got " + std::to_string(kind));
  (void)value_bytes(spec.vcode);
  require(spec.dense == DenseCode::f32 || spec.dense == DenseCode::f64,
          "dense dtype code must be 1 (float32) or 2 (float64)");
  require(spec.dim >= 1 && spec.dim <= kMaxDim,
          "D must be in [1, 2^32 - 1], got " + std::to_string(spec.dim));
  if (spec.kind == Kind::topk || spec.kind == Kind::randk) {
    require(spec.param >= 1 && spec.param <= spec.dim,
            "k must be in [1, D=" + std::to_string(spec.dim) + "], got " +
                std::to_string(spec.param));
  }
  if (spec.kind == Kind::qsgd) {
    require(spec.param >= 1 && spec.param <= kMaxLevels,
            "levels must be in [1, 65535], got " + std::to_string(spec.param));
    require(spec.bucket >= 1 && spec.bucket <= spec.dim,
            "bucket must be in [1, D=" + std::to_string(spec.dim) + "], got " +
                std::to_string(spec.bucket));
  }
  if (spec.kind == Kind::terngrad) {
    require(spec.bucket >= 1 && spec.bucket <= spec.dim,
            "bucket must be in [1, D=" + std::to_string(spec.dim) + "], got " +
                std::to_string(spec.bucket));
  }
  require(!spec.shared || spec.kind == Kind::randk, "the shared flag is only valid for rand-k");
  // Natural compression sends no values: its value dtype code is the dense dtype's, so a
  // message has one encoding.
  require(spec.kind != Kind::natural ||
              spec.vcode == (spec.dense == DenseCode::f32 ? ValueCode::f32 : ValueCode::f64),
          "natural compression sends no values: the value dtype must equal the dense dtype");
}

/// \brief Exact payload size in bytes (see the table above). Validates `spec` first; with the
/// checked ranges (k <= D < 2^32, index widths <= 32 bits, level widths <= 16 bits, values <= 8
/// bytes, ceil(D/b) <= D) the largest product is k * wi < 2^37 and every size is below 2^36, so
/// the 64-bit arithmetic is exact (tests check the extremes against exact integers).
inline std::uint64_t payload_size(const WireSpec& spec) {
  check_spec(spec);
  const std::uint64_t vb = value_bytes(spec.vcode);
  const std::uint64_t d = spec.dim;
  switch (spec.kind) {
    case Kind::identity:
      return d * vb;
    case Kind::topk:
      return packed_bytes(spec.param, index_bits(d)) + spec.param * vb;
    case Kind::randk:
      return (spec.shared ? 0 : packed_bytes(spec.param, index_bits(d))) + spec.param * vb;
    case Kind::qsgd: {
      const std::uint64_t nb = (d + spec.bucket - 1) / spec.bucket;
      return nb * vb + packed_bytes(d, 1) + packed_bytes(d, level_bits(spec.param));
    }
    case Kind::sign:
      return vb + packed_bytes(d, 1);
    case Kind::natural:
      return kNaturalEminBytes + packed_bytes(d, 1) + d;
    case Kind::terngrad:
      return (d + spec.bucket - 1) / spec.bucket * vb + packed_bytes(d, 2);
  }
  throw std::invalid_argument("unknown kind");
}

inline const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::identity:
      return "identity";
    case Kind::topk:
      return "topk";
    case Kind::randk:
      return "randk";
    case Kind::qsgd:
      return "qsgd";
    case Kind::sign:
      return "sign";
    case Kind::natural:
      return "natural";
    case Kind::terngrad:
      return "terngrad";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// header (docs/wire-format.md, "Header")
// ---------------------------------------------------------------------------------------------

inline constexpr unsigned char kMagic[2] = {'C', 'Z'};
inline constexpr std::uint8_t kVersion = 1;
/// Header byte 6, bit 0: a shared rand-k mask (regenerated from the seed, no indices sent).
inline constexpr std::uint8_t kFlagShared = 1;
/// The fields every header has (bytes 0..15); the largest header is kMaxHeaderBytes.
inline constexpr std::size_t kBaseHeaderBytes = 16;
inline constexpr std::size_t kMaxHeaderBytes = 32;

/// \brief Header size in bytes: 16 (identity, sign, natural), 24 (top-k, private rand-k,
/// TernGrad) or 32 (shared rand-k, QSGD).
inline std::size_t header_size(Kind kind, bool shared) {
  switch (kind) {
    case Kind::identity:
    case Kind::sign:
    case Kind::natural:
      return 16;
    case Kind::topk:
    case Kind::terngrad:
      return 24;
    case Kind::randk:
      return shared ? 32 : 24;
    case Kind::qsgd:
      return 32;
  }
  throw std::invalid_argument("unknown kind");
}

namespace detail {
inline void put_u64(unsigned char* dst, std::uint64_t v) { std::memcpy(dst, &v, 8); }
inline std::uint64_t get_u64(const unsigned char* src) {
  std::uint64_t v;
  std::memcpy(&v, src, 8);
  return v;
}
}  // namespace detail

/// \brief Write the header of `spec` to `out` (room for kMaxHeaderBytes) and return its size.
/// Checks `spec` first (check_spec), so only a header that parse_header accepts is written.
inline std::size_t pack_header(const WireSpec& spec, unsigned char* out) {
  check_spec(spec);
  const std::size_t size = header_size(spec.kind, spec.shared);
  out[0] = kMagic[0];
  out[1] = kMagic[1];
  out[2] = kVersion;
  out[3] = static_cast<unsigned char>(spec.kind);
  out[4] = static_cast<unsigned char>(spec.dense);
  out[5] = static_cast<unsigned char>(spec.vcode);
  out[6] = spec.shared ? kFlagShared : 0;
  out[7] = 0;
  detail::put_u64(out + 8, spec.dim);
  if (spec.kind == Kind::topk || spec.kind == Kind::randk) {
    detail::put_u64(out + 16, spec.param);
    if (spec.shared) detail::put_u64(out + 24, spec.seed);
  } else if (spec.kind == Kind::qsgd) {
    detail::put_u64(out + 16, spec.param);
    detail::put_u64(out + 24, spec.bucket);
  } else if (spec.kind == Kind::terngrad) {
    detail::put_u64(out + 16, spec.bucket);
  }
  return size;
}

/// What the receiver expects (0 = no constraint): the exact D, an upper bound on D, and the
/// dense dtype code. The receiver, not the sender, decides how much decoding allocates.
struct ReceiveLimits {
  std::uint64_t dim = 0;
  std::uint64_t max_dim = 0;
  std::uint8_t dense = 0;
};

/// A parsed header: the fields, the header size, and the payload size they imply.
struct Header {
  WireSpec spec;
  std::size_t header_bytes = 0;
  std::uint64_t payload_bytes = 0;
};

/// \brief Parse and check the header of the message `data[0, len)`, in the order of
/// docs/wire-format.md ("Validation"): magic, version, codes, flags, D, the receiver's limits,
/// the header length, k / s / bucket, and the exact total length (no truncation, no trailing
/// bytes). Reads only inside [data, data + len); allocates nothing proportional to D. The
/// payload itself is checked by validate_payload (codec.hpp). Throws std::invalid_argument.
inline Header parse_header(const unsigned char* data, std::uint64_t len, const ReceiveLimits& lim) {
  const std::string bad = "malformed message: ";
  require(len >= kBaseHeaderBytes,
          bad + std::to_string(len) + " bytes is shorter than the 16-byte header");
  if (data[0] != kMagic[0] || data[1] != kMagic[1]) {
    static const char hex[] = "0123456789abcdef";
    std::string got = "0x";
    for (int i = 0; i < 2; ++i) {
      got += hex[data[i] >> 4];
      got += hex[data[i] & 15];
    }
    throw std::invalid_argument(bad + "bad magic " + got + " (expected \"CZ\")");
  }
  require(data[2] == kVersion, bad + "unsupported version " + std::to_string(data[2]) +
                                   " (this reader: " + std::to_string(kVersion) + ")");
  const unsigned kcode = data[3], dcode = data[4], vcode = data[5], flags = data[6];
  require(kcode <= kMaxKind,
          bad + "unknown kind code " + std::to_string(kcode) + " (allowed 0..6)");
  require(dcode == 1 || dcode == 2,
          bad + "unknown dtype code " + std::to_string(dcode) + " (allowed 1, 2)");
  require(vcode >= 1 && vcode <= 3,
          bad + "unknown value dtype code " + std::to_string(vcode) + " (allowed 1..3)");
  Header h;
  WireSpec& spec = h.spec;
  spec.kind = static_cast<Kind>(kcode);
  spec.dense = static_cast<DenseCode>(dcode);
  spec.vcode = static_cast<ValueCode>(vcode);
  spec.shared = (flags & kFlagShared) != 0;
  if ((flags & ~unsigned{kFlagShared}) != 0 || (spec.shared && spec.kind != Kind::randk) ||
      data[7] != 0) {
    static const char hex[] = "0123456789abcdef";
    std::string f = "0x";
    if (flags >= 16) f += hex[flags >> 4];
    f += hex[flags & 15];
    throw std::invalid_argument(bad + "invalid flags " + f + " / reserved " +
                                std::to_string(data[7]) + " for " + kind_name(spec.kind));
  }
  spec.dim = detail::get_u64(data + 8);
  require(spec.dim >= 1 && spec.dim <= kMaxDim,
          bad + "D must be in [1, 2^32 - 1], got " + std::to_string(spec.dim));
  if (lim.dim != 0 && spec.dim != lim.dim) {
    throw std::invalid_argument("message has D=" + std::to_string(spec.dim) +
                                ", expected dim=" + std::to_string(lim.dim));
  }
  if (lim.max_dim != 0 && spec.dim > lim.max_dim) {
    throw std::invalid_argument("message has D=" + std::to_string(spec.dim) + ", above max_dim=" +
                                std::to_string(lim.max_dim) +
                                "; pass the expected dimension as dim= (or a larger max_dim=) "
                                "to accept it");
  }
  if (lim.dense != 0 && dcode != lim.dense) {
    throw std::invalid_argument(std::string("message has dtype ") + dense_name(spec.dense) +
                                ", expected dtype=" +
                                dense_name(static_cast<DenseCode>(lim.dense)));
  }
  h.header_bytes = header_size(spec.kind, spec.shared);
  require(len >= h.header_bytes, bad + std::to_string(len) + " bytes is shorter than the " +
                                     std::to_string(h.header_bytes) + "-byte header");
  if (spec.kind == Kind::topk || spec.kind == Kind::randk) {
    spec.param = detail::get_u64(data + 16);
    if (spec.shared) spec.seed = detail::get_u64(data + 24);
  } else if (spec.kind == Kind::qsgd) {
    spec.param = detail::get_u64(data + 16);
    spec.bucket = detail::get_u64(data + 24);
  } else if (spec.kind == Kind::terngrad) {
    spec.bucket = detail::get_u64(data + 16);
  }
  try {
    h.payload_bytes = payload_size(spec);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(bad + e.what());
  }
  const std::uint64_t want = h.header_bytes + h.payload_bytes;
  if (len != want) {
    throw std::invalid_argument(std::string("malformed message (") +
                                (len < want ? "truncated" : "trailing bytes") + "): " +
                                std::to_string(len) + " bytes, the header implies " +
                                std::to_string(h.header_bytes) + " + " +
                                std::to_string(h.payload_bytes));
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// values: float16 / float32 / float64 on the wire
// ---------------------------------------------------------------------------------------------

/// \brief IEEE binary16 bits of `v`, rounded to nearest even. |v| beyond the float16 range
/// gives +-Inf (callers reject finite overflow first); NaN gives a quiet NaN of the same sign.
inline std::uint16_t f16_from_double(double v) {
  const std::uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  if (std::isnan(v)) return static_cast<std::uint16_t>(sign | 0x7E00);
  const double a = std::fabs(v);
  if (a >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7C00);
  if (a < 0x1.0p-14) {
    // Subnormal: a multiple of 2^-24. A carry into 1024 is exactly the smallest normal.
    const auto q = static_cast<std::uint16_t>(std::nearbyint(a * 0x1.0p24));
    return static_cast<std::uint16_t>(sign | q);
  }
  int e = std::ilogb(a);
  auto q = static_cast<std::uint32_t>(std::nearbyint(std::ldexp(a, 10 - e)));
  if (q == 2048) {
    q = 1024;
    ++e;
  }
  return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(e + 15) << 10 | (q - 1024));
}

inline double f16_to_double(std::uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const unsigned e = (h >> 10) & 0x1F;
  const unsigned m = h & 0x3FF;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  if (e == 31) return m == 0 ? sign * std::numeric_limits<double>::infinity()
                             : std::copysign(std::numeric_limits<double>::quiet_NaN(), sign);
  return sign * std::ldexp(static_cast<double>(m + 1024), static_cast<int>(e) - 25);
}

inline double value_max(ValueCode vc) {
  switch (vc) {
    case ValueCode::f16:
      return 65504.0;
    case ValueCode::f32:
      return static_cast<double>(std::numeric_limits<float>::max());
    case ValueCode::f64:
      break;
  }
  return std::numeric_limits<double>::max();
}

inline const char* value_name(ValueCode vc) {
  return vc == ValueCode::f16 ? "float16" : vc == ValueCode::f32 ? "float32" : "float64";
}

namespace detail {

template <typename T>
void throw_overflow(T v, ValueCode vc) {
  throw std::invalid_argument("value " + std::to_string(static_cast<double>(v)) +
                              " is outside the range of value_dtype=" + value_name(vc) +
                              "; use a wider value_dtype");
}

/// Store `v` at `dst` in `vc`. Finite values beyond the range of `vc` throw: narrowing must not
/// silently turn a finite value into Inf. NaN and Inf are stored as such.
template <typename T>
inline void store_value(T v, ValueCode vc, unsigned char* dst) {
  if (vc == ValueCode::f64) {
    const auto d = static_cast<double>(v);
    std::memcpy(dst, &d, 8);
    return;
  }
  if (std::isfinite(v) && static_cast<double>(std::fabs(v)) > value_max(vc)) throw_overflow(v, vc);
  if (vc == ValueCode::f32) {
    const auto f = static_cast<float>(v);
    std::memcpy(dst, &f, 4);
  } else {
    const std::uint16_t h = f16_from_double(static_cast<double>(v));
    std::memcpy(dst, &h, 2);
  }
}

inline double load_value(const unsigned char* src, ValueCode vc) {
  if (vc == ValueCode::f64) {
    double d;
    std::memcpy(&d, src, 8);
    return d;
  }
  if (vc == ValueCode::f32) {
    float f;
    std::memcpy(&f, src, 4);
    return static_cast<double>(f);
  }
  std::uint16_t h;
  std::memcpy(&h, src, 2);
  return f16_to_double(h);
}

/// Store a non-negative finite `v` rounded *up* to the next representable value of `vc`, and
/// return the stored value. QSGD quantizes with the stored norm, so |x_i| <= norm still holds
/// after narrowing and the levels stay in [0, s].
inline double store_value_up(double v, ValueCode vc, unsigned char* dst) {
  if (v > value_max(vc)) throw_overflow(v, vc);
  if (vc == ValueCode::f64) {
    std::memcpy(dst, &v, 8);
    return v;
  }
  if (vc == ValueCode::f32) {
    auto f = static_cast<float>(v);
    if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
    if (!std::isfinite(f)) throw_overflow(v, vc);
    std::memcpy(dst, &f, 4);
    return static_cast<double>(f);
  }
  std::uint16_t h = f16_from_double(v);
  if (f16_to_double(h) < v) ++h;  // positive finite halves are ordered like their bits
  if (h >= 0x7C00) throw_overflow(v, vc);
  std::memcpy(dst, &h, 2);
  return f16_to_double(h);
}

/// Values per block of the parallel scans below (fixed, so results do not depend on threads).
inline constexpr std::size_t kScanBlock = std::size_t{1} << 16;

/// The first j in [0, n) with bad(j), or n. Blocks are scanned in parallel; the answer does not
/// depend on the thread count.
template <typename Bad>
std::size_t find_first(std::size_t n, int threads, const Bad& bad) {
  const std::size_t nblocks = (n + kScanBlock - 1) / kScanBlock;
  std::vector<std::size_t> first(nblocks, n);
  parallel_for(nblocks, threads, 4, [&](std::size_t b0, std::size_t b1) {
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kScanBlock, hi = std::min(n, lo + kScanBlock);
      for (std::size_t j = lo; j < hi; ++j) {
        if (bad(j)) {
          first[b] = j;
          break;
        }
      }
    }
  });
  for (std::size_t f : first) {
    if (f < n) return f;
  }
  return n;
}

/// Whether a finite value of `vc` times `scale` can leave the finite range of the dense dtype
/// (then the values must be scanned; otherwise no value can overflow).
inline bool may_overflow(ValueCode vc, double scale, DenseCode dc) {
  return !finite_in(dc, value_max(vc) * scale);
}

/// Throw std::invalid_argument (`what` + details) if a finite one of the n values of `vc` at
/// `vals` gives a non-finite dense value once multiplied by `scale` (1 for top-k and identity,
/// D/k for rand-k) and converted to `dc`: such a value would decode to +-Inf. NaN and Inf
/// values are data and pass.
inline void check_dense_range(const unsigned char* vals, std::size_t n, ValueCode vc, double scale,
                              DenseCode dc, int threads, const std::string& what) {
  if (!may_overflow(vc, scale, dc)) return;
  const std::size_t vb = value_bytes(vc);
  const std::size_t j = find_first(n, threads, [&](std::size_t i) {
    const double v = load_value(vals + i * vb, vc);
    return std::isfinite(v) && !finite_in(dc, v * scale);
  });
  if (j == n) return;
  const double v = load_value(vals + j * vb, vc);
  std::string msg = what + ": value " + std::to_string(v) + " (entry " + std::to_string(j) + ")";
  if (scale != 1.0) msg += " times D/k = " + std::to_string(scale);
  throw std::invalid_argument(msg + " is outside the finite range of the dense dtype " +
                              dense_name(dc));
}


// ---------------------------------------------------------------------------------------------
// fixed-width bit packing (LSB-first, w in [1, 32])
// ---------------------------------------------------------------------------------------------

/// Tail of pack_block / unpack_block: any w in [1, 32], a 64-bit accumulator, exact bytes.
inline void pack_tail(const std::uint32_t* v, std::size_t n, unsigned w, unsigned char* out) {
  std::uint64_t acc = 0;
  unsigned nb = 0;
  for (std::size_t j = 0; j < n; ++j) {
    acc |= static_cast<std::uint64_t>(v[j]) << nb;
    nb += w;
    if (nb >= 32) {
      const auto lo = static_cast<std::uint32_t>(acc);
      std::memcpy(out, &lo, 4);
      out += 4;
      acc >>= 32;
      nb -= 32;
    }
  }
  while (nb > 0) {
    *out++ = static_cast<unsigned char>(acc);
    acc >>= 8;
    nb = nb >= 8 ? nb - 8 : 0;
  }
}

inline void unpack_tail(const unsigned char* in, std::size_t n, unsigned w, std::uint32_t* v) {
  // Byte-wise refill: reads exactly packed_bytes(n, w) bytes, never past the end.
  const std::uint64_t mask = (std::uint64_t{1} << w) - 1;
  std::uint64_t acc = 0;
  unsigned nb = 0;
  for (std::size_t j = 0; j < n; ++j) {
    while (nb < w) {
      acc |= static_cast<std::uint64_t>(*in++) << nb;
      nb += 8;
    }
    v[j] = static_cast<std::uint32_t>(acc & mask);
    acc >>= w;
    nb -= w;
  }
}

/// Groups of 8 values of W <= 8 bits fill exactly W bytes of one 64-bit word. 8-byte stores
/// and loads are used while the block has room (a store's spill is overwritten by the next
/// group); the last groups go byte by byte, so nothing outside the block is touched.
template <Isa I, unsigned W>
CYCLAD_KERNEL std::size_t pack_groups(const std::uint32_t* CYCLAD_RESTRICT v, std::size_t n,
                                            unsigned char* CYCLAD_RESTRICT out) {
  const std::size_t groups = n / 8;
  const std::size_t total = (n * W + 7) / 8;
  std::size_t g = 0;
  for (; g < groups && g * W + 8 <= total; ++g) {
    std::uint64_t acc = 0;
    for (unsigned t = 0; t < 8; ++t) acc |= static_cast<std::uint64_t>(v[g * 8 + t]) << (t * W);
    std::memcpy(out + g * W, &acc, 8);
  }
  for (; g < groups; ++g) {
    std::uint64_t acc = 0;
    for (unsigned t = 0; t < 8; ++t) acc |= static_cast<std::uint64_t>(v[g * 8 + t]) << (t * W);
    for (unsigned t = 0; t < W; ++t) out[g * W + t] = static_cast<unsigned char>(acc >> (8 * t));
  }
  return groups * 8;
}

template <Isa I, unsigned W>
CYCLAD_KERNEL std::size_t unpack_groups(const unsigned char* CYCLAD_RESTRICT in,
                                              std::size_t n, std::uint32_t* CYCLAD_RESTRICT v) {
  constexpr std::uint64_t mask = (std::uint64_t{1} << W) - 1;
  const std::size_t groups = n / 8;
  const std::size_t total = (n * W + 7) / 8;
  std::size_t g = 0;
  for (; g < groups && g * W + 8 <= total; ++g) {
    std::uint64_t acc;
    std::memcpy(&acc, in + g * W, 8);
    for (unsigned t = 0; t < 8; ++t) v[g * 8 + t] = static_cast<std::uint32_t>((acc >> (t * W)) & mask);
  }
  for (; g < groups; ++g) {
    std::uint64_t acc = 0;
    for (unsigned t = 0; t < W; ++t) acc |= static_cast<std::uint64_t>(in[g * W + t]) << (8 * t);
    for (unsigned t = 0; t < 8; ++t) v[g * 8 + t] = static_cast<std::uint32_t>((acc >> (t * W)) & mask);
  }
  return groups * 8;
}

/// Pack `n` values of `w` bits (w in [1, 32]) from `v` into exactly packed_bytes(n, w) bytes.
inline void pack_block(const std::uint32_t* v, std::size_t n, unsigned w, unsigned char* out) {
  std::size_t j = 0;
  dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
  constexpr Isa I = decltype(isa)::value;
  switch (w) {
    case 1: j = pack_groups<I, 1>(v, n, out); break;
    case 2: j = pack_groups<I, 2>(v, n, out); break;
    case 3: j = pack_groups<I, 3>(v, n, out); break;
    case 4: j = pack_groups<I, 4>(v, n, out); break;
    case 5: j = pack_groups<I, 5>(v, n, out); break;
    case 6: j = pack_groups<I, 6>(v, n, out); break;
    case 7: j = pack_groups<I, 7>(v, n, out); break;
    case 8: j = pack_groups<I, 8>(v, n, out); break;
    default: break;
  }
  });
  pack_tail(v + j, n - j, w, out + j / 8 * w);
}

/// Unpack `n` values of `w` bits from exactly packed_bytes(n, w) bytes at `in`.
inline void unpack_block(const unsigned char* in, std::size_t n, unsigned w, std::uint32_t* v) {
  std::size_t j = 0;
  dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
  constexpr Isa I = decltype(isa)::value;
  switch (w) {
    case 1: j = unpack_groups<I, 1>(in, n, v); break;
    case 2: j = unpack_groups<I, 2>(in, n, v); break;
    case 3: j = unpack_groups<I, 3>(in, n, v); break;
    case 4: j = unpack_groups<I, 4>(in, n, v); break;
    case 5: j = unpack_groups<I, 5>(in, n, v); break;
    case 6: j = unpack_groups<I, 6>(in, n, v); break;
    case 7: j = unpack_groups<I, 7>(in, n, v); break;
    case 8: j = unpack_groups<I, 8>(in, n, v); break;
    default: break;
  }
  });
  unpack_tail(in + j / 8 * w, n - j, w, v + j);
}

/// Whether the padding bits after `n` values of `w` bits are zero (canonical encoding).
inline bool padding_is_zero(const unsigned char* section, std::uint64_t n, unsigned w) {
  const std::uint64_t bits = n * w;
  if (bits % 8 == 0) return true;
  const unsigned char last = section[bits / 8];
  return (last >> (bits % 8)) == 0;
}

/// Values per packing block: a multiple of 8, so every block starts on a byte boundary.
inline constexpr std::size_t kPackBlock = 4096;

/// Parallel pack of `n` values produced by `get(lo, hi, buf)` (fills buf[0 .. hi-lo)).
template <typename Get>
void pack_parallel(std::size_t n, unsigned w, unsigned char* out, int threads, Get&& get) {
  const std::size_t nblocks = (n + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, 16, [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> buf(kPackBlock);
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t lo = b * kPackBlock, hi = std::min(n, lo + kPackBlock);
      get(lo, hi, buf.data());
      pack_block(buf.data(), hi - lo, w, out + lo / 8 * w);
    }
  });
}

/// IEEE sign bit of v (1 for negative, -0.0 and negative NaN); vectorises where std::signbit
/// on double does not.
template <typename T>
inline std::uint32_t sign_bit(T v) {
  typename std::conditional_t<std::is_same<T, float>::value, std::uint32_t, std::uint64_t> u;
  std::memcpy(&u, &v, sizeof(T));
  return static_cast<std::uint32_t>(u >> (8 * sizeof(T) - 1));
}

}  // namespace detail

}  // namespace cyclad::kernels
