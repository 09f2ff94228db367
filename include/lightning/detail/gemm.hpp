// The one loop over register tiles that turns a path's gemm_tile into a small matrix product.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <utility>

#include "lightning/kernels/kernels.hpp"
#include "lightning/kernels/simd_tile.hpp"

namespace lightning::detail {

/** Which part of C = beta C + A B is computed. */
enum class Part {
  full,
  lower_k,  ///< row i uses only k <= i (the product with a causally masked P: a NaN or Inf in a
            ///< later row of B must not reach row i through a masked zero, 0 * NaN being NaN)
  upper_k,  ///< row i uses only k >= i (the product with a transposed masked P: a NaN or Inf in an
            ///< earlier row of B must not reach row i through a masked zero)
};

/**
 * The rows of the register tile that starts `rest` rows before the end, tiles of at most `max_rows`:
 * max_rows, except that a rest between max_rows and 2 max_rows is split into two near-equal tiles
 * (20 rows at 8 end with 6 + 6, not 8 + 4: a tile of few rows has too few accumulators to hide the
 * FMA latency and runs slower).
 */
inline int row_tile(int64_t rest, int max_rows) {
  return rest > max_rows && rest < 2 * max_rows ? static_cast<int>((rest + 1) / 2)
                                                : static_cast<int>(std::min<int64_t>(max_rows, rest));
}

/** The most rows of a path's register tile nr columns wide: Kernels<P>::MR, or NMR up to NR - W columns. */
template <Path P>
inline int tile_rows_for(int64_t nr) {
  using Ker = kernels::Kernels<P>;
  return nr <= Ker::NR - Ker::W ? Ker::NMR : Ker::MR;
}

/**
 * The columns of the register tile that starts `rest` columns before the end: NR, except that a rest
 * between NR and 2 NR is split into two tiles of whole vectors, the first the wider (128 columns at
 * NR = 24, W = 8 end with 16 + 16, not 24 + 8: a one-vector tile of MR = 4 rows has 4 accumulators,
 * too few to hide the FMA latency). Like row_tile, it never changes how many tiles cover a row.
 */
template <Path P>
inline int col_tile(int64_t rest) {
  using Ker = kernels::Kernels<P>;
  if (rest > Ker::NR && rest < 2 * Ker::NR) return static_cast<int>((rest + 2 * Ker::W - 1) / (2 * Ker::W) * Ker::W);
  return static_cast<int>(std::min<int64_t>(Ker::NR, rest));
}

/**
 * The k range of row tile [i0, i0 + mr) in the part `part` of A B (inner dimension K; K >= i0 + mr
 * for the triangles), as a tile operand over column j0: lower_k runs k in [0, i0 + mr), its last mr
 * steps a diagonal block; upper_k k in [i0, K), its first mr steps one; full every k.
 */
inline kernels::simd::Operand part_operand(Part part, int64_t i0, int mr, int64_t K, const float* A, int64_t lda,
                                           const float* B, int64_t ldb, int64_t j0) {
  const int64_t k0 = part == Part::upper_k ? i0 : 0, k1 = part == Part::lower_k ? i0 + mr : K;
  const int diagonal = part == Part::lower_k ? 1 : part == Part::upper_k ? -1 : 0;
  return {k1 - k0, A + i0 * lda + k0, lda, B + k0 * ldb + j0, ldb, 0, diagonal};
}

/** A callable that does nothing: the default after_tile of the loops below. */
struct NoOp {
  void operator()() const {}
};

/**
 * How many of an M-row column tile's first row tiles a plain product (gemm, Part::full) runs at
 * Kernels<P>::UMR rows over NR columns: the most b for which the other M - b UMR rows make whole
 * MR-row tiles (128 rows at 9 and 8: 8 x 9 + 7 x 8), 0 where none does (then row_tile as elsewhere).
 */
template <Path P>
inline int64_t wide_row_tiles(int64_t M) {
  using Ker = kernels::Kernels<P>;
  if constexpr (Ker::UMR != Ker::MR)
    for (int64_t b = M / Ker::UMR; b > 0; --b)
      if ((M - b * Ker::UMR) % Ker::MR == 0) return b;
  return 0;
}

/**
 * The part `part` of C = beta C + A B (M x N, inner dimension K); after_tile() runs after each register
 * tile. By column tiles, each with the rows its width allows (tile_rows_for; a plain product's NR-wide
 * column at UMR rows first, wide_row_tiles). gemm_plus_triangle and
 * gemm_plus_lower_right repeat these two loop heads: one helper calling a lambda per tile measured
 * 1-2% slower over the avx2 backward (d = 128, old/new alternated, 12 pairs), always_inline or not.
 */
template <Path P, class AfterTile = NoOp>
void gemm(Part part, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
          int64_t ldc, float beta, AfterTile&& after_tile = {}) {
  using Ker = kernels::Kernels<P>;
  const int64_t wide_tiles = part == Part::full ? wide_row_tiles<P>(M) : 0;  // per NR-wide column tile
  for (int64_t j0 = 0, cols = 0; j0 < N; j0 += cols) {
    const int nr = col_tile<P>(N - j0);
    cols = nr;
    int64_t wide_rows = nr == Ker::NR ? wide_tiles : 0;
    for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
      const int mr = wide_rows-- > 0 ? Ker::UMR : row_tile(M - i0, tile_rows_for<P>(nr));
      rows = mr;
      if (part == Part::full)  // one operand: the tile without a second k loop
        Ker::gemm_tile(mr, nr, K, A + i0 * lda, lda, B + j0, ldb, C + i0 * ldc + j0, ldc, beta);
      else
        Ker::gemm_tile2(mr, nr, {0, A, lda, B, ldb}, part_operand(part, i0, mr, K, A, lda, B, ldb, j0),
                        C + i0 * ldc + j0, ldc, beta);
      after_tile();
    }
  }
}

