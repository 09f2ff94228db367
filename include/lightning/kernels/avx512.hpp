// AVX-512 F micro-kernels: an 8 x 48 broadcast register tile (24 accumulators, 3 B vectors and a
// broadcast: 28 of the 32 registers), and pair tiles for products one vector wide (pair_tile).
// 8 x 48 rather than 8 x 32: on an Intel Xeon with two 512-bit FMA pipes (family 6, model 167 as KVM
// reports it) the 8 x 32 tile reached 70% of the FMA peak on hot data, 8 x 48 76%, and the backward
// at d = 128 took 0.941x the time (the forward 0.969x) with the same bits (tools/ab, 16 pairs,
// 2026-12-05). d = 128 runs as 48 + 48 + 32 columns (col_tile); d = 64 as 32 + 32, as before.
#pragma once

#include "lightning/config.hpp"
#if LIGHTNING_HAVE_AVX512

#include <immintrin.h>

#include <cstdint>
#include <cstring>

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

/** transpose_16x16 into dst and, scaled by row, into dst_scaled (row stride ldds): one transpose serves both. */
inline void transpose_16x16_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
                                 int64_t ldds, const float* scale) {
  __m512 x[16];
  for (int r = 0; r < 16; ++r) x[r] = _mm512_loadu_ps(src + r * lds);
  transpose_regs(x);
  const __m512 sc = _mm512_loadu_ps(scale);
  for (int c = 0; c < 16; ++c) {
    _mm512_storeu_ps(dst + c * ldd, x[c]);
    _mm512_storeu_ps(dst_scaled + c * ldds, _mm512_mul_ps(x[c], sc));
  }
}

/**
 * Pair tiles: C[mr x 16] = beta C + x.A x.B + y.A y.B for products one vector (16 columns) wide, with
 * each B in pair layout: B[q * ldb + 2 j + s] holds the entry of row 2 q + s, column j (made by
 * pair_transpose_8x8 and zip_row_pairs below), and k even. A k step takes A's entries 2 q and 2 q + 1
 * in one 8-byte broadcast, which feeds two FMAs (columns 0-7 and 8-15, each lane pair summing the even
 * and the odd steps apart, added at the end), where the 8 x 16 broadcast tile feeds one: on Zen 5 a
 * tile one vector wide is bound by its loads, broadcasts included, not by the FMA pipes (on hot data
 * the 8 x 16 tile ran at 0.73-0.80x the 8 x 32 tile's rate, this one at 0.98-1.03x; at k = 16 with
 * a beta, the state update's shape, this one is slower: its end costs more).
 * Up to PMR = 10 rows (20 accumulators; Kernels<Path::avx512>::PMR): on the Intel Xeon (family 6
 * model 167) the avx512 backward at d = 128 took 0.988-0.994x the time of 8-row tiles (tools/ab, three
 * runs of 30 pairs, the same bits); at 12 rows 0.996x; the loops unrolled but 8 rows 1.000x. Every
 * loop over the rows is unrolled by pragma: rolled, the accumulators of 10 rows lived in memory (a
 * third of the rate).
 */
template <int R>
[[gnu::noinline]] void pair_tile(const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc, float beta) {
  __m512 acc[R][2];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  _Pragma("GCC unroll 2") for (const simd::Operand* o : {&x, &y}) {
    const float* A = o->A;
    const float* B = o->B;
    const int64_t lda = o->lda, ldb = o->ldb;
    for (int64_t q = 0; q < o->k / 2; ++q) {
      const __m512 b0 = _mm512_loadu_ps(B + q * ldb), b1 = _mm512_loadu_ps(B + q * ldb + 16);
      _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
        double pair;
        std::memcpy(&pair, A + r * lda + 2 * q, sizeof pair);
        const __m512 a = _mm512_castpd_ps(_mm512_set1_pd(pair));
        acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
      }
    }
  }
  // Lane 2 j + s of acc[r][h] holds column 8 h + j's sum over the steps of parity s. (The zero-masked
  // shuffles under all-ones masks are the plain ones: transpose_regs says why.)
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 vbeta = _mm512_set1_ps(beta);
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
    const __m512 lo = _mm512_add_ps(acc[r][0], _mm512_maskz_permute_ps(0xFFFF, acc[r][0], 0xB1));
    const __m512 hi = _mm512_add_ps(acc[r][1], _mm512_maskz_permute_ps(0xFFFF, acc[r][1], 0xB1));
    const __m512 sum = _mm512_permutex2var_ps(lo, evens, hi);
    float* out = C + r * ldc;
    if (beta == 0.0f)
      _mm512_storeu_ps(out, sum);
    else if (beta == 1.0f)
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), sum));
    else
      _mm512_storeu_ps(out, _mm512_fmadd_ps(_mm512_loadu_ps(out), vbeta, sum));
  }
}

/**
 * The pair layout of an 8 x 16 block's transpose: dst[q * ldd + 2 r + s] = scale[r] src[r * lds + 2 q + s]
 * for rows r < 8 and q < 8 (scale null: 1): an 8 x 8 transpose of 8-byte pairs, 24 shuffles.
 */
