// The micro-kernel interface every path implements; the block loop (detail/tiled.hpp) calls only this.
//
// template <> struct Kernels<Path::X> {
//   static constexpr int MR, NR, W;   // register tile of gemm_tile; W: floats per vector (1: scalar)
//   static constexpr int NMR;         // rows of the tiles at most NR - W columns wide (MR or more)
//   static constexpr int UMR;         // rows of gemm_tile over NR whole-vector columns in a plain
//                                     // product (gemm's Part::full): MR, or more where registers allow
//   static constexpr int TT;          // the widest square transpose tile: 8, or 16 with transpose_16x16
//   // C[mr x nr] = beta * C + A[mr x kc] B[kc x nr], nr <= NR, mr <= MR (mr <= NMR when nr <= NR - W;
//   // mr = UMR when nr = NR); beta == 0 overwrites C.
//   static void gemm_tile(int mr, int nr, int64_t kc, const float* A, int64_t lda, const float* B,
//                         int64_t ldb, float* C, int64_t ldc, float beta);
//   // The same over two k-ranges summed in the registers: C = beta C + x.A x.B + y.A y.B (simd_tile.hpp);
//   // an operand's steps p < `narrow` may skip the vectors past column p; y's first or last mr
//   // steps may be a causal triangle's diagonal block, whose zeros are skipped (Operand::diagonal).
//   // `stream`: non-temporal stores where the path has them; `C0` (not null): the registers start
//   // from C0's tile (row stride ldc0) rather than from zero, before x and y are added.
//   static void gemm_tile2(int mr, int nr, const simd::Operand& x, const simd::Operand& y, float* C,
//                          int64_t ldc, float beta, bool stream = false, const float* C0 = nullptr,
//                          int64_t ldc0 = 0);
//   // y = a * x + b * y, and y += a * x, over n floats (the decode step's row updates).
//   static void axpby(int64_t n, float a, const float* x, float b, float* y);
//   static void axpy(int64_t n, float a, const float* x, float* y);
//   // dst[c * ldd + r] = row_scale[r] * src[r * lds + c] for an 8 x 8 tile (row_scale null: 1); the
//   // packed transposes of detail/pack.hpp.
//   static void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd, const float* row_scale);
//   // Both dst = src^T (row stride ldd) and dst_scaled = (diag(scale) src)^T (row stride ldds) for an
//   // 8 x 8 tile (plain and decayed K^T or V^T).
//   static void transpose_8x8_dual(const float* src, int64_t lds, float* dst, int64_t ldd, float* dst_scaled,
//                                  int64_t ldds, const float* scale);
//   // The same over 16 x 16 tiles, where TT = 16 (avx512).
//   static void transpose_16x16(...);  static void transpose_16x16_dual(...);
//   // Optional (avx512): pair tiles of up to PMR rows for products one vector wide, B in pair layout
//   // (avx512.hpp), with pair_tiles = true; PairTiles<P> below says whether a path has them.
//   static void gemm_pair_tile(...);  static void pair_transpose_8x8(...);  static void zip_row_pairs(...);
//   // Optional (avx2): gemm_tile2's full MR x NR tile stored transposed (C[j * ldc + i] = C^T), with
//   // beta 0, or with beta 1 on S (non-null, row stride lds, the tile's own layout), for the backward's
//   // dK^T; TransposedTiles<P> below says whether a path has it.
//   static void gemm_tile2_transposed(const simd::Operand& x, const simd::Operand& y, float* C, int64_t ldc,
//                                     const float* S = nullptr, int64_t lds = 0);
// };
#pragma once

#include <cstdint>
#include <type_traits>

#include "lightning/config.hpp"

namespace lightning::kernels {
template <Path P>
struct Kernels;

/** The row length of the pair layout: pairs of 16 columns (a pair tile's width). */
inline constexpr int64_t kPairRow = 32;

/** Whether Kernels<P> has pair tiles (gemm_pair_tile and its layouts). */
template <Path P, class = void>
struct PairTiles : std::false_type {};
template <Path P>
struct PairTiles<P, std::void_t<decltype(Kernels<P>::pair_tiles)>> : std::bool_constant<Kernels<P>::pair_tiles> {};

/** Whether Kernels<P> has gemm_tile2_transposed. */
template <Path P, class = void>
struct TransposedTiles : std::false_type {};
template <Path P>
struct TransposedTiles<P, std::void_t<decltype(&Kernels<P>::gemm_tile2_transposed)>> : std::true_type {};

/** Calls fn(std::integral_constant<int, mr>{}) for a runtime row count mr in [1, MaxRows]. */
template <int MaxRows, class Fn>
inline void with_rows(int mr, Fn&& fn) {
  if constexpr (MaxRows > 1)
    if (mr < MaxRows) return with_rows<MaxRows - 1>(mr, fn);
  fn(std::integral_constant<int, MaxRows>{});
}
}  // namespace lightning::kernels
