// The packed transposes (detail/pack.hpp) against a plain loop, on every path: whole 16 x 16 and
// 8 x 8 register tiles, the L-shaped rests they leave and the edges no tile fits. And the loops over
// register tiles (detail/gemm.hpp) against a loop in double, at the sizes where they split a rest.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "lightning/detail/gemm.hpp"
#include "lightning/detail/pack.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

class Pack : public ::testing::TestWithParam<Path> {};

TEST_P(Pack, TransposesMatchALoop) {
  const int64_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40};
  for (int64_t rows : sizes)
    for (int64_t cols : sizes) {
      const int64_t lds = cols + 3, ldd = rows + 5, ldds = rows + 2;  // the dual's two outputs at their own strides
      const auto src = randn(static_cast<size_t>(rows * lds), 1.0f, static_cast<uint64_t>(rows * 100 + cols));
      const auto scale = randn(static_cast<size_t>(rows), 1.0f, 7);
      std::vector<float> plain(static_cast<size_t>(cols * ldd), -1.0f), scaled = plain, dual = plain,
                         dual_scaled(static_cast<size_t>(cols * ldds), -1.0f);
      detail::with_path(GetParam(), [&](auto path) {
        constexpr Path P = decltype(path)::value;
        detail::transpose<P>(rows, cols, src.data(), lds, plain.data(), ldd);
        detail::transpose<P>(rows, cols, src.data(), lds, scaled.data(), ldd, scale.data());
        detail::transpose_dual<P>(rows, cols, src.data(), lds, dual.data(), ldd, dual_scaled.data(), ldds,
                                  scale.data());
      });
      int64_t wrong = 0;
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < ldd; ++r) {
          const size_t at = static_cast<size_t>(c * ldd + r);
          // Inside: the transposed (and row-scaled) entry, bit for bit; the padding past `rows` untouched.
          const float x = r < rows ? src[static_cast<size_t>(r * lds + c)] : -1.0f;
          const float sx = r < rows ? scale[static_cast<size_t>(r)] * x : -1.0f;
          wrong += (plain[at] != x) + (scaled[at] != sx) + (dual[at] != x);
          if (r < ldds) wrong += dual_scaled[static_cast<size_t>(c * ldds + r)] != sx;
        }
      EXPECT_EQ(wrong, 0) << rows << " x " << cols;
    }
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Pack);

class TileLoops : public ::testing::TestWithParam<Path> {};

/**
 * The entries of C (M x N, row stride ldc) not within 1e-5 of beta C0 + the terms that
 * terms(i, j, add) passes to add(double), relative to the sum of their magnitudes, plus the
 * padding columns [N, ldc) that changed from C0.
 */
template <class Terms>
int64_t wrong_entries(int64_t M, int64_t N, int64_t ldc, const std::vector<float>& C, const std::vector<float>& C0,
                      float beta, Terms&& terms) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = static_cast<size_t>(i * ldc + j);
      if (j >= N) {
        wrong += C[at] != C0[at];
        continue;
      }
      double ref = beta * static_cast<double>(C0[at]), mag = std::abs(ref);
      terms(i, j, [&](double t) { ref += t, mag += std::abs(t); });
      wrong += !(std::abs(C[at] - ref) <= 1e-5 * mag + 1e-30);
    }
  return wrong;
}

TEST_P(TileLoops, ColumnTilesCoverARowOnceInWholeVectors) {
  detail::with_path(GetParam(), [&](auto path) {
    constexpr Path P = decltype(path)::value;
    using Ker = kernels::Kernels<P>;
    for (int64_t n = 1; n <= 5 * Ker::NR + 3; ++n) {
      std::vector<int> widths;
      for (int64_t j0 = 0; j0 < n; j0 += widths.back()) widths.push_back(detail::col_tile<P>(n - j0));
      int64_t sum = 0;
      for (size_t t = 0; t < widths.size(); ++t) {
        sum += widths[t];
        EXPECT_GE(widths[t], 1) << n;
        EXPECT_LE(widths[t], Ker::NR) << n;
        if (t + 1 < widths.size()) {  // only the last tile may be partial
          EXPECT_EQ(widths[t] % Ker::W, 0) << n << ", tile " << t;
        }
      }
      EXPECT_EQ(sum, n);
      EXPECT_EQ(static_cast<int64_t>(widths.size()), (n + Ker::NR - 1) / Ker::NR) << n;  // tile_count's count
      if (n > Ker::NR) {  // the last two tiles differ by at most one vector: no one-vector rest beside a full tile
        const auto vectors = [](int w) { return (w + Ker::W - 1) / Ker::W; };
        EXPECT_LE(vectors(widths[widths.size() - 2]) - vectors(widths.back()), 1) << n;
      }
    }
  });
}

