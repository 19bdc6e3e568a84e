// SPDX-License-Identifier: Apache-2.0
// Quantisation for compression: QSGD (stochastic levels per bucket), the scaled sign, natural
// compression (stochastic rounding to powers of two) and TernGrad (stochastic ternarisation
// per bucket). Encode, payload validation and decode of the quantised kinds; the payload
// layout is in docs/wire-format.md.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/parallel.hpp"
#include "cyclad/random.hpp"
#include "cyclad/wire.hpp"

namespace cyclad::kernels {

namespace detail {

/// The largest magnitude a QSGD bucket with stored norm `norm` decodes to, computed exactly as
/// decompress does (level s: T(s * (norm / s))).
inline double qsgd_max_decoded(double norm, std::uint64_t s) {
  const auto sd = static_cast<double>(s);
  return sd * (norm / sd);
}

// --- encode ---------------------------------------------------------------------------------

/// Sum of x[i]^2 (square = true) or |x[i]| in double over 8 interleaved lanes combined in a
/// fixed order: vectorisable, and the same bits for any thread count (callers sum fixed ranges).
template <Isa I, typename T, bool square>
CYCLAD_KERNEL double lane_sum(const T* CYCLAD_RESTRICT x, std::size_t n) {
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

/// Norm of one bucket in double; for double input with extreme magnitudes it is computed on
/// scaled values so that neither the squares overflow nor they underflow to zero.
template <typename T>
double bucket_norm(const T* x, std::size_t n) {
  double s = 0.0;
  dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA { s = lane_sum<decltype(isa)::value, T, true>(x, n); });
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
template <Isa I, typename T>
CYCLAD_KERNEL void qsgd_levels(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                     T inv, T s, std::uint64_t key,
                                     std::uint32_t* CYCLAD_RESTRICT lev,
                                     std::uint32_t* CYCLAD_RESTRICT sgn) {
  for (std::size_t i = lo; i < hi; ++i) {
    const T v = x[i];
    const T r = std::min(std::fabs(v) * inv, s);
    // r is in [0, s], s < 2^16: truncation is floor, and unlike std::floor it vectorises
    // without -fno-trapping-math.
    using Int = std::conditional_t<std::is_same<T, float>::value, std::int32_t, std::int64_t>;
    const auto li = static_cast<Int>(r);
    const T p = r - static_cast<T>(li);
    const std::uint64_t h = random_at(key, i);
    T u;
    if constexpr (std::is_same<T, float>::value) {
      u = uniform24(h);
    } else {
      u = uniform53(h);
    }
    lev[i - lo] = static_cast<std::uint32_t>(li + static_cast<Int>(u < p));
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
  parallel_for(nb, threads, grain_for(b * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
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
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> lev(kPackBlock), sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      for (std::size_t a = lo; a < hi;) {
        const std::size_t j = a / b;
        const std::size_t e = std::min(hi, (j + 1) * b);
        const double invd = norms[j] > 0.0 ? static_cast<double>(spec.param) / norms[j] : 0.0;
        if (invd <= static_cast<double>(std::numeric_limits<T>::max())) {
          dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
            qsgd_levels<decltype(isa)::value>(x, a, e, static_cast<T>(invd), s, key,
                                              lev.data() + (a - lo), sgn.data() + (a - lo));
          });
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
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        part[blk] = lane_sum<decltype(isa)::value, T, false>(x + lo, hi - lo);
      });
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


// --- validate -------------------------------------------------------------------------------

template <Isa I>
CYCLAD_KERNEL std::uint32_t max_u32(const std::uint32_t* v, std::size_t n) {
  std::uint32_t mx = 0;
  for (std::size_t i = 0; i < n; ++i) mx = std::max(mx, v[i]);
  return mx;
}

/// Validate a QSGD payload of the right size: finite non-negative norms whose decoded values
/// stay finite in the dense dtype, zero padding, and level codes <= s.
inline void validate_qsgd(const WireSpec& spec, const unsigned char* p, int threads) {
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
  if ((std::uint64_t{1} << wl) - 1 == spec.param) return;
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  const auto s = static_cast<std::uint32_t>(spec.param);
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(std::uint32_t)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> lev(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      unpack_block(levels + lo / 8 * wl, hi - lo, wl, lev.data());
      std::uint32_t mx = 0;
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA { mx = max_u32<decltype(isa)::value>(lev.data(), hi - lo); });
      if (!(mx <= s)) {
        throw std::invalid_argument("malformed message: QSGD level code " + std::to_string(mx) +
                           " above levels=" + std::to_string(s));
      }
    }
  });
}

/// Validate a sign payload of the right size: a finite non-negative scale that stays finite in
/// the dense dtype, and zero padding after the sign bits.
inline void validate_sign(const WireSpec& spec, const unsigned char* p) {
  const double scale = load_value(p, spec.vcode);
  require(std::isfinite(scale) && scale >= 0.0,
          "malformed message: sign scale " + std::to_string(scale) + " is not finite and >= 0");
  require(finite_in(spec.dense, scale),
          "malformed message: sign scale " + std::to_string(scale) +
              " is outside the finite range of the dense dtype " + dense_name(spec.dense));
  require(padding_is_zero(p + value_bytes(spec.vcode), spec.dim, 1),
          "malformed message: nonzero padding after the sign bits");
}

// --- decode ---------------------------------------------------------------------------------

/// out = (1 - 2 sign) * T(level * scale).
template <Isa I, typename T>
CYCLAD_KERNEL void qsgd_decode_block(const std::uint32_t* CYCLAD_RESTRICT lev,
                                           const std::uint32_t* CYCLAD_RESTRICT sgn,
                                           std::size_t n, double scale, T* CYCLAD_RESTRICT out) {
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = static_cast<T>(static_cast<double>(lev[i]) * scale);
    out[i] = v * (T(1) - T(2) * static_cast<T>(sgn[i]));
  }
}

/// out = (1 - 2 sign) * scale, branch-free.
template <Isa I, typename T>
CYCLAD_KERNEL void sign_decode_block(const std::uint32_t* CYCLAD_RESTRICT sgn,
                                           std::size_t n, T scale, T* CYCLAD_RESTRICT out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = scale * (T(1) - T(2) * static_cast<T>(sgn[i]));
}


/// Decode a QSGD payload of the right size into out (D,): sign * T(level * (norm / s)).
/// Reads only inside the payload whatever its content; the values are checked by validate_qsgd.
template <typename T>
void qsgd_decode(const WireSpec& spec, const unsigned char* p, T* out, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const ValueCode vc = spec.vcode;
  const std::size_t vb = value_bytes(vc);
  const std::size_t b = static_cast<std::size_t>(spec.bucket);
  const std::size_t nb = (D + b - 1) / b;
  const unsigned char* signs = p + nb * vb;
  const unsigned char* levels = signs + packed_bytes(D, 1);
  const unsigned wl = level_bits(spec.param);
  const auto s = static_cast<double>(spec.param);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> lev(kPackBlock), sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock;
      const std::size_t hi = std::min(D, lo + kPackBlock);
      unpack_block(signs + lo / 8, hi - lo, 1, sgn.data());
      unpack_block(levels + lo / 8 * wl, hi - lo, wl, lev.data());
      for (std::size_t a = lo; a < hi;) {
        const std::size_t j = a / b;
        const std::size_t e = std::min(hi, (j + 1) * b);
        const double scale = load_value(p + j * vb, vc) / s;
        dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
          qsgd_decode_block<decltype(isa)::value>(lev.data() + (a - lo), sgn.data() + (a - lo),
                                                  e - a, scale, out + a);
        });
        a = e;
      }
    }
  });
}

