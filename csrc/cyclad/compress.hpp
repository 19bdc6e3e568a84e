// SPDX-License-Identifier: Apache-2.0
// Gradient compression for Com-LAD: top-k, rand-k (private or shared masks), QSGD, scaled sign
// and identity, with an exact, bit-packed wire format and fully validated decoding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/random.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cyclad's wire format is little-endian; big-endian hosts are not supported"
#endif

// Payload sizes and offsets are computed in 64-bit arithmetic and then used as std::size_t.
static_assert(sizeof(std::size_t) >= 8, "cyclad's wire code needs a 64-bit std::size_t");

// =============================================================================================
// Wire format (version 1). All multi-byte fields are little-endian.
//
// Header (written and parsed by python/cyclad/compression.py; this file owns the payload):
//
//   offset size field
//   0      2    magic "CZ"
//   2      1    version = 1
//   3      1    kind: 0 identity, 1 top-k, 2 rand-k, 3 QSGD, 4 sign
//   4      1    dtype of the dense vector: 1 float32, 2 float64
//   5      1    value dtype: 1 float16, 2 float32, 3 float64
//   6      1    flags: bit 0 = shared rand-k mask; other bits must be 0
//   7      1    reserved, must be 0
//   8      8    D (u64), 1 <= D <= 2^32 - 1
//   16     8    top-k / rand-k: k (u64), 1 <= k <= D          | QSGD: s (u64), 1 <= s <= 65535
//   24     8    shared rand-k: seed (u64)                      | QSGD: bucket (u64), 1 <= b <= D
//
// Header sizes: identity and sign 16 bytes; top-k and private rand-k 24; shared rand-k and
// QSGD 32. The payload follows; its size is a function of the header only (payload_size), so a
// message whose byte length differs from header + payload_size is rejected before anything is
// read. With value width vb in {2, 4, 8} bytes, index width wi = max(1, bit_length(D - 1)) bits
// and level width wl = bit_length(s) = ceil(log2(s + 1)) bits:
//
//   kind            payload sections, in order                                   bytes
//   identity        D values                                                     D*vb
//   top-k           k indices (wi bits each) | k values                          ceil(k*wi/8) + k*vb
//   rand-k private  k indices (wi bits each) | k raw values x[i]                 ceil(k*wi/8) + k*vb
//   rand-k shared   k raw values (mask regenerated from the header seed)         k*vb
//   QSGD            ceil(D/b) norms | D sign bits | D levels (wl bits each)       nb*vb + ceil(D/8)
//                                                                                 + ceil(D*wl/8)
//   sign            scale (1 value) | D sign bits                                vb + ceil(D/8)
//
// Bit fields are packed LSB-first: element j occupies bits [j*w, (j+1)*w) of the section read
// as a little-endian bit string; each section starts on a byte boundary and its padding bits
// are zero (checked), so every message has exactly one encoding. A sign bit is 1 for a negative
// value (the IEEE sign bit). Indices are strictly increasing (checked). Decoded values are
// range-checked against the dense dtype (header byte 4, WireSpec::dense): a finite field that
// would decode to +-Inf (QSGD norm, sign scale, raw value times D/k) is malformed.
//
// The exact length check bounds k by the byte length (k * vb <= size), and for identity, QSGD
// and sign also D; for top-k and rand-k nothing in the length bounds D (only its bit width), so
// the receiver must bound D before decompressing (python/cyclad/compression.py: dim= or
// max_dim=).
//
// Why fixed-width bit-packed indices rather than delta / Elias-Fano codes: the size is a
// closed-form function of (D, k), so the length check happens before any decoding; packing
// and unpacking are branch-free and parallel; validation is one linear scan. Elias-Fano would
// save bits at very low density (about 2 + log2(D/k) bits instead of log2(D)) and is a possible
// version-2 encoding.
// =============================================================================================