/**
 * How many register tiles gemm, gemm_plus_triangle and gemm_plus_lower_right run over an M x N result
 * (a plain product's UMR-row tiles aside: gemm may run fewer). The prefetches are spread by it.
 */
template <Path P>
inline int64_t tile_count(int64_t M, int64_t N) {
  int64_t tiles = 0;
  for (int64_t j0 = 0, cols = 0; j0 < N; j0 += cols) {
    cols = col_tile<P>(N - j0);
    const int64_t rows = tile_rows_for<P>(cols);
    tiles += (M + rows - 1) / rows;  // row_tile splits a rest into ceil(rest / rows)
  }
  return tiles;
}

/**
 * The columns [first, second) that gemm_triangle computes for the row tile [i0, i0 + mr) of an M x M
 * triangle: up to the tile's last row (lower) or from its first row (upper), rounded out to whole
 * vectors and at most ldc.
 */
template <Path P>
inline std::pair<int64_t, int64_t> triangle_columns(bool upper, int64_t i0, int64_t mr, int64_t M, int64_t ldc) {
  constexpr int64_t W = kernels::Kernels<P>::W;
  const int64_t end = upper ? M : i0 + mr;
  return {upper ? i0 / W * W : 0, std::min(ldc, (end + W - 1) / W * W)};
}

/** How many register tiles gemm_triangle runs over an M x M triangle. */
template <Path P>
inline int64_t triangle_tile_count(bool upper, int64_t M, int64_t ldc) {
  using Ker = kernels::Kernels<P>;
  int64_t tiles = 0;
  for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
    rows = row_tile(M - i0, Ker::MR);
    const auto [c0, c1] = triangle_columns<P>(upper, i0, rows, M, ldc);
    tiles += (c1 - c0 + Ker::NR - 1) / Ker::NR;
  }
  return tiles;
}