/// Decode a sign payload of the right size into out (D,): +-scale (sign bit 1 = negative).
template <typename T>
void sign_decode(const WireSpec& spec, const unsigned char* p, T* out, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const auto scale = static_cast<T>(load_value(p, spec.vcode));
  const unsigned char* signs = p + value_bytes(spec.vcode);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock;
      const std::size_t hi = std::min(D, lo + kPackBlock);
      unpack_block(signs + lo / 8, hi - lo, 1, sgn.data());
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        sign_decode_block<decltype(isa)::value>(sgn.data(), hi - lo, scale, out + lo);
      });
    }
  });
}


// --- natural compression (Horvath et al. 2019) ----------------------------------------------
//
// Payload: emin (int16) | D sign bits | D exponent codes (one byte each). Code 0 is zero, code
// c in [1, 255] is 2^(emin + c - 1). |x| in [2^e, 2^(e+1)) becomes 2^(e+1) with probability
// p = |x| / 2^e - 1, else 2^e (unbiased); below the window, |x| < 2^emin becomes 2^emin with
// probability |x| / 2^emin, else 0. Both draws are u < p with u = uniform53 of coordinate i.

/// IEEE layout of T for the bit-level natural compression path.
template <typename T>
struct FloatBits {
  using U = std::conditional_t<std::is_same<T, float>::value, std::uint32_t, std::uint64_t>;
  static constexpr unsigned kMant = std::is_same<T, float>::value ? 23 : 52;
  static constexpr int kBias = std::is_same<T, float>::value ? 127 : 1023;
  static constexpr unsigned kBits = 8 * sizeof(T);
  static constexpr U kAbs = ~U{0} >> 1;
  static constexpr U kInf = static_cast<U>(std::is_same<T, float>::value ? 0x7F800000ULL
                                                                        : 0x7FF0000000000000ULL);
};

