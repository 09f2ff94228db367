// The broadcast register tile shared by the SIMD paths, written once over a vector type: `Ops`
// (avx2.hpp, avx512.hpp) supplies the vector, its width W and its loads, stores and FMA.
#pragma once

#include <cassert>
#include <cstdint>

#include "lightning/kernels/kernels.hpp"

namespace lightning::kernels::simd {

/**
 * One k-range of a tile's sum: A is mr x k (row stride lda), B is k x nr (row stride ldb). B's rows
 * p < `narrow` are zero past column p (a causal triangle's staircase): a kernel may skip the
 * vectors past p's there, or run over the zeros. `diagonal` marks A's mr x mr diagonal block of
 * a causal triangle, whose zeros are skipped, never multiplied (0 times a NaN or Inf in B is NaN):
 * +1, the last mr steps, step k - mr + s feeding rows r >= s only (row i sums over k <= i); -1, the
 * first mr steps, step s feeding rows r <= s only (row i sums over k >= i). k >= mr then.
 */
struct Operand {
  int64_t k;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  int64_t narrow = 0;
  int diagonal = 0;
};

// The loops over a tile's rows and vectors are unrolled by pragma, before the compiler decides where
// the accumulators live: unrolled only later, they stayed in a stack array that every tile zeroed,
// stored after each operand and reloaded for the store (16 zmm stores and loads around each avx512
// tile); unrolled first, they stay in registers from the first FMA to the store of C.
// LIGHTNING_NO_UNROLL, defined by the sanitized builds alone (scripts/sanitize.sh, scripts/fuzz.sh),
// leaves these loops and the k loop's (LIGHTNING_UNROLL_K) to the compiler: the same loads, stores and
// arithmetic, checked as written, in about half the compile time under ASan + UBSan (clang 14, Zen 4:
// the avx512 instantiate_fp32.cpp 112 s against 64 s, the fuzzer 161 s against 76 s). The Release
// suite (scripts/test.sh) tests the unrolled tiles. avx512.hpp's pair tiles keep their own pragmas:
// without them too, that unit compiled in 54 s against 55.
#ifdef LIGHTNING_NO_UNROLL
#define LIGHTNING_UNROLL
#define LIGHTNING_UNROLL_K
#else
#define LIGHTNING_UNROLL _Pragma("GCC unroll 16")
#define LIGHTNING_UNROLL_K _Pragma("GCC unroll 4")
#endif

/** Vector v of a row of B, C or C0: masked where the tile is not `full`. */
template <class Ops, int V, bool full>
[[gnu::always_inline]] inline typename Ops::Vec row_vector(const float* row, int v,
                                                           const typename Ops::Mask (&mask)[V]) {
  return full ? Ops::load(row + Ops::W * v) : Ops::maskload(row + Ops::W * v, mask[v]);
}

/** acc += A[:, p] B[p, :]: one step of the k loop. */
template <class Ops, int R, int V, bool full>
[[gnu::always_inline]] inline void k_step(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t p,
                                          const typename Ops::Mask (&mask)[V], typename Ops::Vec (&acc)[R][V]) {
  using Vec = typename Ops::Vec;
  Vec b[V];
  LIGHTNING_UNROLL for (int v = 0; v < V; ++v) {
    b[v] = row_vector<Ops, V, full>(B + p * ldb, v, mask);
  }
  LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
    const Vec a = Ops::set1(A[r * lda + p]);
    LIGHTNING_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = Ops::fmadd(a, b[v], acc[r][v]);
  }
}

/**
 * acc += A B over the R steps of a diagonal block (Operand::diagonal): step s feeds rows r >= s
 * (lower) or r <= s (upper), chosen at compile time once the loops are unrolled.
 */
template <class Ops, int R, int V, bool full, bool lower>
[[gnu::always_inline]] inline void diagonal_steps(const float* A, int64_t lda, const float* B, int64_t ldb,
                                                  const typename Ops::Mask (&mask)[V],
                                                  typename Ops::Vec (&acc)[R][V]) {
  using Vec = typename Ops::Vec;
  LIGHTNING_UNROLL for (int s = 0; s < R; ++s) {
    Vec b[V];
    LIGHTNING_UNROLL for (int v = 0; v < V; ++v) {
      b[v] = row_vector<Ops, V, full>(B + s * ldb, v, mask);
    }
    LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
      if (lower ? r < s : r > s) continue;
      const Vec a = Ops::set1(A[r * lda + s]);
      LIGHTNING_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = Ops::fmadd(a, b[v], acc[r][v]);
    }
  }
}