// C = beta C + A B over its part (row i over k <= i, k >= i or all k) and C = beta C + X Y + T B with T
// a causal triangle, against a loop in double; every entry within 1e-5 of the sum of its terms'
// magnitudes (at most 40 terms in float), the padding columns of C untouched.
TEST_P(TileLoops, ProductsMatchALoop) {
  const int64_t rows[] = {1, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 20, 26};  // 9, 17, 26: avx512's 9-row tiles
  const int64_t cols[] = {1, 7, 8, 9, 16, 23, 24, 25, 31, 32, 33, 40, 47, 48, 49, 64, 80, 95, 96, 97};
  for (int64_t M : rows)
    for (int64_t N : cols) {
      const int64_t K = M + 5, ld = N + 3;
      const auto A = randn(static_cast<size_t>(M * K), 1.0f, static_cast<uint64_t>(M * 1000 + N));
      const auto B = randn(static_cast<size_t>(K * ld), 1.0f, static_cast<uint64_t>(M * 1000 + N + 1));
      const auto C0 = randn(static_cast<size_t>(M * ld), 1.0f, static_cast<uint64_t>(M * 1000 + N + 2));
      for (int part = 0; part < 5; ++part) {
        std::vector<float> C = C0;
        // For parts 3 and 4: A's first M columns, lower and upper triangle.
        std::vector<float> T(static_cast<size_t>(M * M));
        for (int64_t i = 0; i < M; ++i)
          for (int64_t k = 0; k < M; ++k)
            if (part == 3 ? k <= i : k >= i) T[static_cast<size_t>(i * M + k)] = A[static_cast<size_t>(i * K + k)];
        const float beta = 0.5f;
        detail::with_path(GetParam(), [&](auto path) {
          constexpr Path P = decltype(path)::value;
          if (part < 3)
            detail::gemm<P>(part == 0 ? detail::Part::full : part == 1 ? detail::Part::lower_k : detail::Part::upper_k, M,
                            N, K, A.data(), K, B.data(), ld, C.data(), ld, beta);
          else  // X = A's last 5 columns, Y = B's last 5 rows; T B over B's first M rows
            detail::gemm_plus_triangle<P>(part == 3 ? detail::Part::lower_k : detail::Part::upper_k, M, N, 5, A.data() + M,
                                          K, B.data() + M * ld, ld, T.data(), M, B.data(), ld, C.data(), ld, beta);
        });
        const int64_t wrong = wrong_entries(M, N, ld, C, C0, beta, [&](int64_t i, int64_t j, auto add) {
          for (int64_t k = 0; k < K; ++k) {
            // parts 3 and 4: X Y over k in [M, K), T B over k <= i or k >= i
            const bool in = part == 0   ? true
                            : part == 1 ? k <= i
                            : part == 2 ? k >= i
                            : part == 3 ? k >= M || k <= i
                                        : k >= M || k >= i;
            if (in) add(static_cast<double>(A[static_cast<size_t>(i * K + k)]) * B[static_cast<size_t>(k * ld + j)]);
          }
        });
        EXPECT_EQ(wrong, 0) << "part " << part << ", " << M << " x " << N;
      }
    }
}

