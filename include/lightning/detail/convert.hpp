// Element conversions between storage types and the fp32 the kernels compute in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lightning/config.hpp"
#include "lightning/detail/buffer.hpp"
#include "lightning/storage.hpp"
#include "lightning/types.hpp"

#if LIGHTNING_HAVE_AVX2 || LIGHTNING_HAVE_AVX512BF16
#include <immintrin.h>
#endif

namespace lightning::detail {

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return static_cast<float>(x); }
inline float to_float(fp16 x) { return static_cast<float>(x); }
template <class T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
template <>
inline bf16 from_float<bf16>(float x) {
  return bf16(x);
}
template <>
inline fp16 from_float<fp16>(float x) {
  return fp16(x);
}

// Eight or sixteen lanes at a time where the path has the instructions; the scalar tail (and
// the scalar path) use the element conversions above, which give the same bits.
#if LIGHTNING_HAVE_AVX2
namespace simd {
inline void load8(const bf16* x, float* y) {  // exact: bf16 is the top half of a float
  const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  _mm256_storeu_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
}
inline void store8(const float* x, bf16* y) {  // round to nearest even, NaN kept quiet, as bf16(float)
  const __m256 f = _mm256_loadu_ps(x);
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
  // Values are < 2^16, so the signed-saturating pack is exact; it packs within 128-bit lanes.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y), _mm256_castsi256_si128(packed));
}
#if LIGHTNING_HAVE_F16C
inline void load8(const fp16* x, float* y) {
  _mm256_storeu_ps(y, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))));
}
inline void store8(const float* x, fp16* y) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(y),
                   _mm256_cvtps_ph(_mm256_loadu_ps(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif
}  // namespace simd
#endif

#if LIGHTNING_HAVE_AVX512BF16
namespace simd {
// VCVTNEPS2BF16 rounds to nearest even like bf16(float) but treats denormal inputs as zero, so
// inputs below 2^-126 in magnitude give a signed zero here.
inline void store16_avx512bf16(const float* x, bf16* y) {
  const __m256bh r = _mm512_cvtneps_pbh(_mm512_loadu_ps(x));
  std::memcpy(static_cast<void*>(y), &r, sizeof r);
}
}  // namespace simd
#endif

/** Which storage types have vector conversions on path P (others convert element by element). */
template <Path P, class T>
inline constexpr bool vector_convert =
    P != Path::scalar && LIGHTNING_HAVE_AVX2 &&
    (std::is_same_v<T, bf16> || (std::is_same_v<T, fp16> && LIGHTNING_HAVE_F16C));

/** y[0, n) = float(x[0, n)). */
template <Path P, class T>
void load_floats(const T* x, int64_t n, float* y) {
  int64_t i = 0;
#if LIGHTNING_HAVE_AVX2
  if constexpr (vector_convert<P, T>)
    for (; i + 8 <= n; i += 8) simd::load8(x + i, y + i);
#endif
  for (; i < n; ++i) y[i] = to_float(x[i]);  // tail of fewer than 8
}

/** float rows as the kernels read them: x itself when it already is float, else converted into buf. */
template <Path P, class T>
const float* as_floats(const T* x, int64_t n, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    load_floats<P>(x, n, buf);
    return buf;
  }
}

/**
 * Rows [t, t + m) of head h of x as floats, and their row stride in ld: in place for float storage,
 * else converted into buf (sized to m rows here; no allocation once it has held a whole block).
 */
template <Path P, class T>
const float* rows_as_floats(const View<const T>& x, int64_t b, int64_t h, int64_t t, int64_t m,
                            Floats& buf, int64_t& ld) {
  if constexpr (std::is_same_v<T, float>) {
    ld = x.seq_stride;
    return x.row(b, h, t);
  } else {
    buf.resize(static_cast<size_t>(m * x.dim));
    for (int64_t j = 0; j < m; ++j) load_floats<P>(x.row(b, h, t + j), x.dim, buf.data() + j * x.dim);
    ld = x.dim;
    return buf.data();
  }
}

/** y[0, n) = T(x[0, n)), rounded to nearest even. */
template <Path P, class T>
void store_floats(const float* x, int64_t n, T* y) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    std::copy_n(x, n, y);
    return;
  }
#if LIGHTNING_HAVE_AVX512BF16
  if constexpr (P == Path::avx512 && std::is_same_v<T, bf16>)
    for (; i + 16 <= n; i += 16) simd::store16_avx512bf16(x + i, y + i);
#endif
#if LIGHTNING_HAVE_AVX2
  if constexpr (vector_convert<P, T>)
    for (; i + 8 <= n; i += 8) simd::store8(x + i, y + i);
#endif
  for (; i < n; ++i) y[i] = from_float<T>(x[i]);  // tail
}

}  // namespace lightning::detail