template <Isa I, typename T>
CYCLAD_KERNEL typename FloatBits<T>::U max_abs_bits(const T* CYCLAD_RESTRICT x, std::size_t n) {
  using B = FloatBits<T>;
  typename B::U mx = 0;
  for (std::size_t i = 0; i < n; ++i) {
    typename B::U u;
    std::memcpy(&u, x + i, sizeof(T));
    mx = std::max<typename B::U>(mx, u & B::kAbs);
  }
  return mx;
}

/// Natural-compression codes and sign bits of x[lo, hi): the branch-free path for normal values
/// inside the window (an integer compare of the 53-bit draw with the mantissa, which is u < p
/// exactly). Returns whether any nonzero value needs natural_codes_slow (subnormal or below
/// the window); those get code 0 here.
template <Isa I, typename T>
CYCLAD_KERNEL bool natural_codes(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                 int emin, std::uint64_t key, unsigned char* CYCLAD_RESTRICT code,
                                 std::uint32_t* CYCLAD_RESTRICT sgn) {
  using B = FloatBits<T>;
  using U = typename B::U;
  using SInt = std::conditional_t<std::is_same<T, float>::value, std::int32_t, std::int64_t>;
  const SInt first = static_cast<SInt>(emin + B::kBias);  // biased exponent of 2^emin
  U slow = 0;
  for (std::size_t i = lo; i < hi; ++i) {
    U u;
    std::memcpy(&u, x + i, sizeof(T));
    const U a = u & B::kAbs;
    const auto E = static_cast<SInt>(a >> B::kMant);
    const std::uint64_t m = static_cast<std::uint64_t>(a & ((U{1} << B::kMant) - 1));
    const std::uint64_t r = random_at(key, i) >> 11;
    const SInt up = static_cast<SInt>(r < (m << (53 - B::kMant)));
    const bool fast = E >= 1 && E >= first;
    const SInt c = E - first + 1 + up;
    code[i - lo] = static_cast<unsigned char>(fast ? c : 0);
    sgn[i - lo] = static_cast<std::uint32_t>(u >> (B::kBits - 1));
    slow |= static_cast<U>(!fast && a != 0);
  }
  return slow != 0;
}

/// The values natural_codes leaves to the double path: nonzero subnormal T, or below 2^emin.
template <typename T>
void natural_codes_slow(const T* x, std::size_t lo, std::size_t hi, int emin, std::uint64_t key,
                        unsigned char* code) {
  using B = FloatBits<T>;
  for (std::size_t i = lo; i < hi; ++i) {
    typename B::U u;
    std::memcpy(&u, x + i, sizeof(T));
    const typename B::U a = u & B::kAbs;
    const auto E = static_cast<int>(a >> B::kMant);
    if (a == 0 || (E >= 1 && E - B::kBias >= emin)) continue;
    const double v = std::fabs(static_cast<double>(x[i]));
    const double w = uniform53(random_at(key, i));
    const int e = std::ilogb(v);
    if (e < emin) {
      code[i - lo] = static_cast<unsigned char>(w < std::ldexp(v, -emin));
    } else {
      const double p = std::ldexp(v, -e) - 1.0;
      code[i - lo] = static_cast<unsigned char>(e - emin + 1 + static_cast<int>(w < p));
    }
  }
}

