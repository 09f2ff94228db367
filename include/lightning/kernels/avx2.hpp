// AVX2 + FMA micro-kernels: a 4 x 24 broadcast register tile (12 accumulators, 3 B vectors, 1 broadcast:
// all 16 ymm registers, no spill in an AVX2-only build). Against the 6 x 16 tile it replaced, a k step
// issues 4 broadcasts and 3 loads per 12 FMAs instead of 6 and 2, and the default block (m = 24) is
// one column tile, so the backward's m-wide products (dK^T, the triangles) have no one-vector tiles:
// on Zen 4, old and new alternated in one process (n = 16384, heads 8), the backward at d = 128 ran
// 0.93-0.99x the time, at d = 64 0.95-0.99x, the forward 0.98-1.04x (neutral). Tiles at most 16
// columns wide (d = 128 ends its rows with 16 + 16) take 6 rows, NMR: on Zen 5, on hot data, the
// 4 x 16 tile ran at 0.84-0.91x the 4 x 24 tile's rate, the 6 x 16 tile at 0.98-1.01x (k = 16, 24, 128).
// The full 4 x 24 tile also stores its sums transposed (gemm_tile2_transposed, Ops::store_columns):
// the backward's dK straight from dK^T's tiles (detail/backward_tiled.hpp).
#pragma once

#include "lightning/config.hpp"
#if LIGHTNING_HAVE_AVX2

#include <immintrin.h>

#include <cstdint>

#include "lightning/kernels/kernels.hpp"
#include "lightning/kernels/simd_tile.hpp"

namespace lightning::kernels {

namespace avx2_detail {

/** The 8-lane vector for simd::tile. */
struct Ops {
  using Vec = __m256;
  using Mask = __m256i;
  static constexpr int W = 8;
  static constexpr bool unroll_k = true;  // the k loop of simd::tile four steps at a time
  // Lanes [0, count) set, count clamped to [0, 8].
  static Mask lane_mask(int count) {
    alignas(32) static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    count = count < 0 ? 0 : count > 8 ? 8 : count;
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - count));
  }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec set1(float x) { return _mm256_set1_ps(x); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec maskload(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, Vec x) { _mm256_storeu_ps(p, x); }
  static void maskstore(float* p, Mask m, Vec x) { _mm256_maskstore_ps(p, m, x); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static void stream(float* p, Vec x) { _mm256_stream_ps(p, x); }  // p 32-byte aligned
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  // Vector v of rows 0-3 as 8 columns of 4 floats, C[l * ldc + r] = lane l of acc[r][v]: a 4 x 8
  // transpose in 8 shuffles, each 128-bit half a column.
  template <int V>
  [[gnu::always_inline]] static void store_columns(const Vec (&acc)[4][V], int v, float* C, int64_t ldc) {
    const __m256 t0 = _mm256_unpacklo_ps(acc[0][v], acc[1][v]), t1 = _mm256_unpackhi_ps(acc[0][v], acc[1][v]);
    const __m256 t2 = _mm256_unpacklo_ps(acc[2][v], acc[3][v]), t3 = _mm256_unpackhi_ps(acc[2][v], acc[3][v]);
    const __m256 col[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),  // columns l, l + 4
                           _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
    for (int l = 0; l < 4; ++l) {
      _mm_storeu_ps(C + l * ldc, _mm256_castps256_ps128(col[l]));
      _mm_storeu_ps(C + (l + 4) * ldc, _mm256_extractf128_ps(col[l], 1));
    }
  }
};

/**
 * The 8 x 8 transpose in registers: col[c] holds element c of every row (lane r from row r).
 * Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves: 24 shuffles for 64 floats.
 */
[[gnu::always_inline]] inline void transpose_regs(const __m256 (&row)[8], __m256 (&col)[8]) {
  __m256 pair[8], quad[8];
  for (int r = 0; r < 8; r += 2) {
    pair[r] = _mm256_unpacklo_ps(row[r], row[r + 1]);
    pair[r + 1] = _mm256_unpackhi_ps(row[r], row[r + 1]);
  }
  for (int r = 0; r < 8; r += 4) {
    quad[r] = _mm256_shuffle_ps(pair[r], pair[r + 2], 0x44);
    quad[r + 1] = _mm256_shuffle_ps(pair[r], pair[r + 2], 0xEE);
    quad[r + 2] = _mm256_shuffle_ps(pair[r + 1], pair[r + 3], 0x44);
    quad[r + 3] = _mm256_shuffle_ps(pair[r + 1], pair[r + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    col[c] = _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x20);
    col[c + 4] = _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x31);
  }
}

/** dst[c * ldd + r] = row_scale[r] src[r * lds + c] over an 8 x 8 tile (row_scale null: 1). */
inline void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale) {
  __m256 row[8], col[8];
  for (int r = 0; r < 8; ++r) {
    row[r] = _mm256_loadu_ps(src + r * lds);
    if (row_scale) row[r] = _mm256_mul_ps(row[r], _mm256_set1_ps(row_scale[r]));
  }
  transpose_regs(row, col);
  for (int c = 0; c < 8; ++c) _mm256_storeu_ps(dst + c * ldd, col[c]);
}

/**
 * dst[c * ldd + r] = src[r * lds + c] and dst_scaled[c * ldds + r] = scale[r] src[r * lds + c] over an
 * 8 x 8 tile: one transpose serves both (K^T and the decayed K^T of the forward).
 */
[[gnu::always_inline]] inline void transpose_8x8_dual(const float* src, int64_t lds, float* dst, int64_t ldd,
                                                      float* dst_scaled, int64_t ldds, const float* scale) {
  __m256 row[8], col[8];
  for (int r = 0; r < 8; ++r) row[r] = _mm256_loadu_ps(src + r * lds);
  transpose_regs(row, col);
  const __m256 sc = _mm256_loadu_ps(scale);  // lane r of every output vector is source row r
  for (int c = 0; c < 8; ++c) {
    _mm256_storeu_ps(dst + c * ldd, col[c]);
    _mm256_storeu_ps(dst_scaled + c * ldds, _mm256_mul_ps(col[c], sc));
  }
}

}  // namespace avx2_detail