/**
 * The causal triangle of C = A B (M x M, inner dimension K) in whole vectors of W floats: row tile
 * i0 gets columns [0, end) (lower: end its last row + 1) or [start, M) (upper: start its first
 * row), rounded out to whole vectors and at most ldc, so no load or store is masked. The entries
 * outside the triangle are for the caller's mask to overwrite: they come from B's columns past the
 * triangle, which must exist up to ldc (stale values allowed). after_tile() runs after each register
 * tile and after_rows(i0, mr) after each row tile: the mask of those rows, while they are in L1.
 */
template <Path P, class AfterTile, class AfterRows>
void gemm_triangle(bool upper, int64_t M, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* C, int64_t ldc, AfterTile&& after_tile, AfterRows&& after_rows) {
  using Ker = kernels::Kernels<P>;
  for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
    const int mr = row_tile(M - i0, Ker::MR);
    rows = mr;
    const auto [c0, c1] = triangle_columns<P>(upper, i0, mr, M, ldc);
    for (int64_t j0 = c0, cols = 0; j0 < c1; j0 += cols) {
      const int nr = col_tile<P>(c1 - j0);
      cols = nr;
      Ker::gemm_tile(mr, nr, K, A + i0 * lda, lda, B + j0, ldb, C + i0 * ldc + j0, ldc, 0.0f);
      after_tile();
    }
    after_rows(i0, mr);
  }
}

/**
 * C = beta C + X Y + T B over M x N, the inter-block plus intra-block sum of the read-outs and
 * gradients: X is M x kx and Y kx x N (kx = 0: no such term), T an M x M causal triangle (part
 * lower_k: row i over k <= i; upper_k: over k >= i), B is M x N. Both terms meet in one register
 * tile per (row tile, column tile); the triangle's diagonal blocks skip its zeros, so that a NaN or
 * Inf in B reaches only the rows that depend on it. after_tile() runs after each register tile.
 * `stream`: C's full vectors leave by non-temporal stores (detail/stream.hpp). `C0` (not null, M x N,
 * row stride ldc0): the sum starts from it, C = beta C + (C0 + X Y + T B); with C0 = X Y from gemm
 * and kx = 0, the bits of the one call.
 */
template <Path P, class AfterTile = NoOp>
void gemm_plus_triangle(Part part, int64_t M, int64_t N, int64_t kx, const float* X, int64_t ldx, const float* Y,
                        int64_t ldy, const float* T, int64_t ldt, const float* B, int64_t ldb, float* C, int64_t ldc,
                        float beta, AfterTile&& after_tile = {}, bool stream = false, const float* C0 = nullptr,
                        int64_t ldc0 = 0) {
  using Ker = kernels::Kernels<P>;
  for (int64_t j0 = 0, cols = 0; j0 < N; j0 += cols) {
    const int nr = col_tile<P>(N - j0);
    cols = nr;
    for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
      const int mr = row_tile(M - i0, tile_rows_for<P>(nr));
      rows = mr;
      Ker::gemm_tile2(mr, nr, {kx, X + i0 * ldx, ldx, Y + j0, ldy}, part_operand(part, i0, mr, M, T, ldt, B, ldb, j0),
                      C + i0 * ldc + j0, ldc, beta, stream, C0 ? C0 + i0 * ldc0 + j0 : nullptr, ldc0);
      after_tile();
    }
  }
}

/**
 * C = beta C + X Y + A L over M x N: X is M x kx and Y kx x N (kx = 0: no such term), A is M x N and
 * L an N x N lower triangle whose entries above the diagonal are zeros, so that column j of A L
 * reads rows i >= j of L (the transposed gradient dK^T = Q^T P~ + R (V~)^T). Each column tile reads L
 * from its first column's row on, each vector of it from its own first column's row on (a staircase
 * at vector granularity, Operand::narrow); the loads within a vector run over L's zeros, so A must
 * hold no NaN or Inf.
 * Over the whole avx512 backward (Xeon, family 6 model 207) this 8 x 32 staircase measured 6.5%
 * faster than 8 x 16 tiles, which skip the same zeros with half the accumulators, and 2.5% faster
 * than 8 x 32 tiles over every row of L. after_tile() runs after each register tile.
 */