// gemm_plus_triangle started from C0 = X Y (made by gemm, kx = 0 then) has the bits of the one call
// that takes X Y in its tiles (the backward's dQ with and without d_slopes), over row and column rests,
// both triangles and a beta; C's padding columns compared too.
TEST_P(TileLoops, SumStartedFromC0HasTheBitsOfOneCall) {
  for (int64_t M : {1, 3, 5, 8, 9, 13, 24, 26})
    for (int64_t N : {1, 7, 9, 16, 24, 31, 33, 48, 49, 97, 128}) {
      const int64_t kx = 37, ldx = kx + 1, ldy = N + 3, ldt = M + 2, ldb = N + 1, ldc = N + 3, ldz = N + 2;
      const uint64_t seed = static_cast<uint64_t>(M * 1000 + N + 500000);
      const auto X = randn(static_cast<size_t>(M * ldx), 1.0f, seed);
      const auto Y = randn(static_cast<size_t>(kx * ldy), 1.0f, seed + 1);
      const auto T = randn(static_cast<size_t>(M * ldt), 1.0f, seed + 2);  // both calls read the same entries
      const auto B = randn(static_cast<size_t>(M * ldb), 1.0f, seed + 3);
      const auto C0 = randn(static_cast<size_t>(M * ldc), 1.0f, seed + 4);
      for (const detail::Part part : {detail::Part::lower_k, detail::Part::upper_k}) {
        std::vector<float> one = C0, two = C0, Z(static_cast<size_t>(M * ldz), 7.0f);
        detail::with_path(GetParam(), [&](auto path) {
          constexpr Path P = decltype(path)::value;
          detail::gemm_plus_triangle<P>(part, M, N, kx, X.data(), ldx, Y.data(), ldy, T.data(), ldt, B.data(), ldb,
                                        one.data(), ldc, 0.5f);
          detail::gemm<P>(detail::Part::full, M, N, kx, X.data(), ldx, Y.data(), ldy, Z.data(), ldz, 0.0f);
          detail::gemm_plus_triangle<P>(part, M, N, 0, X.data(), ldx, Y.data(), ldy, T.data(), ldt, B.data(), ldb,
                                        two.data(), ldc, 0.5f, detail::NoOp{}, false, Z.data(), ldz);
        });
        EXPECT_EQ(one, two) << M << " x " << N << (part == detail::Part::lower_k ? " lower" : " upper");
        EXPECT_NE(one, C0) << M << " x " << N;
      }
    }
}

/** The terms of entry (i, j) of X Y + A L (X is M x kx, L an N x N lower triangle), each passed to add in double. */
template <class Add>
void lower_right_terms(int64_t i, int64_t j, int64_t N, int64_t kx, const std::vector<float>& X, int64_t ldx,
                       const std::vector<float>& Y, int64_t ldy, const std::vector<float>& A, int64_t lda,
                       const std::vector<float>& L, int64_t ldl, Add&& add) {
  for (int64_t p = 0; p < kx; ++p)
    add(static_cast<double>(X[static_cast<size_t>(i * ldx + p)]) * Y[static_cast<size_t>(p * ldy + j)]);
  for (int64_t p = j; p < N; ++p)  // column j of L: rows p >= j
    add(static_cast<double>(A[static_cast<size_t>(i * lda + p)]) * L[static_cast<size_t>(p * ldl + j)]);
}

// C = beta C + X Y + A L with L an N x N lower triangle (zeros above the diagonal, the transposed
// gradient dK^T's form), against a loop in double: widths that split a tile of three vectors on avx512
// (33-47, and 48 at row counts below MR) and rests beside whole tiles, the padding columns untouched.
TEST_P(TileLoops, LowerRightMatchesALoop) {
  for (int64_t M : {1, 3, 5, 7, 8, 9, 13, 20})
    for (int64_t N : {1, 9, 16, 31, 33, 40, 47, 48, 49, 63, 65, 97}) {
      const int64_t kx = 7, ldx = kx + 2, ldy = N + 3, lda = N + 1, ldl = N + 5, ldc = N + 3;
      const uint64_t seed = static_cast<uint64_t>(M * 1000 + N);
      const auto X = randn(static_cast<size_t>(M * ldx), 1.0f, seed);
      const auto Y = randn(static_cast<size_t>(kx * ldy), 1.0f, seed + 1);
      const auto A = randn(static_cast<size_t>(M * lda), 1.0f, seed + 2);
      auto L = randn(static_cast<size_t>(N * ldl), 1.0f, seed + 3);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = i + 1; j < ldl; ++j) L[static_cast<size_t>(i * ldl + j)] = 0.0f;
      const auto C0 = randn(static_cast<size_t>(M * ldc), 1.0f, seed + 4);
      std::vector<float> C = C0;
      const float beta = 0.5f;
      detail::with_path(GetParam(), [&](auto path) {
        detail::gemm_plus_lower_right<decltype(path)::value>(M, N, kx, X.data(), ldx, Y.data(), ldy, A.data(), lda,
                                                             L.data(), ldl, C.data(), ldc, beta);
      });
      const int64_t wrong = wrong_entries(M, N, ldc, C, C0, beta, [&](int64_t i, int64_t j, auto add) {
        lower_right_terms(i, j, N, kx, X, ldx, Y, ldy, A, lda, L, ldl, add);
      });
      EXPECT_EQ(wrong, 0) << M << " x " << N;
    }
}