namespace cyclad::kernels {

enum class Kind : std::uint8_t { identity = 0, topk = 1, randk = 2, qsgd = 3, sign = 4 };
enum class ValueCode : std::uint8_t { f16 = 1, f32 = 2, f64 = 3 };
/// Dtype of the dense vector (header byte 4): what decompress writes.
enum class DenseCode : std::uint8_t { f32 = 1, f64 = 2 };

/// Largest supported dimension: indices travel in at most 32 bits.
inline constexpr std::uint64_t kMaxDim = 0xFFFFFFFFULL;
/// Largest number of QSGD levels: level codes take at most 16 bits.
inline constexpr std::uint64_t kMaxLevels = 65535;

/// \brief Everything that determines a payload: the header fields plus the compress-only
/// options (`seed` of private streams, `scaled` sign).
struct WireSpec {
  Kind kind = Kind::identity;
  ValueCode vcode = ValueCode::f32;
  DenseCode dense = DenseCode::f64;  ///< dense dtype: validation checks values against it
  std::uint64_t dim = 0;
  std::uint64_t param = 0;   ///< k (top-k, rand-k) or s (QSGD); unused otherwise
  std::uint64_t bucket = 0;  ///< QSGD bucket size
  bool shared = false;       ///< rand-k: mask drawn from `seed` only and not sent
  std::uint64_t seed = 0;    ///< rand-k mask / QSGD dither stream
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

/// \brief Check the header fields of `spec` (ranges of D, k, s, bucket, kind, value code,
/// dense code). Throws std::invalid_argument naming the field and its allowed range.
inline void check_spec(const WireSpec& spec) {
  const auto kind = static_cast<unsigned>(spec.kind);
  require(kind <= 4, "kind must be 0..4, got " + std::to_string(kind));
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
  require(!spec.shared || spec.kind == Kind::randk, "the shared flag is only valid for rand-k");
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
  }
  throw std::invalid_argument("unknown kind");
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

/// The largest magnitude a QSGD bucket with stored norm `norm` decodes to, computed exactly as
/// decompress does (level s: T(s * (norm / s))).
inline double qsgd_max_decoded(double norm, std::uint64_t s) {
  const auto sd = static_cast<double>(s);
  return sd * (norm / sd);
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
template <unsigned W>
CYCLAD_MULTIVERSION std::size_t pack_groups(const std::uint32_t* CYCLAD_RESTRICT v, std::size_t n,
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

template <unsigned W>
CYCLAD_MULTIVERSION std::size_t unpack_groups(const unsigned char* CYCLAD_RESTRICT in,
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
  switch (w) {
    case 1: j = pack_groups<1>(v, n, out); break;
    case 2: j = pack_groups<2>(v, n, out); break;
    case 3: j = pack_groups<3>(v, n, out); break;
    case 4: j = pack_groups<4>(v, n, out); break;
    case 5: j = pack_groups<5>(v, n, out); break;
    case 6: j = pack_groups<6>(v, n, out); break;
    case 7: j = pack_groups<7>(v, n, out); break;
    case 8: j = pack_groups<8>(v, n, out); break;
    default: break;
  }
  pack_tail(v + j, n - j, w, out + j / 8 * w);
}

/// Unpack `n` values of `w` bits from exactly packed_bytes(n, w) bytes at `in`.
inline void unpack_block(const unsigned char* in, std::size_t n, unsigned w, std::uint32_t* v) {
  std::size_t j = 0;
  switch (w) {
    case 1: j = unpack_groups<1>(in, n, v); break;
    case 2: j = unpack_groups<2>(in, n, v); break;
    case 3: j = unpack_groups<3>(in, n, v); break;
    case 4: j = unpack_groups<4>(in, n, v); break;
    case 5: j = unpack_groups<5>(in, n, v); break;
    case 6: j = unpack_groups<6>(in, n, v); break;
    case 7: j = unpack_groups<7>(in, n, v); break;
    case 8: j = unpack_groups<8>(in, n, v); break;
    default: break;
  }
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

// ---------------------------------------------------------------------------------------------
// magnitude keys for top-k
// ---------------------------------------------------------------------------------------------

template <typename T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using K = std::int32_t;
  using U = std::uint32_t;
  static constexpr U kAbs = 0x7FFFFFFFU;
  static constexpr K kNan = 0x7F800001;  // every NaN ranks as this: just above +Inf
};
template <>
struct KeyTraits<double> {
  using K = std::int64_t;
  using U = std::uint64_t;
  static constexpr U kAbs = 0x7FFFFFFFFFFFFFFFULL;
  static constexpr K kNan = 0x7FF0000000000001LL;
};

/// Order-preserving integer key of |v|: the magnitude bits, with all NaNs equal and above Inf.
template <typename T>
inline typename KeyTraits<T>::K magnitude_key(T v) {
  using Tr = KeyTraits<T>;
  typename Tr::U u;
  std::memcpy(&u, &v, sizeof(T));
  const auto k = static_cast<typename Tr::K>(u & Tr::kAbs);
  return k < Tr::kNan ? k : Tr::kNan;
}

/// Candidates of a top-k filter: ascending indices and their magnitude keys.
template <typename T>
struct Candidates {
  std::vector<std::uint32_t> idx;
  std::vector<typename KeyTraits<T>::K> key;
};

/// Append to `c` every i in [lo, hi) with magnitude_key(x[i]) >= L, with its key (L <= kNan, so
/// NaN payloads above kNan need no clamping in the comparison).
template <typename T>
CYCLAD_MULTIVERSION void filter_block(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                      typename KeyTraits<T>::K L, std::size_t cap,
                                      Candidates<T>& c) {
  using Tr = KeyTraits<T>;
  using K = typename Tr::K;
  constexpr std::size_t kStep = 32;  // elements per mask word
  std::size_t o = c.idx.size();
  c.idx.resize(std::max<std::size_t>(o + 2 * kStep, cap));
  c.key.resize(c.idx.size());
  std::size_t i = lo;
  for (; i + kStep <= hi; i += kStep) {
    if (o + kStep > c.idx.size()) {
      c.idx.resize(2 * c.idx.size());
      c.key.resize(c.idx.size());
    }
    // One bit per element (a vector compare + mask move) and the block's keys; then write the
    // set bits without data-dependent branches for up to kFixed hits per word (the common
    // case). The fixed steps may run past the real hits: kFixed sentinel bits above the mask
    // keep every __builtin_ctzll argument nonzero (ctz of 0 is undefined) and point those steps
    // at the zeroed padding kb[kStep .. kStep + kFixed); what they write lies beyond the `cnt`
    // real entries (inside the kStep slots reserved above) and is overwritten or cut off.
    constexpr std::size_t kFixed = 4;
    std::uint32_t mask = 0;
    K kb[kStep + kFixed];
    for (std::size_t j = 0; j < kStep; ++j) {
      typename Tr::U u;
      std::memcpy(&u, x + i + j, sizeof(T));
      const auto m = static_cast<K>(u & Tr::kAbs);
      mask |= static_cast<std::uint32_t>(m >= L) << j;
      kb[j] = m < Tr::kNan ? m : Tr::kNan;
    }
    for (std::size_t j = kStep; j < kStep + kFixed; ++j) kb[j] = 0;
    const auto cnt = static_cast<std::size_t>(__builtin_popcount(mask));
    std::uint64_t bits = mask | (((std::uint64_t{1} << kFixed) - 1) << kStep);
    std::uint32_t* CYCLAD_RESTRICT po = c.idx.data() + o;
    K* CYCLAD_RESTRICT pk = c.key.data() + o;
    for (std::size_t t = 0; t < kFixed; ++t) {
      const auto j = static_cast<std::size_t>(__builtin_ctzll(bits));
      po[t] = static_cast<std::uint32_t>(i + j);
      pk[t] = kb[j];
      bits &= bits - 1;
    }
    for (std::size_t t = kFixed; t < cnt; ++t) {  // only real hits are left here
      const auto j = static_cast<std::size_t>(__builtin_ctzll(bits));
      po[t] = static_cast<std::uint32_t>(i + j);
      pk[t] = kb[j];
      bits &= bits - 1;
    }
    o += cnt;
  }
  c.idx.resize(o);
  c.key.resize(o);
  for (; i < hi; ++i) {
    const K m = magnitude_key(x[i]);
    if (m >= L) {
      c.idx.push_back(static_cast<std::uint32_t>(i));
      c.key.push_back(m);
    }
  }
}

/// Per-calling-thread scratch of topk_select, reused across calls so that repeated compressions
/// do not page-fault fresh candidate buffers; buffers above kKeep entries are released after
/// each call (the guard below), so at most a few MB stay allocated per calling thread.
template <typename T>
struct TopkScratch {
  static constexpr std::size_t kKeep = std::size_t{1} << 18;
  std::vector<Candidates<T>> parts;
  Candidates<T> all;

  static void trim(Candidates<T>& c) {
    if (c.idx.capacity() > kKeep) std::vector<std::uint32_t>().swap(c.idx);
    if (c.key.capacity() > kKeep) std::vector<typename KeyTraits<T>::K>().swap(c.key);
  }
  struct Guard {
    TopkScratch& s;
    ~Guard() {
      for (auto& p : s.parts) trim(p);
      trim(s.all);
    }
  };
  static TopkScratch& get() {
    static thread_local TopkScratch s;
    return s;
  }
};

/// Indices i (ascending) with key(x[i]) >= L and their keys, gathered per chunk and
/// concatenated in chunk order (so the result does not depend on the thread count). The result
/// lives in `s` until the next call.
template <typename T>
const Candidates<T>& filter_indices(const T* x, std::size_t D, typename KeyTraits<T>::K L,
                                    std::size_t expect, int threads, TopkScratch<T>& s) {
  const auto nt = static_cast<std::size_t>(resolve_threads(threads));
  const std::size_t nchunks = std::max<std::size_t>(1, std::min(nt, D / 65536));
  auto& parts = s.parts;
  if (parts.size() < nchunks) parts.resize(nchunks);
  parallel_for(nchunks, static_cast<int>(nchunks), 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t lo = D * c / nchunks, hi = D * (c + 1) / nchunks;
      const std::size_t cap = std::min(expect / nchunks, hi - lo) + 64;
      parts[c].idx.clear();
      parts[c].key.clear();
      filter_block(x, lo, hi, L, cap, parts[c]);
    }
  });
  if (nchunks == 1) return parts[0];
  std::size_t total = 0;
  for (std::size_t c = 0; c < nchunks; ++c) total += parts[c].idx.size();
  Candidates<T>& all = s.all;
  all.idx.clear();
  all.key.clear();
  all.idx.reserve(total);
  all.key.reserve(total);
  for (std::size_t c = 0; c < nchunks; ++c) {
    all.idx.insert(all.idx.end(), parts[c].idx.begin(), parts[c].idx.end());
    all.key.insert(all.key.end(), parts[c].key.begin(), parts[c].key.end());
  }
  return all;
}

/// The k-th largest of the n non-negative `keys` (1 <= k <= n) by an MSD radix select (11 bits
/// per pass; each pass keeps only the bucket holding rank k); `take` receives how many keys
/// equal to the result belong to the k largest. O(n) time, O(size of the first bucket) memory.
template <typename K>
K radix_kth_largest(const K* keys, std::size_t n, std::size_t k, std::size_t& take) {
  using U = std::make_unsigned_t<K>;
  constexpr unsigned kRadix = 11;
  std::vector<U> buf;
  const U* src = reinterpret_cast<const U*>(keys);
  std::size_t hist[std::size_t{1} << kRadix];
  std::size_t rank = k;
  U prefix = 0;
  unsigned top = 8 * sizeof(K) - 1;  // keys are non-negative: bits [0, top) are undecided
  while (top > 0) {
    const unsigned shift = top > kRadix ? top - kRadix : 0;
    const U mask = static_cast<U>((U{1} << (top - shift)) - 1);
    std::fill(hist, hist + mask + 1, std::size_t{0});
    for (std::size_t j = 0; j < n; ++j) ++hist[static_cast<std::size_t>((src[j] >> shift) & mask)];
    auto b = static_cast<std::size_t>(mask);
    while (hist[b] < rank) rank -= hist[b--];
    prefix = static_cast<U>(prefix | (static_cast<U>(b) << shift));
    top = shift;
    if (top == 0 || hist[b] == n) continue;  // done, or every key is in this bucket
    if (buf.empty()) buf.resize(hist[b]);
    std::size_t m = 0;
    for (std::size_t j = 0; j < n && m < hist[b]; ++j) {
      const U v = src[j];
      buf[m] = v;
      m += static_cast<std::size_t>(((v >> shift) & mask) == b);
    }
    src = buf.data();
    n = m;
  }
  take = rank;
  return static_cast<K>(prefix);
}

/// Exact top-k among the ascending candidates `c` (which must contain the top-k of x): the
/// threshold key T is the k-th largest candidate key; keep every key > T and the lowest-index
/// keys == T. Writes k ascending indices to `idx`.
template <typename T>
void select_among(const Candidates<T>& c, std::size_t k, std::uint32_t* idx) {
  using K = typename KeyTraits<T>::K;
  std::size_t take = 0;
  const K thr = radix_kth_largest(c.key.data(), c.key.size(), k, take);
  std::size_t o = 0;
  for (std::size_t j = 0; j < c.key.size(); ++j) {
    const K key = c.key[j];
    if (key > thr || (key == thr && take > 0)) {
      if (key == thr) --take;
      idx[o++] = c.idx[j];
    }
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// selection kernels
// ---------------------------------------------------------------------------------------------

/// \brief Exact top-k by magnitude.
/// \tparam T float or double.
/// \param[in] x (D,) vector, 1 <= D <= 2^32 - 1.
/// \param k 1 <= k <= D.
/// \param[out] idx (k,) indices of the k largest |x_i|, ascending.
/// \param threads 0 = all cores.
///
/// Order: |x| compared as IEEE magnitudes, every NaN ranks above +Inf (a NaN is "the largest");
/// among equal magnitudes (and among NaNs) the lower index wins. -0.0 and 0.0 are equal.
/// Method: a fixed, strided sample of up to 32768 magnitudes gives a threshold L that at least k
/// elements exceed with high probability; one filtering pass over x (vectorised, memory-bound)
/// collects the candidates >= L; an exact selection among them applies the tie rule. If fewer
/// than k pass the filter (unlucky sample, or more zeros than D - k) the filter reruns with the
/// nonzero magnitudes and zeros fill in by lowest index, so the result is always exact.
/// Complexity O(D) expected, one read of x (plus O(candidates) work). The output depends on x
/// and k only, so it is bit-identical for any thread count.
template <typename T>
void topk_select(const T* x, std::size_t D, std::size_t k, std::uint32_t* idx, int threads) {
  using K = typename detail::KeyTraits<T>::K;
  require(D >= 1 && D <= kMaxDim, "D must be in [1, 2^32 - 1]");
  require(k >= 1 && k <= D, "k must be in [1, D]");
  if (k == D) {
    for (std::size_t i = 0; i < D; ++i) idx[i] = static_cast<std::uint32_t>(i);
    return;
  }
  // Sample: up to 1024 runs of 32 consecutive magnitudes (about D/8 of them for D < 262144).
  constexpr std::size_t kRun = 32;
  const std::size_t kBlocks = std::min<std::size_t>(1024, D / (8 * kRun));
  const std::size_t kSample = kBlocks * kRun;
  K L = 1;  // the nonzero-magnitude filter
  std::size_t expect = D;
  if (kBlocks >= 16) {
    std::vector<K> s(kSample);
    for (std::size_t b = 0; b < kBlocks; ++b) {
      const std::size_t start = (D - kRun) * b / (kBlocks - 1);
      for (std::size_t j = 0; j < kRun; ++j) s[b * kRun + j] = detail::magnitude_key(x[start + j]);
    }
    const double r = static_cast<double>(k) * static_cast<double>(kSample) / static_cast<double>(D);
    const double rank = std::ceil(r + 4.0 * std::sqrt(r) + 8.0);
    if (rank < static_cast<double>(kSample)) {
      std::size_t ties = 0;
      const K sk = detail::radix_kth_largest(s.data(), kSample, static_cast<std::size_t>(rank), ties);
      L = std::max<K>(sk, 1);
      expect = static_cast<std::size_t>(rank / static_cast<double>(kSample) *
                                        static_cast<double>(D) * 1.25);
    }
  }
  auto& scratch = detail::TopkScratch<T>::get();
  const typename detail::TopkScratch<T>::Guard guard{scratch};
  const detail::Candidates<T>* found = &detail::filter_indices(x, D, L, expect, threads, scratch);
  if (found->idx.size() < k && L > 1) {
    found = &detail::filter_indices(x, D, K{1}, D, threads, scratch);
  }
  if (found->idx.size() >= k) {
    detail::select_among(*found, k, idx);
    return;
  }
  const std::vector<std::uint32_t>& cand = found->idx;
  // Fewer than k nonzero magnitudes: all of them, plus the lowest-index zeros.
  std::size_t need = k - cand.size(), o = 0, c = 0;
  for (std::size_t i = 0; i < D && o < k; ++i) {
    if (c < cand.size() && cand[c] == i) {
      idx[o++] = cand[c++];
    } else if (need > 0) {
      idx[o++] = static_cast<std::uint32_t>(i);
      --need;
    }
  }
}

/// \brief Uniform random k-subset of [0, D) without replacement (Floyd's algorithm).
/// \param seed stream seed (the caller folds the round, and for private masks the device, in).
/// \param[out] idx (k,) ascending indices.
/// Step j (j = D-k .. D-1) draws t uniform in [0, j] from random_at(key, j) and keeps t, or j if
/// t was already kept. Serial and a pure function of (seed, D, k): thread-count independent and
/// identical on every device holding the same seed. O(k + D/64) time, D/8 bytes of bitmap.
inline void randk_select(std::uint64_t seed, std::size_t D, std::size_t k, std::uint32_t* idx) {
  require(D >= 1 && D <= kMaxDim, "D must be in [1, 2^32 - 1]");
  require(k >= 1 && k <= D, "k must be in [1, D]");
  if (k == D) {
    for (std::size_t i = 0; i < D; ++i) idx[i] = static_cast<std::uint32_t>(i);
    return;
  }
  const std::uint64_t key = stream_key(seed, Stream::randk);
  std::vector<std::uint64_t> bits((D + 63) / 64, 0);
  for (std::size_t j = D - k; j < D; ++j) {
    const auto t = static_cast<std::size_t>(bounded(random_at(key, j), j + 1));
    const bool taken = (bits[t >> 6] >> (t & 63)) & 1U;
    const std::size_t pick = taken ? j : t;
    bits[pick >> 6] |= std::uint64_t{1} << (pick & 63);
  }
  std::size_t o = 0;
  for (std::size_t w = 0; w < bits.size(); ++w) {
    std::uint64_t b = bits[w];
    while (b != 0) {
      const auto tz = static_cast<std::size_t>(__builtin_ctzll(b));
      idx[o++] = static_cast<std::uint32_t>(w * 64 + tz);
      b &= b - 1;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// compress
// ---------------------------------------------------------------------------------------------

namespace detail {

template <typename T, typename Get>
void encode_values_parallel(std::size_t n, ValueCode vc, unsigned char* out, int threads,
                            const Get& get) {
  const std::size_t vb = value_bytes(vc);
  parallel_for(n, threads, 1 << 15, [&](std::size_t lo, std::size_t hi) {
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

/// Norm of one bucket in double; for double input with extreme magnitudes it is computed on
/// scaled values so that neither the squares overflow nor they underflow to zero.
/// Sum of x[i]^2 (square = true) or |x[i]| in double over 8 interleaved lanes combined in a
/// fixed order: vectorisable, and the same bits for any thread count (callers sum fixed ranges).
template <typename T, bool square>
CYCLAD_MULTIVERSION double lane_sum(const T* CYCLAD_RESTRICT x, std::size_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t j = 0; j < 8; ++j) {
      const auto v = static_cast<double>(x[i + j]);
      acc[j] += square ? v * v : std::fabs(v);
    }
  }
  for (std::size_t j = 0; i < n; ++i, ++j) {
    const auto v = static_cast<double>(x[i]);
    acc[j] += square ? v * v : std::fabs(v);
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
double bucket_norm(const T* x, std::size_t n) {
  const double s = lane_sum<T, true>(x, n);
  if (std::is_same<T, float>::value || (s > 1e-290 && s < 1e290) || std::isnan(s)) {
    return std::sqrt(s);
  }
  double m = 0.0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(x[i])));
  if (!std::isfinite(m) || m == 0.0) return m;
  double t = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]) / m;
    t += v * v;
  }
  return m * std::sqrt(t);
}

/// QSGD levels and sign bits of x[lo, hi), which lie in bucket(s) with quantization norms
/// `norms`. Level = floor(r) + [u < r - floor(r)], r = min(|x| * (s / norm), s), with u the
/// counter-based uniform of coordinate i (24 bits for float, 53 bits for double).
template <typename T>
CYCLAD_MULTIVERSION void qsgd_levels(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                     T inv, T s, std::uint64_t key,
                                     std::uint32_t* CYCLAD_RESTRICT lev,
                                     std::uint32_t* CYCLAD_RESTRICT sgn) {
  for (std::size_t i = lo; i < hi; ++i) {
    const T v = x[i];
    const T r = std::min(std::fabs(v) * inv, s);
    // r is in [0, s], s < 2^16: truncation is floor, and unlike std::floor it vectorises
    // without -fno-trapping-math.
    using I = std::conditional_t<std::is_same<T, float>::value, std::int32_t, std::int64_t>;
    const auto li = static_cast<I>(r);
    const T p = r - static_cast<T>(li);
    const std::uint64_t h = random_at(key, i);
    T u;
    if constexpr (std::is_same<T, float>::value) {
      u = uniform24(h);
    } else {
      u = uniform53(h);
    }
    lev[i - lo] = static_cast<std::uint32_t>(li + static_cast<I>(u < p));
    sgn[i - lo] = sign_bit(v);
  }
}

/// qsgd_levels for a bucket whose s / norm overflows T (subnormal-range norms): the same rule
/// with r = min(|x| / norm * s, s) evaluated in double.
template <typename T>
void qsgd_levels_tiny(const T* x, std::size_t lo, std::size_t hi, double norm, double s,
                      std::uint64_t key, std::uint32_t* lev, std::uint32_t* sgn) {
  for (std::size_t i = lo; i < hi; ++i) {
    const double r = std::min(std::fabs(static_cast<double>(x[i])) / norm * s, s);
    const double l = std::floor(r);
    const double u = uniform53(random_at(key, i));
    lev[i - lo] = static_cast<std::uint32_t>(l) + static_cast<std::uint32_t>(u < r - l);
    sgn[i - lo] = sign_bit(x[i]);
  }
}

template <typename T>
void qsgd_compress(const WireSpec& spec, const T* x, unsigned char* payload, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const std::size_t b = static_cast<std::size_t>(spec.bucket);
  const std::size_t nb = (D + b - 1) / b;
  const std::size_t vb = value_bytes(spec.vcode);
  std::vector<double> norms(nb);
  parallel_for(nb, threads, std::max<std::size_t>(1, 65536 / b), [&](std::size_t b0, std::size_t b1) {
    for (std::size_t j = b0; j < b1; ++j) {
      const std::size_t lo = j * b, hi = std::min(D, lo + b);
      const double nrm = bucket_norm(x + lo, hi - lo);
      if (!std::isfinite(nrm)) {
        throw std::invalid_argument(
            "QSGD cannot quantize non-finite values: bucket " + std::to_string(j) +
            " (coordinates " + std::to_string(lo) + ".." + std::to_string(hi - 1) +
            ") has norm " + std::to_string(nrm) + "; NaN/Inf inputs need top-k, rand-k or identity");
      }
      norms[j] = store_value_up(nrm, spec.vcode, payload + j * vb);
      if (!finite_in(dense_code_of<T>, qsgd_max_decoded(norms[j], spec.param))) {
        throw std::invalid_argument(
            "QSGD bucket " + std::to_string(j) + " has norm " + std::to_string(norms[j]) +
            ", whose quantized values overflow " + dense_name(dense_code_of<T>) +
            "; use float64 input");
      }
    }
  });
  unsigned char* signs = payload + nb * vb;
  unsigned char* levels = signs + packed_bytes(D, 1);
  const unsigned wl = level_bits(spec.param);
  const std::uint64_t key = stream_key(spec.seed, Stream::qsgd);
  const auto s = static_cast<T>(spec.param);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, 4, [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> lev(kPackBlock), sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      for (std::size_t a = lo; a < hi;) {
        const std::size_t j = a / b;
        const std::size_t e = std::min(hi, (j + 1) * b);
        const double invd = norms[j] > 0.0 ? static_cast<double>(spec.param) / norms[j] : 0.0;
        if (invd <= static_cast<double>(std::numeric_limits<T>::max())) {
          qsgd_levels(x, a, e, static_cast<T>(invd), s, key, lev.data() + (a - lo),
                      sgn.data() + (a - lo));
        } else {
          qsgd_levels_tiny(x, a, e, norms[j], static_cast<double>(spec.param), key,
                           lev.data() + (a - lo), sgn.data() + (a - lo));
        }
        a = e;
      }
      pack_block(sgn.data(), hi - lo, 1, signs + lo / 8);
      pack_block(lev.data(), hi - lo, wl, levels + lo / 8 * wl);
    }
  });
}

template <typename T>
void sign_compress(const WireSpec& spec, const T* x, unsigned char* payload, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  double scale = 1.0;
  if (spec.scaled) {
    std::vector<double> part(num_blocks(D));
    parallel_blocks(D, threads, [&](std::size_t blk, std::size_t lo, std::size_t hi) {
      part[blk] = lane_sum<T, false>(x + lo, hi - lo);
    });
    double total = 0.0;
    for (double p : part) total += p;
    scale = total / static_cast<double>(D);
    require(std::isfinite(scale),
            "sign compression needs a finite ||x||_1 (NaN/Inf input or overflow); got scale " +
                std::to_string(scale));
  }
  store_value(scale, spec.vcode, payload);
  require(finite_in(dense_code_of<T>, load_value(payload, spec.vcode)),
          "sign compression: scale " + std::to_string(scale) + " overflows " +
              dense_name(dense_code_of<T>));
  unsigned char* signs = payload + value_bytes(spec.vcode);
  pack_parallel(D, 1, signs, threads, [&](std::size_t lo, std::size_t hi, std::uint32_t* buf) {
    for (std::size_t i = lo; i < hi; ++i) buf[i - lo] = sign_bit(x[i]);
  });
}

}  // namespace detail

/// \brief Compress x into the payload described by `spec` (header fields are written by the
/// caller). \param[in] x (D,) with D = spec.dim. \param[out] payload exactly payload_size(spec)
/// bytes (`size` is checked). \param threads 0 = all cores.
///
/// Non-finite inputs: identity, top-k and rand-k carry raw values (NaN/Inf round-trip; a NaN
/// ranks above +Inf in top-k); QSGD and scaled sign throw std::invalid_argument when a norm or
/// ||x||_1 is not finite. Narrowing (float64 data to float32/float16 values, float32 to
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
  }
}

// ---------------------------------------------------------------------------------------------
// validate and decompress
// ---------------------------------------------------------------------------------------------

namespace detail {

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

CYCLAD_MULTIVERSION inline std::uint32_t max_u32(const std::uint32_t* v, std::size_t n) {
  std::uint32_t mx = 0;
  for (std::size_t i = 0; i < n; ++i) mx = std::max(mx, v[i]);
  return mx;
}

inline void validate_qsgd(const WireSpec& spec, const unsigned char* p, int threads,
                          bool check_levels) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const std::size_t nb = (D + spec.bucket - 1) / spec.bucket;
  const std::size_t vb = value_bytes(spec.vcode);
  for (std::size_t j = 0; j < nb; ++j) {
    const double nrm = load_value(p + j * vb, spec.vcode);
    if (!(std::isfinite(nrm) && nrm >= 0.0)) {
      throw std::invalid_argument("malformed message: QSGD norm " + std::to_string(nrm) + " of bucket " +
                std::to_string(j) + " is not finite and >= 0");
    }
    if (!finite_in(spec.dense, qsgd_max_decoded(nrm, spec.param))) {
      throw std::invalid_argument("malformed message: QSGD norm " + std::to_string(nrm) +
                                  " of bucket " + std::to_string(j) +
                                  " decodes to values outside the finite range of the dense "
                                  "dtype " + dense_name(spec.dense));
    }
  }
  const unsigned char* signs = p + nb * vb;
  const unsigned char* levels = signs + packed_bytes(D, 1);
  const unsigned wl = level_bits(spec.param);
  require(padding_is_zero(signs, D, 1), "malformed message: nonzero padding after the sign bits");
  require(padding_is_zero(levels, D, wl), "malformed message: nonzero padding after the levels");
  // Every code is a valid level when s = 2^wl - 1.
  if (!check_levels || (std::uint64_t{1} << wl) - 1 == spec.param) return;
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  const auto s = static_cast<std::uint32_t>(spec.param);
  parallel_for(nblocks, threads, 16, [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> lev(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      unpack_block(levels + lo / 8 * wl, hi - lo, wl, lev.data());
      const std::uint32_t mx = max_u32(lev.data(), hi - lo);
      if (!(mx <= s)) {
        throw std::invalid_argument("malformed message: QSGD level code " + std::to_string(mx) +
                           " above levels=" + std::to_string(s));
      }
    }
  });
}

template <typename T>
void fill_zero(T* out, std::size_t D, int threads) {
  parallel_for(D, threads, 1 << 16, [&](std::size_t lo, std::size_t hi) {
    std::fill(out + lo, out + hi, T(0));
  });
}

template <typename T>
void decode_values_parallel(const unsigned char* in, std::size_t n, ValueCode vc, T* out,
                            int threads) {
  parallel_for(n, threads, 1 << 15, [&](std::size_t lo, std::size_t hi) {
    if (vc == ValueCode::f32 && std::is_same<T, float>::value) {
      std::memcpy(out + lo, in + lo * 4, (hi - lo) * 4);
      return;
    }
    const std::size_t vb = value_bytes(vc);
    for (std::size_t j = lo; j < hi; ++j) out[j] = static_cast<T>(load_value(in + j * vb, vc));
  });
}

/// out = (1 - 2 sign) * T(level * scale); returns the largest level seen (for validation).
template <typename T>
CYCLAD_MULTIVERSION std::uint32_t qsgd_decode_block(const std::uint32_t* CYCLAD_RESTRICT lev,
                                                    const std::uint32_t* CYCLAD_RESTRICT sgn,
                                                    std::size_t n, double scale,
                                                    T* CYCLAD_RESTRICT out) {
  std::uint32_t mx = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = static_cast<T>(static_cast<double>(lev[i]) * scale);
    out[i] = v * (T(1) - T(2) * static_cast<T>(sgn[i]));
    mx = std::max(mx, lev[i]);
  }
  return mx;
}