template <Path P, class AfterTile = NoOp>
void gemm_plus_lower_right(int64_t M, int64_t N, int64_t kx, const float* X, int64_t ldx, const float* Y, int64_t ldy,
                           const float* A, int64_t lda, const float* L, int64_t ldl, float* C, int64_t ldc, float beta,
                           AfterTile&& after_tile = {}) {
  using Ker = kernels::Kernels<P>;
  // By column tiles, each with the rows its width allows: N is a block, one column tile at the default
  // blocks, so a row tile's slice of X is read once, then from L1.
  for (int64_t j0 = 0, cols = 0; j0 < N; j0 += cols) {
    const int nr = col_tile<P>(N - j0);
    cols = nr;
    for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
      const int mr = row_tile(M - i0, tile_rows_for<P>(nr));
      rows = mr;
      Ker::gemm_tile2(mr, nr, {kx, X + i0 * ldx, ldx, Y + j0, ldy},
                      {N - j0, A + i0 * lda + j0, lda, L + j0 * ldl + j0, ldl, N - j0},
                      C + i0 * ldc + j0, ldc, beta);
      after_tile();
    }
  }
}

/**
 * gemm_plus_lower_right stored transposed: C (N x M, row stride ldc) = (S + X Y + A L)^T, with the bits
 * of gemm_plus_lower_right's C transposed, run with beta 1 on C = S (M x N, row stride lds) or, S null,
 * with beta 0. A path with transposed tiles only (kernels::TransposedTiles), M a multiple of MR and N
 * of NR, so that every tile is a full one.
 */
template <Path P, class AfterTile = NoOp>
void gemm_plus_lower_right_transposed(int64_t M, int64_t N, int64_t kx, const float* X, int64_t ldx, const float* Y,
                                      int64_t ldy, const float* A, int64_t lda, const float* L, int64_t ldl, float* C,
                                      int64_t ldc, const float* S, int64_t lds, AfterTile&& after_tile = {}) {
  using Ker = kernels::Kernels<P>;
  assert(M % Ker::MR == 0 && N % Ker::NR == 0);
  for (int64_t j0 = 0; j0 < N; j0 += Ker::NR)
    for (int64_t i0 = 0; i0 < M; i0 += Ker::MR) {
      Ker::gemm_tile2_transposed({kx, X + i0 * ldx, ldx, Y + j0, ldy},
                                 {N - j0, A + i0 * lda + j0, lda, L + j0 * ldl + j0, ldl, N - j0}, C + j0 * ldc + i0,
                                 ldc, S ? S + i0 * lds + j0 : nullptr, lds);
      after_tile();
    }
}

/**
 * C = beta C + X Y + A Z over M x 16 on a path with pair tiles (kernels/avx512.hpp): Y (kx x 16)
 * and Z (kz x 16) in pair layout, row stride kPairRow, kx and kz even; X (M x kx) and A (M x kz) as they
 * are kept. The products one vector wide of the avx512 backward at its block of 16 (dK^T), in tiles
 * that feed two FMAs per broadcast. after_tile() runs after each register tile.
 */
template <Path P, class AfterTile = NoOp>
void gemm_pairs(int64_t M, int64_t kx, const float* X, int64_t ldx, const float* Y, int64_t kz, const float* A,
                int64_t lda, const float* Z, float* C, int64_t ldc, float beta, AfterTile&& after_tile = {}) {
  using Ker = kernels::Kernels<P>;
  for (int64_t i0 = 0, rows = 0; i0 < M; i0 += rows) {
    const int mr = row_tile(M - i0, Ker::PMR);
    rows = mr;
    constexpr int64_t ld = kernels::kPairRow;
    Ker::gemm_pair_tile(mr, {kx, X + i0 * ldx, ldx, Y, ld}, {kz, A + i0 * lda, lda, Z, ld}, C + i0 * ldc, ldc, beta);
    after_tile();
  }
}

}  // namespace lightning::detail
