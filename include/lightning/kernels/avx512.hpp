// AVX-512 F micro-kernels: an 8 x 32 broadcast register tile (16 accumulators, 2 B vectors, broadcasts
// folded into the FMAs).
#pragma once

#include "lightning/config.hpp"
#if LIGHTNING_HAVE_AVX512

#include <immintrin.h>

#include <cstdint>

#include "lightning/kernels/avx2.hpp"
#include "lightning/kernels/kernels.hpp"
#include "lightning/kernels/simd_tile.hpp"


namespace lightning::kernels {

namespace avx512_detail {

// Lanes [0, count) set, count clamped to [0, 16].
inline __mmask16 lane_mask(int count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1u);
}

/** The 16-lane vector for simd::tile. */
struct Ops {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr int W = 16;
  static constexpr bool unroll_k = false;  // unrolled, the k loop of simd::tile measured 1-2% slower
  static Mask lane_mask(int count) { return avx512_detail::lane_mask(count); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec set1(float x) { return _mm512_set1_ps(x); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec maskload(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Vec x) { _mm512_storeu_ps(p, x); }
  static void maskstore(float* p, Mask m, Vec x) { _mm512_mask_storeu_ps(p, m, x); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static void stream(float* p, Vec x) { _mm512_stream_ps(p, x); }  // p on a 64-byte line
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
};

/**
 * The 16 x 16 transpose in registers: col[c] holds element c of every row (lane r from row r).
 * Interleave pairs of rows, then pairs of pairs (4 x 4 blocks within each 128-bit lane), then move
 * 128-bit lanes twice: 64 shuffles for 256 floats, against 96 for four 8 x 8 transposes.
 */
[[gnu::always_inline]] inline void transpose_regs(__m512 (&x)[16]) {
  // The zero-masked forms under an all-ones mask are the same instructions; the plain forms pass
  // _mm512_undefined_ps(), which g++ 12 reports under -Wall as used uninitialised.
  constexpr __mmask16 kAll = 0xFFFF;
  __m512 t[16];
  for (int r = 0; r < 16; r += 2) {
    t[r] = _mm512_maskz_unpacklo_ps(kAll, x[r], x[r + 1]);
    t[r + 1] = _mm512_maskz_unpackhi_ps(kAll, x[r], x[r + 1]);
  }
  for (int r = 0; r < 16; r += 4) {
    x[r] = _mm512_maskz_shuffle_ps(kAll, t[r], t[r + 2], 0x44);
    x[r + 1] = _mm512_maskz_shuffle_ps(kAll, t[r], t[r + 2], 0xEE);
    x[r + 2] = _mm512_maskz_shuffle_ps(kAll, t[r + 1], t[r + 3], 0x44);
    x[r + 3] = _mm512_maskz_shuffle_ps(kAll, t[r + 1], t[r + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_maskz_shuffle_f32x4(kAll, x[h + i], x[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_maskz_shuffle_f32x4(kAll, x[h + i], x[h + i + 4], 0xDD);
    }
  for (int i = 0; i < 8; ++i) {
    x[i] = _mm512_maskz_shuffle_f32x4(kAll, t[i], t[i + 8], 0x88);
    x[i + 8] = _mm512_maskz_shuffle_f32x4(kAll, t[i], t[i + 8], 0xDD);
  }
}

/**
 * dst[c * ldd + r] = row_scale[r] src[r * lds + c] over a 16 x 16 tile (row_scale null: 1); `stream`:
 * non-temporal stores, each row of dst on a 64-byte line.
 */
inline void transpose_16x16(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale,
                            bool stream = false) {
  __m512 x[16];
  for (int r = 0; r < 16; ++r) x[r] = _mm512_loadu_ps(src + r * lds);
  transpose_regs(x);
  const __m512 sc = row_scale ? _mm512_loadu_ps(row_scale) : _mm512_set1_ps(1.0f);  // lane r: source row r
  for (int c = 0; c < 16; ++c) {
    const __m512 y = row_scale ? _mm512_mul_ps(x[c], sc) : x[c];
    if (stream)
      _mm512_stream_ps(dst + c * ldd, y);
    else
      _mm512_storeu_ps(dst + c * ldd, y);
  }
}

/** transpose_16x16 into dst and, scaled by row, into dst_scaled: one transpose serves both. */
inline void transpose_16x16_dual(const float* src, int64_t lds, float* dst, float* dst_scaled, int64_t ldd,
                                 const float* scale) {
  __m512 x[16];
  for (int r = 0; r < 16; ++r) x[r] = _mm512_loadu_ps(src + r * lds);
  transpose_regs(x);
  const __m512 sc = _mm512_loadu_ps(scale);
  for (int c = 0; c < 16; ++c) {
    _mm512_storeu_ps(dst + c * ldd, x[c]);
    _mm512_storeu_ps(dst_scaled + c * ldd, _mm512_mul_ps(x[c], sc));
  }
}

}  // namespace avx512_detail

template <>
struct Kernels<Path::avx512> {
  static constexpr int MR = 8, NR = 32, W = 16, TT = 16;

  static void gemm_tile2(int mr, int nr, const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                         float beta, bool stream = false) {
    simd::gemm_tile2<avx512_detail::Ops, MR, NR>(mr, nr, x, y, C, ldc, beta, stream);
  }
  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    simd::gemm_tile<avx512_detail::Ops, MR, NR>(mr, nr, kc, A, lda, B, ldb, C, ldc, beta);
  }

  static void axpby(int64_t n, float a, const float* x, float b, float* y) {
    const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_detail::lane_mask(static_cast<int>(n - i));
      const __m512 yv = _mm512_maskz_loadu_ps(m, y + i);
      _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_mul_ps(vb, yv)));
    }
  }
  static void axpy(int64_t n, float a, const float* x, float* y) {
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = avx512_detail::lane_mask(static_cast<int>(n - i));
      _mm512_mask_storeu_ps(y + i, m,
                            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
  }
  static void decode_row(int64_t n, float b, bool slow, float kr, const float* v, float* s, float c, float* acc) {
    const __m512 vb = _mm512_set1_ps(b), vk = _mm512_set1_ps(kr), vc = _mm512_set1_ps(c);
    const auto step = [&](int64_t i, __mmask16 m) {
      const __m512 x = _mm512_maskz_loadu_ps(m, s + i);
      const __m512 y = _mm512_fmadd_ps(vk, _mm512_maskz_loadu_ps(m, v + i), slow ? _mm512_fmadd_ps(vb, x, x) : _mm512_mul_ps(vb, x));
      _mm512_mask_storeu_ps(s + i, m, y);
      _mm512_mask_storeu_ps(acc + i, m, _mm512_fmadd_ps(vc, y, _mm512_maskz_loadu_ps(m, acc + i)));
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) step(i, 0xffff);  // full vectors: the mask is a constant the compiler drops
    if (i < n) step(i, avx512_detail::lane_mask(static_cast<int>(n - i)));
  }

  static void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale) {
    avx2_detail::transpose_8x8(src, lds, dst, ldd, row_scale);
  }
  static void transpose_8x8_dual(const float* src, int64_t lds, float* dst, float* dst_scaled, int64_t ldd,
                                 const float* scale) {
    avx2_detail::transpose_8x8_dual(src, lds, dst, dst_scaled, ldd, scale);
  }
  static void transpose_16x16(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale,
                              bool stream = false) {
    avx512_detail::transpose_16x16(src, lds, dst, ldd, row_scale, stream);
  }
  static void transpose_16x16_dual(const float* src, int64_t lds, float* dst, float* dst_scaled, int64_t ldd,
                                   const float* scale) {
    avx512_detail::transpose_16x16_dual(src, lds, dst, dst_scaled, ldd, scale);
  }
};

}  // namespace lightning::kernels

#endif  // LIGHTNING_HAVE_AVX512