/// The window start of a natural-compression message of x: the largest power any |x_i| can
/// round to is 2^top (top = floor(log2 max|x|), plus 1 unless max|x| is a power of two), and
/// emin = max(top - 254, natural_emin_lo). Throws for non-finite x and when 2^top overflows T.
template <typename T>
int natural_emin(const T* x, std::size_t D, int threads) {
  using B = FloatBits<T>;
  std::vector<typename B::U> part(num_blocks(D));
  parallel_blocks(D, threads, [&](std::size_t blk, std::size_t lo, std::size_t hi) {
    dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
      part[blk] = max_abs_bits<decltype(isa)::value>(x + lo, hi - lo);
    });
  });
  typename B::U mx = 0;
  for (auto p : part) mx = std::max(mx, p);
  if (mx >= B::kInf) {
    std::size_t j = 0;
    while (j < D && std::isfinite(x[j])) ++j;
    throw std::invalid_argument(
        "natural compression cannot encode non-finite values: x[" + std::to_string(j) + "] = " +
        std::to_string(static_cast<double>(x[j])) + "; NaN/Inf inputs need top-k, rand-k or identity");
  }
  const int lo = natural_emin_lo(dense_code_of<T>);
  if (mx == 0) return lo;
  T m;
  std::memcpy(&m, &mx, sizeof(T));
  const auto md = static_cast<double>(m);
  const int e = std::ilogb(md);
  const int top = e + (std::ldexp(1.0, e) == md ? 0 : 1);
  if (top - (kNaturalCodes - 1) > natural_emin_hi(dense_code_of<T>)) {
    throw std::invalid_argument("natural compression: max |x| = " + std::to_string(md) +
                                " may round up to 2^" + std::to_string(top) +
                                ", which overflows " + dense_name(dense_code_of<T>) +
                                (std::is_same<T, float>::value
                                     ? "; use float64 input"
                                     : " (natural compression sends |x| <= 2^1023)"));
  }
  return std::max(top - (kNaturalCodes - 1), lo);
}

template <typename T>
void natural_compress(const WireSpec& spec, const T* x, unsigned char* payload, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const int emin = natural_emin(x, D, threads);
  const auto e16 = static_cast<std::int16_t>(emin);
  std::memcpy(payload, &e16, kNaturalEminBytes);
  unsigned char* signs = payload + kNaturalEminBytes;
  unsigned char* codes = signs + packed_bytes(D, 1);
  const std::uint64_t key = stream_key(spec.seed, Stream::natural);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      bool slow = false;
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        slow = natural_codes<decltype(isa)::value>(x, lo, hi, emin, key, codes + lo, sgn.data());
      });
      if (slow) natural_codes_slow(x, lo, hi, emin, key, codes + lo);
      pack_block(sgn.data(), hi - lo, 1, signs + lo / 8);
    }
  });
}

inline int natural_payload_emin(const unsigned char* p) {
  std::int16_t e;
  std::memcpy(&e, p, kNaturalEminBytes);
  return e;
}

/// Validate a natural-compression payload of the right size: emin in the range of the dense
/// dtype (natural_emin_lo / hi, so every code decodes to a finite power of two) and zero
/// padding after the sign bits. Every exponent code is valid.
inline void validate_natural(const WireSpec& spec, const unsigned char* p) {
  const int emin = natural_payload_emin(p);
  const int lo = natural_emin_lo(spec.dense), hi = natural_emin_hi(spec.dense);
  require(emin >= lo && emin <= hi,
          "malformed message: natural-compression emin " + std::to_string(emin) + " outside [" +
              std::to_string(lo) + ", " + std::to_string(hi) + "] for the dense dtype " +
              dense_name(spec.dense));
  require(padding_is_zero(p + kNaturalEminBytes, spec.dim, 1),
          "malformed message: nonzero padding after the sign bits");
}

/// out = table[code] with the sign bit OR-ed in (table[0] = +0, table[c] = 2^(emin + c - 1)).
template <Isa I, typename T>
CYCLAD_KERNEL void natural_decode_block(const unsigned char* CYCLAD_RESTRICT code,
                                        const std::uint32_t* CYCLAD_RESTRICT sgn, std::size_t n,
                                        const typename FloatBits<T>::U* CYCLAD_RESTRICT table,
                                        T* CYCLAD_RESTRICT out) {
  using B = FloatBits<T>;
  for (std::size_t i = 0; i < n; ++i) {
    const typename B::U u =
        table[code[i]] | (static_cast<typename B::U>(sgn[i] & 1U) << (B::kBits - 1));
    std::memcpy(out + i, &u, sizeof(T));
  }
}