template <>
struct Kernels<Path::avx2> {
  // NMR: the rows of tiles at most 16 columns wide (12 accumulators, 2 B vectors, 1 broadcast).
  static constexpr int MR = 4, NR = 24, W = 8, TT = 8, NMR = 6, UMR = MR;

  static void gemm_tile2(int mr, int nr, const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                         float beta, bool stream = false, const float* C0 = nullptr, int64_t ldc0 = 0) {
    simd::gemm_tile2<avx2_detail::Ops, MR, NR, NMR>(mr, nr, x, y, C, ldc, beta, stream, C0, ldc0);
  }
  static void gemm_tile2_transposed(const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                                    const float* S = nullptr, int64_t lds = 0) {
    simd::tile_transposed<avx2_detail::Ops, MR, NR / W>(x, y, C, ldc, S, lds);
  }
  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    simd::gemm_tile<avx2_detail::Ops, MR, NR, NMR>(mr, nr, kc, A, lda, B, ldb, C, ldc, beta);
  }

  static void axpby(int64_t n, float a, const float* x, float b, float* y) {
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_mul_ps(vb, _mm256_loadu_ps(y + i))));
    for (; i < n; ++i) y[i] = a * x[i] + b * y[i];  // tail of fewer than 8
  }
  static void axpy(int64_t n, float a, const float* x, float* y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];  // tail of fewer than 8
  }
  static void decode_row(int64_t n, float b, bool slow, float kr, const float* v, float* s, float c, float* acc) {
    const __m256 vb = _mm256_set1_ps(b), vk = _mm256_set1_ps(kr), vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_loadu_ps(s + i);
      const __m256 y = _mm256_fmadd_ps(vk, _mm256_loadu_ps(v + i), slow ? _mm256_fmadd_ps(vb, x, x) : _mm256_mul_ps(vb, x));
      _mm256_storeu_ps(s + i, y);
      _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vc, y, _mm256_loadu_ps(acc + i)));
    }
    for (; i < n; ++i) {  // tail of fewer than 8
      s[i] = kr * v[i] + (slow ? b * s[i] + s[i] : b * s[i]);
      acc[i] += c * s[i];
    }
  }

  static void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale) {
    avx2_detail::transpose_8x8(src, lds, dst, ldd, row_scale);
  }
  static void transpose_8x8_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
                                 int64_t ldds, const float* scale) {
    avx2_detail::transpose_8x8_dual(src, lds, dst, ldd, dst_scaled, ldds, scale);
  }
};


}  // namespace lightning::kernels

#endif  // LIGHTNING_HAVE_AVX2
