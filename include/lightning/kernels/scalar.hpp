// Portable micro-kernels: plain loops over a small register tile, always compiled.
#pragma once

#include <cstdint>

#include "lightning/kernels/kernels.hpp"
#include "lightning/kernels/simd_tile.hpp"

namespace lightning::kernels {

template <>
struct Kernels<Path::scalar> {
  static constexpr int MR = 4, NR = 8, W = 1, TT = 8, NMR = MR, UMR = MR;

  static void gemm_tile2(int mr, int nr, const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                         float beta, bool /*stream: no such store here*/ = false, const float* C0 = nullptr,
                         int64_t ldc0 = 0) {
    float acc[MR][NR] = {};
    if (C0)
      for (int r = 0; r < mr; ++r)
        for (int c = 0; c < nr; ++c) acc[r][c] = C0[r * ldc0 + c];
    for (const simd::Operand* s : {&x, &y}) {
      // A diagonal block's zeros are skipped (simd::Operand): its step d feeds rows r >= d (lower, the
      // last mr steps) or r <= d (upper, the first mr); [p0, p1) are the steps that feed every row.
      const int64_t p0 = s->diagonal < 0 ? mr : 0, p1 = s->diagonal > 0 ? s->k - mr : s->k;
      for (int64_t p = p0; p < p1; ++p)
        for (int r = 0; r < mr; ++r) {
          const float a = s->A[r * s->lda + p];
          for (int c = 0; c < nr; ++c) acc[r][c] += a * s->B[p * s->ldb + c];
        }
      if (s->diagonal != 0)
        for (int d = 0; d < mr; ++d) {
          const int64_t p = s->diagonal > 0 ? p1 + d : d;
          for (int r = s->diagonal > 0 ? d : 0; r < (s->diagonal > 0 ? mr : d + 1); ++r) {
            const float a = s->A[r * s->lda + p];
            for (int c = 0; c < nr; ++c) acc[r][c] += a * s->B[p * s->ldb + c];
          }
        }
    }
    for (int r = 0; r < mr; ++r)
      for (int c = 0; c < nr; ++c) {
        float* out = &C[r * ldc + c];
        *out = beta == 0.0f ? acc[r][c] : beta * *out + acc[r][c];
      }
  }
  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    gemm_tile2(mr, nr, {kc, A, lda, B, ldb}, {0, A, lda, B, ldb}, C, ldc, beta);
  }

  static void axpby(int64_t n, float a, const float* x, float b, float* y) {
    for (int64_t i = 0; i < n; ++i) y[i] = a * x[i] + b * y[i];
  }
  static void axpy(int64_t n, float a, const float* x, float* y) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
  }

  static void decode_row(int64_t n, float b, bool slow, float kr, const float* v, float* s, float c, float* acc) {
    for (int64_t i = 0; i < n; ++i) {
      const float decayed = slow ? s[i] + b * s[i] : b * s[i];
      s[i] = decayed + kr * v[i];
      acc[i] += c * s[i];
    }
  }

  static void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale) {
    for (int r = 0; r < 8; ++r) {
      const float s = row_scale ? row_scale[r] : 1.0f;
      for (int c = 0; c < 8; ++c) dst[c * ldd + r] = s * src[r * lds + c];
    }
  }
  static void transpose_8x8_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
                                 int64_t ldds, const float* scale) {
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) {
        dst[c * ldd + r] = src[r * lds + c];
        dst_scaled[c * ldds + r] = scale[r] * src[r * lds + c];
      }
  }
};

}  // namespace lightning::kernels