// A NaN in row p of B reaches through a triangle only the rows that sum over k = p (lower_k: i >= p;
// upper_k: i <= p), in gemm's parts and in gemm_plus_triangle: the diagonal blocks skip the
// triangle's zeros, never multiply them. Rows the NaN must not reach keep the values of a NaN-free B.
TEST_P(TileLoops, TriangleKeepsANaNToItsRows) {
  for (int64_t M : {1, 3, 4, 5, 6, 8, 9, 12, 13, 20, 32})
    for (int64_t N : {1, 8, 24, 33}) {
      const auto A = randn(static_cast<size_t>(M * M), 1.0f, static_cast<uint64_t>(M * 100 + N));
      const auto clean = randn(static_cast<size_t>(M * N), 1.0f, static_cast<uint64_t>(M * 100 + N + 1));
      for (int variant = 0; variant < 4; ++variant) {  // gemm lower_k, upper_k; gemm_plus_triangle lower, upper
        const bool lower = variant % 2 == 0;
        const auto product = [&](const std::vector<float>& B) {
          std::vector<float> C(static_cast<size_t>(M * N), 0.0f);
          detail::with_path(GetParam(), [&](auto path) {
            constexpr Path P = decltype(path)::value;
            const auto part = lower ? detail::Part::lower_k : detail::Part::upper_k;
            if (variant < 2)
              detail::gemm<P>(part, M, N, M, A.data(), M, B.data(), N, C.data(), N, 0.0f);
            else
              detail::gemm_plus_triangle<P>(part, M, N, 0, A.data(), M, B.data(), N, A.data(), M, B.data(), N, C.data(),
                                            N, 0.0f);
          });
          return C;
        };
        const auto reference = product(clean);
        for (int64_t p = 0; p < M; ++p) {
          std::vector<float> B = clean;
          B[static_cast<size_t>(p * N + N / 2)] = std::numeric_limits<float>::quiet_NaN();
          const auto C = product(B);
          int64_t wrong = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const size_t at = static_cast<size_t>(i * N + j);
              const bool reached = (lower ? i >= p : i <= p) && j == N / 2;
              wrong += reached ? !std::isnan(C[at]) : C[at] != reference[at];
            }
          EXPECT_EQ(wrong, 0) << "variant " << variant << ", " << M << " x " << N << ", NaN in row " << p;
        }
      }
    }
}