inline void pair_transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* scale) {
  __m512d x[8], t[8];
  for (int r = 0; r < 8; ++r) {
    const __m512 row = _mm512_loadu_ps(src + r * lds);
    x[r] = _mm512_castps_pd(scale ? _mm512_mul_ps(row, _mm512_set1_ps(scale[r])) : row);
  }
  for (int r = 0; r < 8; r += 2) {
    t[r] = _mm512_maskz_unpacklo_pd(0xFF, x[r], x[r + 1]);      // pairs 0, 2, 4, 6 of rows r, r + 1
    t[r + 1] = _mm512_maskz_unpackhi_pd(0xFF, x[r], x[r + 1]);  // pairs 1, 3, 5, 7
  }
  for (int h = 0; h < 8; h += 4)
    for (int i = 0; i < 2; ++i) {  // 128-bit lanes 0, 2 and 1, 3 of rows h .. h + 3
      x[h + i] = _mm512_maskz_shuffle_f64x2(0xFF, t[h + i], t[h + i + 2], 0x88);
      x[h + i + 2] = _mm512_maskz_shuffle_f64x2(0xFF, t[h + i], t[h + i + 2], 0xDD);
    }
  // x[i] holds pairs i and i + 4 of rows 0-3 (x[i + 4]: of rows 4-7).
  for (int i = 0; i < 4; ++i) {
    const __m512d first = _mm512_maskz_shuffle_f64x2(0xFF, x[i], x[i + 4], 0x88);
    const __m512d second = _mm512_maskz_shuffle_f64x2(0xFF, x[i], x[i + 4], 0xDD);
    _mm512_storeu_pd(reinterpret_cast<double*>(dst + i * ldd), first);
    _mm512_storeu_pd(reinterpret_cast<double*>(dst + (i + 4) * ldd), second);
  }
}

/** dst[q * kPairRow + 2 j + s] = src[(2 q + s) * lds + j] for q < rows / 2, j < 16: rows zipped in pairs. */
inline void zip_row_pairs(int64_t rows, const float* src, int64_t lds, float* dst) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t q = 0; q < rows / 2; ++q) {
    const __m512 a = _mm512_loadu_ps(src + 2 * q * lds), b = _mm512_loadu_ps(src + (2 * q + 1) * lds);
    _mm512_storeu_ps(dst + kPairRow * q, _mm512_permutex2var_ps(a, lo, b));
    _mm512_storeu_ps(dst + kPairRow * q + 16, _mm512_permutex2var_ps(a, hi, b));
  }
}

}  // namespace avx512_detail

template <>
struct Kernels<Path::avx512> {
  static constexpr int MR = 8, NR = 48, W = 16, TT = 16, NMR = MR;
  // Plain products (the state updates) take 9 x 48 tiles where their rows allow (gemm): 27
  // accumulators, 3 B vectors and a broadcast, 31 of the 32 registers. On hot data at k = 16 (the
  // backward's state updates) 9 x 48 ran at 149-150 GFLOP/s against 146-147 for 8 x 48; in the
  // backward (Intel Xeon, family 6 model 167, d = 128, tools/ab, 30-40 pairs) 0.9857-0.9892x the
  // time in six runs of seven (0.9978x in the other), the forward 0.996-1.008x, the same bits.
  static constexpr int UMR = MR + 1;

  static void gemm_tile2(int mr, int nr, const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                         float beta, bool stream = false, const float* C0 = nullptr, int64_t ldc0 = 0) {
    simd::gemm_tile2<avx512_detail::Ops, MR, NR, NMR>(mr, nr, x, y, C, ldc, beta, stream, C0, ldc0);
  }
  static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float* C, int64_t ldc, float beta) {
    simd::gemm_tile<avx512_detail::Ops, MR, NR, NMR, UMR>(mr, nr, kc, A, lda, B, ldb, C, ldc, beta);
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
  static void transpose_8x8_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
                                 int64_t ldds, const float* scale) {
    avx2_detail::transpose_8x8_dual(src, lds, dst, ldd, dst_scaled, ldds, scale);
  }
  static void transpose_16x16(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale,
                              bool stream = false) {
    avx512_detail::transpose_16x16(src, lds, dst, ldd, row_scale, stream);
  }
  static void transpose_16x16_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
                                   int64_t ldds, const float* scale) {
    avx512_detail::transpose_16x16_dual(src, lds, dst, ldd, dst_scaled, ldds, scale);
  }

  // Pair tiles (avx512_detail::pair_tile): products one vector wide, B in pair layout, k even; up to
  // PMR rows.
  static constexpr bool pair_tiles = true;
  static constexpr int PMR = 10;
  static void gemm_pair_tile(int mr, const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
                             float beta) {
    with_rows<PMR>(mr, [&](auto rows) { avx512_detail::pair_tile<decltype(rows)::value>(x, y, C, ldc, beta); });
  }
  static void pair_transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* scale) {
    avx512_detail::pair_transpose_8x8(src, lds, dst, ldd, scale);
  }
  static void zip_row_pairs(int64_t rows, const float* src, int64_t lds, float* dst) {
    avx512_detail::zip_row_pairs(rows, src, lds, dst);
  }
};

}  // namespace lightning::kernels

#endif  // LIGHTNING_HAVE_AVX512
