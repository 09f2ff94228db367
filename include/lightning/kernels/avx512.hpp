// AVX-512 F micro-kernels: a 12 x 32 broadcast register tile (24 accumulators, 2 B vectors, 1 broadcast).
#pragma once

#include "lightning/config.hpp"
#if LIGHTNING_HAVE_AVX512

#include <immintrin.h>

#include <cstdint>

#include "lightning/kernels/kernels.hpp"

namespace lightning::kernels {

namespace avx512_detail {

// Lanes [0, count) set, count clamped to [0, 16].
inline __mmask16 lane_mask(int count) {
  return count <= 0 ? __mmask16(0) : count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1u);
}

// R rows by V vectors of 16 columns; `full` says every lane is in range. Masked stores are much slower
// than plain ones on AMD cores (and block store forwarding), so the common full tile uses none.
template <int R, int V, bool full>
inline void tile(int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                 float beta) {
  __mmask16 mask[V];
  for (int v = 0; v < V; ++v) mask[v] = lane_mask(nr - 16 * v);
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    __m512 b[V];
    for (int v = 0; v < V; ++v) b[v] = full ? _mm512_loadu_ps(B + p * ldb + 16 * v) : _mm512_maskz_loadu_ps(mask[v], B + p * ldb + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + p]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
  const __m512 vbeta = _mm512_set1_ps(beta);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      float* out = C + r * ldc + 16 * v;
      __m512 result = acc[r][v];
      if (beta != 0.0f)
        result = _mm512_fmadd_ps(full ? _mm512_loadu_ps(out) : _mm512_maskz_loadu_ps(mask[v], out), vbeta, result);
      if (full)
        _mm512_storeu_ps(out, result);
      else
        _mm512_mask_storeu_ps(out, mask[v], result);
    }
}

template <int R>
inline void tile_rows(int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                      int64_t ldc, float beta) {
  if (nr == 32)
    tile<R, 2, true>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else if (nr == 16)
    tile<R, 1, true>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else if (nr > 16)
    tile<R, 2, false>(nr, kc, A, lda, B, ldb, C, ldc, beta);
  else
    tile<R, 1, false>(nr, kc, A, lda, B, ldb, C, ldc, beta);
}

}  // namespace avx512_detail

template <>
struct Kernels<Path::avx512> {
  static constexpr int MR = 12, NR = 32;

  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    with_rows<MR>(mr, [&](auto rows) {
      avx512_detail::tile_rows<decltype(rows)::value>(nr, kc, A, lda, B, ldb, C, ldc, beta);
    });
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
};

}  // namespace lightning::kernels

#endif  // LIGHTNING_HAVE_AVX512