/**
 * The staircase steps of an operand (Operand::narrow): steps p in [U W - W, U W) below `narrow` feed
 * only the first U vectors' accumulators, B being zero past them, for U = Used, ..., V - 1; p ends
 * past the last such step. The step is written out rather than k_step over U vectors: that form
 * (213ad9f, the same instructions in the source) made the avx512 backward 0.8% slower (ratio 2.52
 * against 2.50, eight alternated pairs), the tiles' code laid out otherwise.
 */
template <class Ops, int R, int V, bool full, int Used>
[[gnu::always_inline]] inline void staircase_steps(const float* A, int64_t lda, const float* B, int64_t ldb,
                                                   int64_t& p, int64_t narrow, const typename Ops::Mask (&mask)[V],
                                                   typename Ops::Vec (&acc)[R][V]) {
  using Vec = typename Ops::Vec;
  for (const int64_t end = narrow < Used * Ops::W ? narrow : Used * Ops::W; p < end; ++p) {
    Vec b[Used];
    LIGHTNING_UNROLL for (int v = 0; v < Used; ++v) {
      b[v] = row_vector<Ops, V, full>(B + p * ldb, v, mask);
    }
    LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
      const Vec a = Ops::set1(A[r * lda + p]);
      LIGHTNING_UNROLL for (int v = 0; v < Used; ++v) acc[r][v] = Ops::fmadd(a, b[v], acc[r][v]);
    }
  }
  if constexpr (Used + 1 < V) staircase_steps<Ops, R, V, full, Used + 1>(A, lda, B, ldb, p, narrow, mask, acc);
}

/**
 * acc += A B over one operand's k range (R rows, V vectors of W columns). With Ops::unroll_k the k
 * loop runs four steps at a time: on avx2 its own add, compare and branch were 16% of the tiles'
 * instructions at d = 64 (callgrind; not unrolled, the 4 x 24 tile measured 1.4-1.5x the time).
 * avx2's 4 x 24 tile issues about 21 instructions per 12 FMAs, 3.5 per cycle at the FMA peak; on
 * Zen 4 it runs at 76-89% (k = 24, beta 1) and 89-93% (k = 128) of the peak alone on hot data (the
 * benchmark's tile_ rows, three runs), where the 6 x 16 tile before it, 23 instructions per 12 FMAs,
 * ran at 61-71% and 73-85%. avx512's 8 x 32 tile, 26 instructions per 16 FMAs, reached 87-97% and
 * measured 1-2% slower unrolled (its tile is 8 x 48 since 2026-12-05: avx512.hpp says why).
 * `second`: the operand is a tile's y, the only one that may have a diagonal block or a staircase;
 * x runs every step over all its vectors (a staircase's zeros included, which Operand allows). The
 * staircase's loops compiled for x too made each tile's code longer for nothing: without them the
 * avx512 state update alone (128 x 128, k = 16, C in L2; Intel Xeon, 61 alternated bursts) took
 * 0.97x its time, the whole backward 0.997-0.999x and the forward 0.994-0.998x (tools/ab, d = 128,
 * 40 pairs, avx2 and avx512: within what it resolves), and the avx512 translation unit of
 * instantiate_fp32.cpp 0.95x its compile time under the sanitizers.
 */
template <class Ops, int R, int V, bool full, bool second>
[[gnu::always_inline]] inline void accumulate(const Operand& s, const typename Ops::Mask (&mask)[V],
                                              typename Ops::Vec (&acc)[R][V]) {
  const float* A = s.A;
  const float* B = s.B;
  const int64_t lda = s.lda, ldb = s.ldb;
  int64_t p = 0, end = s.k;
  if constexpr (second) {
    if (s.diagonal < 0) {
      diagonal_steps<Ops, R, V, full, false>(A, lda, B, ldb, mask, acc);
      p = R;
    } else if (s.diagonal > 0) {
      end = s.k - R;
      diagonal_steps<Ops, R, V, full, true>(A + end, lda, B + end * ldb, ldb, mask, acc);  // order does not matter
    }
  }
  if constexpr (V > 1 && second) staircase_steps<Ops, R, V, full, 1>(A, lda, B, ldb, p, s.narrow, mask, acc);
  if constexpr (Ops::unroll_k) {
    LIGHTNING_UNROLL_K for (; p < end; ++p) k_step<Ops, R, V, full>(A, lda, B, ldb, p, mask, acc);
  } else {
    for (; p < end; ++p) k_step<Ops, R, V, full>(A, lda, B, ldb, p, mask, acc);
  }
}