/// out = (1 - 2 sign) * scale, branch-free.
template <typename T>
CYCLAD_MULTIVERSION void sign_decode_block(const std::uint32_t* CYCLAD_RESTRICT sgn,
                                           std::size_t n, T scale, T* CYCLAD_RESTRICT out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = scale * (T(1) - T(2) * static_cast<T>(sgn[i]));
}

}  // namespace detail

/// \brief Validate a payload against its header: exact size, index range and strict increase,
/// QSGD level codes <= s, finite non-negative QSGD norms and sign scale, zero padding bits, and
/// the range of every decoded value in the dense dtype `spec.dense`.
/// Raw top-k / rand-k / identity values may be NaN or +-Inf (they are data), but a finite raw
/// value must stay finite in the dense dtype (times D/k for rand-k), and QSGD norms and the sign
/// scale must decode to finite values: compress never produces anything else, so a message
/// that would decode to +-Inf from finite fields is malformed.
/// Throws std::invalid_argument ("malformed message: ...") on the first violation; reads only
/// inside [payload, payload + size). Allocates at most k indices (k <= size / value bytes,
/// since size is checked first) and one word per 65536 values; never O(D) for a sparse kind.
inline void validate_payload(const WireSpec& spec, const unsigned char* p, std::uint64_t size,
                             int threads, bool check_levels = true) {
  const std::uint64_t want = payload_size(spec);
  require(size == want, "malformed message: payload is " + std::to_string(size) +
                            " bytes, the header implies " + std::to_string(want));
  const std::size_t vb = value_bytes(spec.vcode);
  switch (spec.kind) {
    case Kind::identity:
      detail::check_dense_range(p, static_cast<std::size_t>(spec.dim), spec.vcode, 1.0,
                                spec.dense, threads, "malformed message");
      return;
    case Kind::topk:
    case Kind::randk: {
      const auto k = static_cast<std::size_t>(spec.param);
      const unsigned char* vals = p;
      if (!(spec.kind == Kind::randk && spec.shared)) {
        std::vector<std::uint32_t> idx(k);
        detail::read_indices(p, spec.param, spec.dim, idx.data());
        vals += packed_bytes(spec.param, index_bits(spec.dim));
      }
      const double scale = spec.kind == Kind::randk
                               ? static_cast<double>(spec.dim) / static_cast<double>(spec.param)
                               : 1.0;
      detail::check_dense_range(vals, k, spec.vcode, scale, spec.dense, threads,
                                "malformed message");
      return;
    }
    case Kind::qsgd:
      detail::validate_qsgd(spec, p, threads, check_levels);
      return;
    case Kind::sign: {
      const double scale = detail::load_value(p, spec.vcode);
      require(std::isfinite(scale) && scale >= 0.0,
              "malformed message: sign scale " + std::to_string(scale) + " is not finite and >= 0");
      require(finite_in(spec.dense, scale),
              "malformed message: sign scale " + std::to_string(scale) +
                  " is outside the finite range of the dense dtype " + dense_name(spec.dense));
      require(detail::padding_is_zero(p + vb, spec.dim, 1),
              "malformed message: nonzero padding after the sign bits");
      return;
    }
  }
}