/// Decode a natural-compression payload of the right size into out (D,): +-2^(emin + c - 1),
/// +-0 for code 0. Memory-safe for any payload: an emin outside the dense range throws.
template <typename T>
void natural_decode(const WireSpec& spec, const unsigned char* p, T* out, int threads) {
  using B = FloatBits<T>;
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const int emin = natural_payload_emin(p);
  require(emin >= natural_emin_lo(dense_code_of<T>) && emin <= natural_emin_hi(dense_code_of<T>),
          "malformed message: natural-compression emin " + std::to_string(emin) +
              " out of range in an unvalidated payload");
  typename B::U table[kNaturalCodes + 1];
  table[0] = 0;
  for (int c = 1; c <= kNaturalCodes; ++c) {
    const auto v = static_cast<T>(std::ldexp(1.0, emin + c - 1));
    std::memcpy(&table[c], &v, sizeof(T));
  }
  const unsigned char* signs = p + kNaturalEminBytes;
  const unsigned char* codes = signs + packed_bytes(D, 1);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> sgn(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      unpack_block(signs + lo / 8, hi - lo, 1, sgn.data());
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        natural_decode_block<decltype(isa)::value, T>(codes + lo, sgn.data(), hi - lo, table,
                                                      out + lo);
      });
    }
  });
}

// --- TernGrad (Wen et al. 2017) -------------------------------------------------------------
//
// Payload: ceil(D/b) bucket scales s_j = max |x| over the bucket (rounded up to the value
// dtype) | D 2-bit codes (bit 0: nonzero, bit 1: negative; code 2 is invalid). Coordinate i
// is nonzero with probability |x_i| / s_j (u < p, u = uniform53), and decodes to +-s_j.

/// TernGrad codes of x[lo, hi) in one bucket of scale s (> 0): inv = 1 / s, or, when 1 / s
/// overflows (subnormal s), p = |x| / s.
template <Isa I, typename T>
CYCLAD_KERNEL void terngrad_codes(const T* CYCLAD_RESTRICT x, std::size_t lo, std::size_t hi,
                                  double s, double inv, bool divide, std::uint64_t key,
                                  std::uint32_t* CYCLAD_RESTRICT code) {
  for (std::size_t i = lo; i < hi; ++i) {
    const double a = std::fabs(static_cast<double>(x[i]));
    const double p = divide ? a / s : a * inv;
    const double w = uniform53(random_at(key, i));
    const auto nz = static_cast<std::uint32_t>(w < p);
    code[i - lo] = nz | ((nz & sign_bit(x[i])) << 1);
  }
}

template <typename T>
void terngrad_compress(const WireSpec& spec, const T* x, unsigned char* payload, int threads) {
  using B = FloatBits<T>;
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const std::size_t b = static_cast<std::size_t>(spec.bucket);
  const std::size_t nb = (D + b - 1) / b;
  const std::size_t vb = value_bytes(spec.vcode);
  std::vector<double> scales(nb);
  parallel_for(nb, threads, grain_for(b * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    for (std::size_t j = b0; j < b1; ++j) {
      const std::size_t lo = j * b, hi = std::min(D, lo + b);
      typename B::U mx = 0;
      dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
        mx = max_abs_bits<decltype(isa)::value>(x + lo, hi - lo);
      });
      if (mx >= B::kInf) {
        throw std::invalid_argument(
            "TernGrad cannot quantize non-finite values: bucket " + std::to_string(j) +
            " (coordinates " + std::to_string(lo) + ".." + std::to_string(hi - 1) +
            ") holds NaN or Inf; NaN/Inf inputs need top-k, rand-k or identity");
      }
      T m;
      std::memcpy(&m, &mx, sizeof(T));
      scales[j] = store_value_up(static_cast<double>(m), spec.vcode, payload + j * vb);
      if (!finite_in(dense_code_of<T>, scales[j])) {
        throw std::invalid_argument("TernGrad bucket " + std::to_string(j) + " has scale " +
                                    std::to_string(scales[j]) + ", which overflows " +
                                    dense_name(dense_code_of<T>) + "; use float64 input");
      }
    }
  });
  unsigned char* codes = payload + nb * vb;
  const std::uint64_t key = stream_key(spec.seed, Stream::terngrad);
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> code(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      for (std::size_t a = lo; a < hi;) {
        const std::size_t j = a / b;
        const std::size_t e = std::min(hi, (j + 1) * b);
        const double s = scales[j];
        const double inv = s > 0.0 ? 1.0 / s : 0.0;
        const bool divide = !std::isfinite(inv);
        dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
          terngrad_codes<decltype(isa)::value>(x, a, e, s, inv, divide, key,
                                               code.data() + (a - lo));
        });
        a = e;
      }
      pack_block(code.data(), hi - lo, 2, codes + lo / 4);
    }
  });
}