/**
 * C = sum(C, acc), row by row, with full, streamed (`stream`) or masked stores. A function forced
 * inline, not a lambda of tile: clang 14 left the three instances of such a lambda out of line, so
 * that acc's address escaped, and kept the accumulators in a stack array stored after every FMA
 * (the whole library 1.37x the time of its g++ build, avx2, d = 128).
 */
template <class Ops, int R, int V, bool full, class Sum>
[[gnu::always_inline]] inline void store_tile(const typename Ops::Vec (&acc)[R][V], const typename Ops::Mask (&mask)[V],
                                              float* C, int64_t ldc, bool stream, Sum sum) {
  using Vec = typename Ops::Vec;
  LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
    LIGHTNING_UNROLL for (int v = 0; v < V; ++v) {
      float* out = C + r * ldc + Ops::W * v;
      const Vec result = sum(row_vector<Ops, V, full>(C + r * ldc, v, mask), acc[r][v]);
      if (full && stream)
        Ops::stream(out, result);
      else if (full)
        Ops::store(out, result);
      else
        Ops::maskstore(out, mask[v], result);
    }
  }
}

/**
 * C[R x nr] = beta C + A1 B1 + A2 B2 over R rows and V vectors of W columns (beta == 0 overwrites C);
 * only the second operand, y, may have a diagonal block or a staircase. Without `two`, x alone (y is
 * not read): the tile of a plain product, free of the second k loop's checks, which cost the
 * backward's k = 16 state updates (avx512, d = 128, n = 4096, heads 8, old/new alternated, 31 pairs)
 * 1.6-2.0% of its time. beta == 1 adds C with an add, the same bits as the FMA with 1, but off the
 * FMA pipes.
 * `stream` writes the full vectors with non-temporal stores (the caller checked that they start
 * cache lines, detail/stream.hpp): C is an output that no one reads soon.
 * `full` says every lane of every vector is in range, so no load or store is masked (masked stores
 * are slow on AMD cores and block store forwarding): the common tiles use none.
 * `C0` (null: zeros) holds the accumulators' start, row stride ldc0: C = beta C + (C0 + x.A x.B +
 * y.A y.B) with the sum taken in that order, so that a product split in two calls, the first one's
 * result passed as the second one's C0, has the bits of the product in one call (the backward's dQ
 * when the slope gradient also reads its first term).
 *
 * Never inlined: inlined into a block loop (g++ 12 did so for the backward's dK^T tiles), the R row
 * pointers of A no longer fit in the general registers beside the loop's own values, and each
 * broadcast reloaded its row pointer from the stack (7 extra loads per k step of an 8 x 32 tile);
 * out of line they stay in registers. A call costs a few cycles against >= 16 k steps of 16 FMAs.
 */
template <class Ops, int R, int V, bool full, bool two>
[[gnu::noinline]] void tile(int nr, const Operand& x, const Operand& y, float* C, int64_t ldc, float beta,
                           bool stream, const float* C0 = nullptr, int64_t ldc0 = 0) {
  using Vec = typename Ops::Vec;
  using Mask = typename Ops::Mask;
  Mask mask[V];
  LIGHTNING_UNROLL for (int v = 0; v < V; ++v) mask[v] = Ops::lane_mask(full ? Ops::W : nr - Ops::W * v);
  Vec acc[R][V];
  if (C0) {
    LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
      LIGHTNING_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = row_vector<Ops, V, full>(C0 + r * ldc0, v, mask);
    }
  } else {
    LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
      LIGHTNING_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = Ops::zero();
    }
  }
  accumulate<Ops, R, V, full, false>(x, mask, acc);
  if constexpr (two) accumulate<Ops, R, V, full, true>(y, mask, acc);
  if (beta == 0.0f) {
    store_tile<Ops, R, V, full>(acc, mask, C, ldc, stream, [](Vec, Vec a) { return a; });
  } else if (beta == 1.0f) {
    store_tile<Ops, R, V, full>(acc, mask, C, ldc, stream, [](Vec c, Vec a) { return Ops::add(c, a); });
  } else {
    const Vec vbeta = Ops::set1(beta);
    store_tile<Ops, R, V, full>(acc, mask, C, ldc, stream, [vbeta](Vec c, Vec a) { return Ops::fmadd(c, vbeta, a); });
  }
}

