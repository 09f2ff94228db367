// 16-bit storage types for q, k, v and o: bf16 and IEEE fp16, converted to fp32 for every sum.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace lightning {

namespace detail {
inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
/** A 16-bit storage value with the given bits. */
template <class T>
T with_bits(uint16_t b) {
  T r;
  r.bits = b;
  return r;
}
}  // namespace detail

/**
 * bfloat16: the top 16 bits of an IEEE float32 (8 exponent bits, 7 mantissa bits). Conversion
 * from float rounds to nearest, ties to even; NaN stays NaN (quiet). Conversion to float is exact.
 */
struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  explicit bf16(float x) : bits(round(x)) {}
  explicit operator float() const { return detail::bits_float(static_cast<uint32_t>(bits) << 16); }
  static bf16 from_bits(uint16_t b) { return detail::with_bits<bf16>(b); }

 private:
  static uint16_t round(float x) {
    const uint32_t u = detail::float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN: keep it quiet
    // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even; a carry into
    // the exponent is the right result (up to infinity for the largest finite values).
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
};

/**
 * IEEE 754 binary16 (5 exponent bits, 10 mantissa bits, subnormals, largest finite 65504).
 * Conversion from float rounds to nearest, ties to even, overflowing to infinity; NaN stays NaN.
 */
struct fp16 {
  uint16_t bits = 0;

  fp16() = default;
  explicit fp16(float x) : bits(round(x)) {}
  explicit operator float() const {
    const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1fu,
                   mant = bits & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
      const float m = static_cast<float>(mant) * 5.9604644775390625e-8f;
      return detail::bits_float(sign | detail::float_bits(m));
    }
    if (exp == 31) return detail::bits_float(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));  // NaN: quiet
    return detail::bits_float(sign | ((exp + 112) << 23) | (mant << 13));  // rebias 15 -> 127
  }
  static fp16 from_bits(uint16_t b) { return detail::with_bits<fp16>(b); }

 private:
  static uint16_t round(float x) {
    const uint32_t u = detail::float_bits(x), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
    if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to infinity
    if (a >= 0x38800000u)  // normal half: rebias the exponent, round the 13 dropped bits to nearest even
      return static_cast<uint16_t>(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
    if (a < 0x33000000u) return static_cast<uint16_t>(sign);  // below 2^-25 (ties to the even 0)
    // Subnormal half: the value in units of 2^-24 is mant >> shift, rounded to nearest even.
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - (a >> 23);
    const uint32_t rounded = (mant + (1u << (shift - 1)) - 1u + ((mant >> shift) & 1u)) >> shift;
    return static_cast<uint16_t>(sign | rounded);
  }
};

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>, "bf16 is 16 bits of storage");
static_assert(sizeof(fp16) == 2 && std::is_trivially_copyable_v<fp16>, "fp16 is 16 bits of storage");

}  // namespace lightning