#if LIGHTNING_HAVE_AVX2
// The transposed tiles, which only the avx2 path has (kernels::TransposedTiles): the backward's dK
// stored straight from dK^T's tiles. gemm_plus_lower_right_transposed against a loop in double and
// bit for bit against gemm_plus_lower_right's C transposed, with and without X Y, with beta 0 and
// with beta 1 on a sum S (the earlier q heads' of a group), over one and two column tiles; the
// output's padding past M untouched.
TEST(TransposedTiles, MatchALoopAndTheTransposeOfTheirProduct) {
  constexpr Path P = Path::avx2;
  static_assert(kernels::TransposedTiles<P>::value && !kernels::TransposedTiles<Path::scalar>::value);
  using Ker = kernels::Kernels<P>;
  for (int64_t M : {Ker::MR, 3 * Ker::MR, 32 * Ker::MR})
    for (int64_t N : {Ker::NR, 2 * Ker::NR})
      for (int64_t kx : {0, 7, 128})
        for (bool sum : {false, true}) {
          const int64_t ldx = kx + 2, ldy = N + 3, lda = N + 1, ldl = N + 5, ldc = N, lds = N + 2, ldt = M + 3;
          const uint64_t seed = static_cast<uint64_t>(M * 1000 + N * 10 + kx);
          const auto X = randn(static_cast<size_t>(M * ldx), 1.0f, seed);
          const auto Y = randn(static_cast<size_t>(std::max<int64_t>(kx, 1) * ldy), 1.0f, seed + 1);
          const auto A = randn(static_cast<size_t>(M * lda), 1.0f, seed + 2);
          auto L = randn(static_cast<size_t>(N * ldl), 1.0f, seed + 3);
          for (int64_t i = 0; i < N; ++i)
            for (int64_t j = i + 1; j < ldl; ++j) L[static_cast<size_t>(i * ldl + j)] = 0.0f;
          const auto S = randn(static_cast<size_t>(M * lds), 1.0f, seed + 4);
          std::vector<float> C0(static_cast<size_t>(M * ldc), 0.0f);  // S at C's stride, or zeros
          if (sum)
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) C0[static_cast<size_t>(i * ldc + j)] = S[static_cast<size_t>(i * lds + j)];
          std::vector<float> C = C0, Ct(static_cast<size_t>(N * ldt), -1.0f);
          const float beta = sum ? 1.0f : 0.0f;
          detail::gemm_plus_lower_right<P>(M, N, kx, X.data(), ldx, Y.data(), ldy, A.data(), lda, L.data(), ldl,
                                           C.data(), ldc, beta);
          detail::gemm_plus_lower_right_transposed<P>(M, N, kx, X.data(), ldx, Y.data(), ldy, A.data(), lda, L.data(),
                                                      ldl, Ct.data(), ldt, sum ? S.data() : nullptr, lds);
          std::vector<float> back(static_cast<size_t>(M * ldc));
          int64_t bits = 0, padding = 0;
          for (int64_t j = 0; j < N; ++j)
            for (int64_t i = 0; i < ldt; ++i) {
              const float x = Ct[static_cast<size_t>(j * ldt + i)];
              if (i >= M) {
                padding += x != -1.0f;
                continue;
              }
              back[static_cast<size_t>(i * ldc + j)] = x;
              bits += x != C[static_cast<size_t>(i * ldc + j)];
            }
          const int64_t wrong = wrong_entries(M, N, ldc, back, C0, beta, [&](int64_t i, int64_t j, auto add) {
            lower_right_terms(i, j, N, kx, X, ldx, Y, ldy, A, lda, L, ldl, add);
          });
          const std::string what = std::to_string(M) + " x " + std::to_string(N) + ", kx " + std::to_string(kx) +
                                   (sum ? ", on S" : "");
          EXPECT_EQ(wrong, 0) << what;
          EXPECT_EQ(bits, 0) << what;
          EXPECT_EQ(padding, 0) << what;
        }
}
#endif

#if LIGHTNING_HAVE_AVX512
// avx512's plain products take 9-row tiles over 48 columns where the other rows make whole 8-row
// tiles (ProductsMatchALoop runs them at 9, 17 and 26 rows); avx2 has none.
TEST(PlainProductRows, NineWhereTheRestMakesWholeTiles) {
  EXPECT_EQ(detail::wide_row_tiles<Path::avx512>(128), 8);  // 8 x 9 + 7 x 8
  EXPECT_EQ(detail::wide_row_tiles<Path::avx512>(26), 2);
  EXPECT_EQ(detail::wide_row_tiles<Path::avx512>(9), 1);
  EXPECT_EQ(detail::wide_row_tiles<Path::avx512>(16), 0);
  EXPECT_EQ(detail::wide_row_tiles<Path::avx512>(20), 0);
  EXPECT_EQ(detail::wide_row_tiles<Path::avx2>(128), 0);
}