/**
 * tile's full R x NV W tile of x + y stored transposed: C[(W v + l) * ldc + r] = acc[r][v] lane l, by
 * Ops::store_columns (R rows of a vector as W columns of R floats). With `S` (row stride lds, the
 * tile's layout, not C's) the sums are S + acc, as tile's with beta 1 and C = S; without, as tile's
 * with beta 0: C holds the bits of tile's C transposed.
 */
template <class Ops, int R, int NV>
[[gnu::noinline]] void tile_transposed(const Operand& x, const Operand& y, float* C, int64_t ldc, const float* S,
                                       int64_t lds) {
  using Vec = typename Ops::Vec;
  typename Ops::Mask mask[NV];
  LIGHTNING_UNROLL for (int v = 0; v < NV; ++v) mask[v] = Ops::lane_mask(Ops::W);
  Vec acc[R][NV];
  LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
    LIGHTNING_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = Ops::zero();
  }
  accumulate<Ops, R, NV, true, false>(x, mask, acc);
  accumulate<Ops, R, NV, true, true>(y, mask, acc);
  if (S) {
    LIGHTNING_UNROLL for (int r = 0; r < R; ++r) {
      LIGHTNING_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = Ops::add(Ops::load(S + r * lds + Ops::W * v), acc[r][v]);
    }
  }
  LIGHTNING_UNROLL for (int v = 0; v < NV; ++v) Ops::store_columns(acc, v, C + v * Ops::W * ldc, ldc);
}

/** The tile for nr in [1, NV W]: NV vectors when nr fills them, fewer (or a masked last one) otherwise. */
template <class Ops, int R, int NV>
inline void tile_rows(int nr, const Operand& x, const Operand& y, float* C, int64_t ldc, float beta,
                      bool stream = false, const float* C0 = nullptr, int64_t ldc0 = 0) {
  constexpr int W = Ops::W;
  if constexpr (NV > 1)
    if (nr <= (NV - 1) * W) return tile_rows<Ops, R, NV - 1>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
  if (nr == NV * W)
    tile<Ops, R, NV, true, true>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
  else
    tile<Ops, R, NV, false, true>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
}

/**
 * x alone over R rows and nr = W, 2 W, ..., NV W columns: the one-operand tile, instantiated for
 * whole vectors only. The other shapes of a plain product (a row or column rest) take tile_rows with
 * an empty y: one-operand tiles of every shape doubled the compile time of the kernels' translation
 * units (20 to 27 s for the fp32 instances), for tiles that are rare.
 */
template <class Ops, int R, int NV>
inline void whole_vector_rows(int nr, const Operand& x, float* C, int64_t ldc, float beta) {
  if constexpr (NV > 1)
    if (nr < NV * Ops::W) return whole_vector_rows<Ops, R, NV - 1>(nr, x, C, ldc, beta);
  tile<Ops, R, NV, true, false>(nr, x, x, C, ldc, beta, false);
}

/**
 * The tile for nr in ((NV - 1) W, NV W]: whole vectors when nr fills them, a masked last one
 * otherwise (tile_rows without the narrower shapes, which a path with NMR rows for them never runs
 * at R rows).
 */
template <class Ops, int R, int NV>
inline void widest_rows(int nr, const Operand& x, const Operand& y, float* C, int64_t ldc, float beta, bool stream,
                        const float* C0, int64_t ldc0) {
  if (nr == NV * Ops::W)
    tile<Ops, R, NV, true, true>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
  else
    tile<Ops, R, NV, false, true>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
}

/** o's B `cols` columns on, without its staircase (Operand::narrow), over whose zeros a kernel may run. */
inline Operand columns_from(const Operand& o, int64_t cols) {
  return {o.k, o.A, o.lda, o.B + cols, o.ldb, 0, o.diagonal};
}