/// \brief Decompress a payload into the dense (D,) vector `out` (D = spec.dim; T must match
/// spec.dense). Validates the payload first (validate_payload), so any byte string either
/// decodes or throws std::invalid_argument, and a finite field never decodes to +-Inf. Top-k:
/// x_hat[i] = value at kept i, 0 elsewhere. Rand-k: T(value * D/k) at kept i (the mask of a
/// shared message is regenerated from spec.seed, with a D/8-byte bitmap). QSGD:
/// sign * T(level * (norm / s)). Sign: +-scale (sign bit 1 = negative). Identity: the values.
/// Bit-identical for any thread count. Besides `out` it allocates O(k + D/8) bytes (sparse
/// kinds) or one 4096-entry buffer per thread (QSGD, sign).
template <typename T>
void decompress(const WireSpec& spec, const unsigned char* p, std::uint64_t size, T* out,
                int threads) {
  require(spec.dense == dense_code_of<T>, "spec.dense does not match the output dtype");
  // The QSGD level check is fused into decoding (one pass); everything else is checked first.
  validate_payload(spec, p, size, threads, /*check_levels=*/false);
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
        detail::read_indices(p, k, D, idx.data());
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
    case Kind::qsgd: {
      const std::size_t b = static_cast<std::size_t>(spec.bucket);
      const std::size_t nb = (D + b - 1) / b;
      const unsigned char* signs = p + nb * vb;
      const unsigned char* levels = signs + packed_bytes(D, 1);
      const unsigned wl = level_bits(spec.param);
      const auto s = static_cast<double>(spec.param);
      const std::size_t nblocks = (D + detail::kPackBlock - 1) / detail::kPackBlock;
      parallel_for(nblocks, threads, 4, [&](std::size_t b0, std::size_t b1) {
        std::vector<std::uint32_t> lev(detail::kPackBlock), sgn(detail::kPackBlock);
        for (std::size_t blk = b0; blk < b1; ++blk) {
          const std::size_t lo = blk * detail::kPackBlock;
          const std::size_t hi = std::min(D, lo + detail::kPackBlock);
          detail::unpack_block(signs + lo / 8, hi - lo, 1, sgn.data());
          detail::unpack_block(levels + lo / 8 * wl, hi - lo, wl, lev.data());
          for (std::size_t a = lo; a < hi;) {
            const std::size_t j = a / b;
            const std::size_t e = std::min(hi, (j + 1) * b);
            const double scale = detail::load_value(p + j * vb, vc) / s;
            const std::uint32_t mx = detail::qsgd_decode_block(
                lev.data() + (a - lo), sgn.data() + (a - lo), e - a, scale, out + a);
            if (!(mx <= spec.param)) {
              throw std::invalid_argument("malformed message: QSGD level code " + std::to_string(mx) +
                                          " above levels=" + std::to_string(spec.param));
            }
            a = e;
          }
        }
      });
      return;
    }
    case Kind::sign: {
      const auto scale = static_cast<T>(detail::load_value(p, vc));
      const unsigned char* signs = p + vb;
      const std::size_t nblocks = (D + detail::kPackBlock - 1) / detail::kPackBlock;
      parallel_for(nblocks, threads, 4, [&](std::size_t b0, std::size_t b1) {
        std::vector<std::uint32_t> sgn(detail::kPackBlock);
        for (std::size_t blk = b0; blk < b1; ++blk) {
          const std::size_t lo = blk * detail::kPackBlock;
          const std::size_t hi = std::min(D, lo + detail::kPackBlock);
          detail::unpack_block(signs + lo / 8, hi - lo, 1, sgn.data());
          detail::sign_decode_block(sgn.data(), hi - lo, scale, out + lo);
        }
      });
      return;
    }
  }
}

}  // namespace cyclad::kernels
