// Packing shared by the forward and backward block loops: tiled transposes (plain, row-scaled, or
// both at once) and the finiteness test that decides whether whole register tiles may run over a
// causal mask's zeros.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lightning/kernels/kernels.hpp"

namespace lightning::detail {

/**
 * Calls tile(integral_constant<int, S>, r, c) for the S x S tiles that cover rows [r0, r1) x columns
 * [c0, c1), S from Kernels<P>::TT halving down to 8 over what the wider tiles leave, and
 * edge(r0, r1, c0, c1) for the rectangles that no 8 x 8 tile fits.
 */
template <Path P, int S = kernels::Kernels<P>::TT, class Tile, class Edge>
void cover_tiles(int64_t r0, int64_t r1, int64_t c0, int64_t c1, Tile&& tile, Edge&& edge) {
  const int64_t rs = r0 + (r1 - r0) / S * S, cs = c0 + (c1 - c0) / S * S;
  for (int64_t r = r0; r < rs; r += S)
    for (int64_t c = c0; c < cs; c += S) tile(std::integral_constant<int, S>{}, r, c);
  if constexpr (S > 8) {
    cover_tiles<P, S / 2>(r0, rs, cs, c1, tile, edge);
    cover_tiles<P, S / 2>(rs, r1, c0, c1, tile, edge);
  } else {
    if (cs < c1) edge(r0, rs, cs, c1);
    if (rs < r1) edge(rs, r1, c0, c1);
  }
}

/** The S x S register transposes of Kernels<P> (S = 8, or 16 where TT = 16), plain and dual. */
template <Path P, int S>
void transpose_tile(const float* src, int64_t lds, float* dst, int64_t ldd, const float* scale, bool stream) {
  if constexpr (S == 16)
    kernels::Kernels<P>::transpose_16x16(src, lds, dst, ldd, scale, stream);
  else
    kernels::Kernels<P>::transpose_8x8(src, lds, dst, ldd, scale);
}
template <Path P, int S>
void transpose_tile_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled, int64_t ldds,
                         const float* scale) {
  if constexpr (S == 16)
    kernels::Kernels<P>::transpose_16x16_dual(src, lds, dst, ldd, dst_scaled, ldds, scale);
  else
    kernels::Kernels<P>::transpose_8x8_dual(src, lds, dst, ldd, dst_scaled, ldds, scale);
}

/**
 * dst[c * ldd + r] = scale[r] * src[r * lds + c] for r < rows, c < cols (scale null: 1), in square
 * tiles: the path's register transposes, a loop for the edges. (A column-by-column transpose
 * strides through a few cache sets and thrashes them when rows are 128 floats apart.) `stream`: the
 * 16 x 16 tiles store with non-temporal stores (dst's rows start cache lines, detail/stream.hpp).
 */
template <Path P>
void transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd,
               const float* scale = nullptr, bool stream = false) {
  cover_tiles<P>(
      0, rows, 0, cols,
      [&](auto size, int64_t r, int64_t c) {
        transpose_tile<P, decltype(size)::value>(src + r * lds + c, lds, dst + c * ldd + r, ldd,
                                                 scale ? scale + r : nullptr, stream);
      },
      [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = (scale ? scale[r] : 1.0f) * src[r * lds + c];
      });
}

/** dst[c * ldd + r] = src[r * lds + c] and dst_scaled[c * ldds + r] = scale[r] src[r * lds + c], r < rows, c < cols. */
template <Path P>
void transpose_dual(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd,
                    float* dst_scaled, int64_t ldds, const float* scale) {
  cover_tiles<P>(
      0, rows, 0, cols,
      [&](auto size, int64_t r, int64_t c) {
        transpose_tile_dual<P, decltype(size)::value>(src + r * lds + c, lds, dst + c * ldd + r, ldd,
                                                      dst_scaled + c * ldds + r, ldds, scale + r);
      },
      [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) {
            dst[c * ldd + r] = src[r * lds + c];
            dst_scaled[c * ldds + r] = scale[r] * src[r * lds + c];
          }
      });
}

/**
 * The transpose of src (rows x cols, rows a multiple of 8, cols of 16) in pair layout, for a path
 * with pair tiles (kernels/avx512.hpp): dst[q * ldd + 2 r + s] = scale[r] src[r * lds + 2 q + s],
 * rows q of pairs of src's columns, each holding the pair of every row (scale null: 1).
 */
template <Path P>
void pair_transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd,
                    const float* scale) {
  for (int64_t r = 0; r < rows; r += 8)
    for (int64_t c = 0; c < cols; c += 16)
      kernels::Kernels<P>::pair_transpose_8x8(src + r * lds + c, lds, dst + c / 2 * ldd + 2 * r, ldd,
                                              scale ? scale + r : nullptr);
}

/**
 * Rows [i0, i1) of the causal mask of a block x, lower: row i keeps columns j <= i times
 * rev[j - i] and is zero for i < j < zero_end; rev points into a table read backwards (rev[-t] is
 * the weight of lag t), so each row's loop runs forwards through memory and vectorises. rev is read
 * (and its value dropped) up to rev[zero_end - 1 - i0], so the table runs that far past lag 0: one
 * select per entry makes each row a single loop of whole vectors, where a multiply loop and a zero
 * loop split at the diagonal ran scalar over rows of 16.
 */
inline void mask_lower(int64_t i0, int64_t i1, int64_t zero_end, float* x, int64_t ld, const float* rev) {
  for (int64_t i = i0; i < i1; ++i) {
    float* row = x + i * ld;
    const float* weight = rev - i;
    for (int64_t j = 0; j < zero_end; ++j) {
      const float kept = row[j] * weight[j];
      row[j] = j <= i ? kept : 0.0f;  // a select: 0 * NaN would be NaN
    }
  }
}

/**
 * Rows [j0, j1) of the transposed causal mask of an m x m block, upper: row j is zero for i < j and
 * keeps columns i >= j times lag[i - j]. lag is read (and its value dropped) down to lag[-(j1 - 1)],
 * so the table runs that far before lag 0 (mask_lower says why).
 */
inline void mask_upper(int64_t j0, int64_t j1, int64_t m, float* x, int64_t ld, const float* lag) {
  for (int64_t j = j0; j < j1; ++j) {
    float* row = x + j * ld;
    const float* weight = lag - j;
    for (int64_t i = 0; i < m; ++i) {
      const float kept = row[i] * weight[i];
      row[i] = i >= j ? kept : 0.0f;
    }
  }
}

/** True when no entry of the rows x cols matrix is NaN or infinite. */
inline bool all_finite(int64_t rows, int64_t cols, const float* x, int64_t ldx) {
  // x * 0 is 0 for finite x and NaN otherwise. 64 lanes so that the loop vectorises into four
  // independent sums (one sum waits out the add latency at every vector); the narrower tails sum
  // apart, so that no partial access keeps the wide sums in memory.
  float z[64] = {}, z16[16] = {}, z1 = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ldx;
    int64_t c = 0;
    for (; c + 64 <= cols; c += 64)
      for (int l = 0; l < 64; ++l) z[l] += row[c + l] * 0.0f;
    for (; c + 16 <= cols; c += 16)
      for (int l = 0; l < 16; ++l) z16[l] += row[c + l] * 0.0f;
    for (; c < cols; ++c) z1 += row[c] * 0.0f;
  }
  for (float e : z) z1 += e;
  for (float e : z16) z1 += e;
  return z1 == 0.0f;
}

}  // namespace lightning::detail