/**
 * The tile for nr in [1, NV W] with NV = 3 or more vectors only at MR rows over whole vectors: any other
 * tile wider than NV - 1 vectors runs as two, (NV - 1) W columns and the rest, the second without the
 * staircase (a product with one, gemm_plus_lower_right, holds no NaN or Inf in A, so running over the
 * staircase's zeros adds zeros). Those shapes are rare (a last short block, a d_v that is not a multiple
 * of W), and instantiating 3-vector tiles at every row count and with masked lanes took the avx512
 * translation units 1.7x their compile time under the sanitizers (84 to 143 s each, clang 14).
 */
template <class Ops, int R, int NV, int MR>
inline void wide_at_mr_rows(int nr, const Operand& x, const Operand& y, float* C, int64_t ldc, float beta,
                            bool stream, const float* C0, int64_t ldc0) {
  constexpr int W = Ops::W;
  if (nr <= (NV - 1) * W) return tile_rows<Ops, R, NV - 1>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
  if constexpr (R == MR) {
    if (nr == NV * W) return tile<Ops, R, NV, true, true>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
  }
  constexpr int first = (NV - 1) * W;
  tile_rows<Ops, R, NV - 1>(first, x, y, C, ldc, beta, stream, C0, ldc0);
  tile_rows<Ops, R, 1>(nr - first, columns_from(x, first), columns_from(y, first), C + first, ldc, beta, stream,
                       C0 ? C0 + first : nullptr, ldc0);
}

/**
 * A SIMD path's gemm_tile2 (kernels.hpp): tiles of up to MR rows over NR columns, and of up to NMR
 * rows over at most NR - W columns (NMR = MR: one row bound for every width), the rows' count fixed
 * at compile time. Tiles of three vectors or more only at MR rows over whole vectors (wide_at_mr_rows).
 */
template <class Ops, int MR, int NR, int NMR>
inline void gemm_tile2(int mr, int nr, const Operand& x, const Operand& y, float* C, int64_t ldc, float beta,
                       bool stream, const float* C0 = nullptr, int64_t ldc0 = 0) {
  constexpr int NV = NR / Ops::W;
  assert(mr >= 1 && mr <= (nr <= NR - Ops::W ? NMR : MR));  // with_rows would clamp a larger mr silently
  if constexpr (NMR != MR) {
    if (nr <= NR - Ops::W) {
      with_rows<NMR>(mr, [&](auto rows) {
        tile_rows<Ops, decltype(rows)::value, NV - 1>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
      });
    } else {
      with_rows<MR>(mr, [&](auto rows) {
        widest_rows<Ops, decltype(rows)::value, NV>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
      });
    }
  } else if constexpr (NV >= 3) {
    with_rows<MR>(mr, [&](auto rows) {
      wide_at_mr_rows<Ops, decltype(rows)::value, NV, MR>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
    });
  } else {
    with_rows<MR>(mr, [&](auto rows) {
      tile_rows<Ops, decltype(rows)::value, NV>(nr, x, y, C, ldc, beta, stream, C0, ldc0);
    });
  }
}

/**
 * A SIMD path's gemm_tile (kernels.hpp): tiles of MR rows (and, narrower than NR, of NMR rows; NR
 * wide, of UMR rows) over whole vectors by the one-operand tile, the rest by gemm_tile2.
 */
template <class Ops, int MR, int NR, int NMR, int UMR = MR>
inline void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                      int64_t ldc, float beta) {
  const Operand x{kc, A, lda, B, ldb};
  constexpr int NV = NR / Ops::W;
  if (nr % Ops::W == 0 && mr == MR)  // the common tiles: one operand, no second k loop's checks
    return whole_vector_rows<Ops, MR, NV>(nr, x, C, ldc, beta);
  if constexpr (UMR != MR)
    if (nr == NR && mr == UMR) return tile<Ops, UMR, NV, true, false>(nr, x, x, C, ldc, beta, false);
  if constexpr (NMR != MR)
    if (nr % Ops::W == 0 && mr == NMR && nr <= NR - Ops::W)
      return whole_vector_rows<Ops, NMR, NV - 1>(nr, x, C, ldc, beta);
  gemm_tile2<Ops, MR, NR, NMR>(mr, nr, x, {0, A, lda, B, ldb}, C, ldc, beta, false);
}

}  // namespace lightning::kernels::simd

#undef LIGHTNING_UNROLL
#undef LIGHTNING_UNROLL_K