/// Validate a TernGrad payload of the right size: finite non-negative scales that stay finite
/// in the dense dtype, zero padding after the codes, and no code 2.
inline void validate_terngrad(const WireSpec& spec, const unsigned char* p, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const std::size_t nb = (D + spec.bucket - 1) / spec.bucket;
  const std::size_t vb = value_bytes(spec.vcode);
  for (std::size_t j = 0; j < nb; ++j) {
    const double s = load_value(p + j * vb, spec.vcode);
    if (!(std::isfinite(s) && s >= 0.0 && finite_in(spec.dense, s))) {
      throw std::invalid_argument("malformed message: TernGrad scale " + std::to_string(s) +
                                  " of bucket " + std::to_string(j) +
                                  " is not finite and >= 0 in the dense dtype " +
                                  dense_name(spec.dense));
    }
  }
  const unsigned char* codes = p + nb * vb;
  require(padding_is_zero(codes, D, 2), "malformed message: nonzero padding after the codes");
  // A byte holds code 2 where a sign bit (odd bit) is set without its nonzero bit (even bit).
  const std::size_t nbytes = static_cast<std::size_t>(packed_bytes(D, 2));
  const std::size_t first = find_first(nbytes, threads, [&](std::size_t i) {
    return ((codes[i] >> 1) & ~codes[i] & 0x55) != 0;
  });
  if (first < nbytes) {
    std::size_t i = first * 4;
    while (((codes[i / 4] >> (2 * (i % 4))) & 3U) != 2U) ++i;
    throw std::invalid_argument(
        "malformed message: TernGrad code 2 (sign bit without the nonzero bit) at coordinate " +
        std::to_string(i));
  }
}

/// out = T(code & 1) * s * (1 - 2 * (code >> 1)): 0, +s or -s.
template <Isa I, typename T>
CYCLAD_KERNEL void terngrad_decode_block(const std::uint32_t* CYCLAD_RESTRICT code,
                                         std::size_t n, T s, T* CYCLAD_RESTRICT out) {
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(code[i] & 1U) * s * (T(1) - T(2) * static_cast<T>(code[i] >> 1));
  }
}

/// Decode a TernGrad payload of the right size into out (D,): 0 or +-T(s_j). Reads only inside
/// the payload whatever its content; the values are checked by validate_terngrad.
template <typename T>
void terngrad_decode(const WireSpec& spec, const unsigned char* p, T* out, int threads) {
  const std::size_t D = static_cast<std::size_t>(spec.dim);
  const ValueCode vc = spec.vcode;
  const std::size_t vb = value_bytes(vc);
  const std::size_t b = static_cast<std::size_t>(spec.bucket);
  const std::size_t nb = (D + b - 1) / b;
  const unsigned char* codes = p + nb * vb;
  const std::size_t nblocks = (D + kPackBlock - 1) / kPackBlock;
  parallel_for(nblocks, threads, grain_for(kPackBlock * sizeof(T)), [&](std::size_t b0, std::size_t b1) {
    std::vector<std::uint32_t> code(kPackBlock);
    for (std::size_t blk = b0; blk < b1; ++blk) {
      const std::size_t lo = blk * kPackBlock, hi = std::min(D, lo + kPackBlock);
      unpack_block(codes + lo / 4, hi - lo, 2, code.data());
      for (std::size_t a = lo; a < hi;) {
        const std::size_t j = a / b;
        const std::size_t e = std::min(hi, (j + 1) * b);
        const auto s = static_cast<T>(load_value(p + j * vb, vc));
        dispatch([&](auto isa) CYCLAD_INLINE_LAMBDA {
          terngrad_decode_block<decltype(isa)::value>(code.data() + (a - lo), e - a, s, out + a);
        });
        a = e;
      }
    }
  });
}

}  // namespace detail

}  // namespace cyclad::kernels
