// AVX2 + FMA micro-kernels: a 6 x 16 broadcast register tile (12 accumulators, 2 B vectors, 1 broadcast).
#pragma once

#include "lightning/config.hpp"
#if LIGHTNING_HAVE_AVX2

#include <immintrin.h>

#include <cstdint>

#include "lightning/kernels/kernels.hpp"

namespace lightning::kernels {

namespace avx2_detail {

// Lanes [0, count) set: count in [0, 8].
inline __m256i lane_mask(int count) {
  alignas(32) static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - count));
}

// R rows by V vectors of 8 columns; `full` says every lane of every vector is in range, so the loads
// and stores need no mask (the common case, kept separate so its loop has no masked moves).
template <int R, int V, bool full>
inline void tile(int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                 float beta) {
  __m256i mask[V];
  for (int v = 0; v < V; ++v) mask[v] = lane_mask(full ? 8 : (nr - 8 * v < 0 ? 0 : (nr - 8 * v > 8 ? 8 : nr - 8 * v)));
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    __m256 b[V];
    for (int v = 0; v < V; ++v)
      b[v] = full ? _mm256_loadu_ps(B + p * ldb + 8 * v) : _mm256_maskload_ps(B + p * ldb + 8 * v, mask[v]);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + p);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
  const __m256 vbeta = _mm256_set1_ps(beta);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      float* out = C + r * ldc + 8 * v;
      __m256 result = acc[r][v];
      if (beta != 0.0f) {
        const __m256 old = full ? _mm256_loadu_ps(out) : _mm256_maskload_ps(out, mask[v]);
        result = _mm256_fmadd_ps(old, vbeta, result);
      }
      if (full)
        _mm256_storeu_ps(out, result);
      else
        _mm256_maskstore_ps(out, mask[v], result);
    }
}

template <int R>
inline void tile_rows(int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                      int64_t ldc, float beta) {
  if (nr == 16)
    tile<R, 2, true>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else if (nr == 8)
    tile<R, 1, true>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else if (nr < 8)
    tile<R, 1, false>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else
    tile<R, 2, false>(nr, kc, A, lda, B, ldb, C, ldc, beta);
}

}  // namespace avx2_detail

template <>
struct Kernels<Path::avx2> {
  static constexpr int MR = 6, NR = 16;

  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    with_rows<MR>(mr, [&](auto rows) {
      avx2_detail::tile_rows<decltype(rows)::value>(nr, kc, A, lda, B, ldb, C, ldc, beta);
    });
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
    __m256 row[8];
    for (int r = 0; r < 8; ++r) {
      row[r] = _mm256_loadu_ps(src + r * lds);
      if (row_scale) row[r] = _mm256_mul_ps(row[r], _mm256_set1_ps(row_scale[r]));
    }
    // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves: 24 shuffles for 64 floats.
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
      _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x20));
      _mm256_storeu_ps(dst + (c + 4) * ldd, _mm256_permute2f128_ps(quad[c], quad[c + 4], 0x31));
    }
  }
};

}  // namespace lightning::kernels

#endif  // LIGHTNING_HAVE_AVX2