// The pair tiles, which only the avx512 path has (kernels::PairTiles): their layouts bit for bit
// against a loop, and gemm_pairs (C = beta C + X Y + A Z, 16 columns, Y and Z in pair layout) against
// a loop in double at row counts that split a rest, empty and short k ranges, and beta 0, 1 and otherwise.
TEST(PairTiles, MatchALoop) {
  constexpr Path P = Path::avx512;
  static_assert(kernels::PairTiles<P>::value && !kernels::PairTiles<Path::avx2>::value);
  using Ker = kernels::Kernels<P>;
  // Layouts: dst[q * ldd + 2 r + s] = scale[r] src[r * lds + 2 q + s]; the zip of row pairs.
  for (int64_t rows : {8, 16})
    for (int64_t cols : {16, 32, 128})
      for (bool scaled : {false, true}) {
        const int64_t lds = cols + 5, ldd = 2 * rows + 3;
        const auto src = randn(static_cast<size_t>(rows * lds), 1.0f, static_cast<uint64_t>(rows + cols));
        const auto scale = randn(static_cast<size_t>(rows), 1.0f, 3);
        std::vector<float> dst(static_cast<size_t>(cols / 2 * ldd), -1.0f);
        detail::pair_transpose<P>(rows, cols, src.data(), lds, dst.data(), ldd, scaled ? scale.data() : nullptr);
        int64_t wrong = 0;
        for (int64_t q = 0; q < cols / 2; ++q)
          for (int64_t e = 0; e < ldd; ++e) {
            const int64_t r = e / 2, c = 2 * q + e % 2;  // the padding past 2 rows entries untouched
            const float x = r < rows ? src[static_cast<size_t>(r * lds + c)] : -1.0f;
            const float want = r < rows && scaled ? scale[static_cast<size_t>(r)] * x : x;
            wrong += dst[static_cast<size_t>(q * ldd + e)] != want;
          }
        EXPECT_EQ(wrong, 0) << "pair_transpose " << rows << " x " << cols << (scaled ? " scaled" : "");
      }
  for (int64_t rows : {2, 8, 16}) {
    const int64_t lds = 21;
    const auto src = randn(static_cast<size_t>(rows * lds), 1.0f, static_cast<uint64_t>(rows));
    std::vector<float> dst(static_cast<size_t>(rows / 2 * 32 + 8), -1.0f);
    Ker::zip_row_pairs(rows, src.data(), lds, dst.data());
    int64_t wrong = 0;
    for (size_t e = 0; e < dst.size(); ++e) {
      const int64_t at = static_cast<int64_t>(e), q = at / 32, j = at % 32 / 2, s = at % 2;
      wrong += dst[e] != (q < rows / 2 ? src[static_cast<size_t>((2 * q + s) * lds + j)] : -1.0f);
    }
    EXPECT_EQ(wrong, 0) << "zip_row_pairs " << rows;
  }
  // Products: Y (kx x 16) and Z (kz x 16) laid out in pairs here, by a loop.
  const auto pairs = [](const std::vector<float>& plain, int64_t k) {
    std::vector<float> out(static_cast<size_t>(k / 2 * 32 + 1));
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < 16; ++j)
        out[static_cast<size_t>(p / 2 * 32 + 2 * j + p % 2)] = plain[static_cast<size_t>(p * 16 + j)];
    return out;
  };
  static_assert(Ker::PMR == 10, "the row counts below make tiles of 1, 3 and 5-10 rows, and split rests");
  for (int64_t M : {1, 3, 5, 8, 9, 10, 11, 13, 19, 20, 128})
    for (int64_t kx : {0, 2, 16, 128})
      for (int64_t kz : {0, 16})
        for (float beta : {0.0f, 1.0f, 0.5f}) {
          const uint64_t seed = static_cast<uint64_t>(M * 1000 + kx * 10 + kz);
          const int64_t ldx = kx + 3, lda = kz + 5, ldc = 19;
          const auto X = randn(static_cast<size_t>(M * ldx), 1.0f, seed);
          const auto Y = randn(static_cast<size_t>(kx * 16), 1.0f, seed + 1);
          const auto A = randn(static_cast<size_t>(M * lda), 1.0f, seed + 2);
          const auto Z = randn(static_cast<size_t>(kz * 16), 1.0f, seed + 3);
          const auto C0 = randn(static_cast<size_t>(M * ldc), 1.0f, seed + 4);
          const auto Yp = pairs(Y, kx), Zp = pairs(Z, kz);
          std::vector<float> C = C0;
          detail::gemm_pairs<P>(M, kx, X.data(), ldx, Yp.data(), kz, A.data(), lda, Zp.data(), C.data(), ldc, beta);
          const int64_t wrong = wrong_entries(M, 16, ldc, C, C0, beta, [&](int64_t i, int64_t j, auto add) {
            // L R over k steps (L row-major with row stride ldl, R plain k x 16)
            const auto product = [&](const std::vector<float>& L, int64_t ldl, const std::vector<float>& R, int64_t k) {
              for (int64_t p = 0; p < k; ++p)
                add(static_cast<double>(L[static_cast<size_t>(i * ldl + p)]) * R[static_cast<size_t>(p * 16 + j)]);
            };
            product(X, ldx, Y, kx);
            product(A, lda, Z, kz);
          });
          EXPECT_EQ(wrong, 0) << "gemm_pairs " << M << " rows, kx " << kx << ", kz " << kz << ", beta " << beta;
        }
}
#endif

LIGHTNING_INSTANTIATE_FOR_PATHS(TileLoops);

}  // namespace
}  // namespace lightning::test
