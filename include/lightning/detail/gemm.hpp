// The one loop over register tiles that turns a path's gemm_tile into a small matrix product.
#pragma once

#include <algorithm>
#include <cstdint>

#include "lightning/kernels/kernels.hpp"

namespace lightning::detail {

/** Which part of C = beta C + A B is computed. */
enum class Part {
  full,
  lower_c,  ///< only columns j <= last row of each row tile (the causal Q K^T; entries j > i are left to the mask)
  lower_k,  ///< row i uses only k <= i (the product with a causally masked P: a NaN or Inf in a
            ///< later row of B must not reach row i through a masked zero, 0 * NaN being NaN)
  upper_k,  ///< row i uses only k >= i (the product with a transposed masked P: a NaN or Inf in an
            ///< earlier row of B must not reach row i through a masked zero)
};

template <Path P>
void gemm(Part part, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
          int64_t ldc, float beta) {
  using Ker = kernels::Kernels<P>;
  for (int64_t i0 = 0; i0 < M; i0 += Ker::MR) {
    const int mr = static_cast<int>(std::min<int64_t>(Ker::MR, M - i0));
    // lower_k: the whole tile over k < i0, then the mr x mr triangle row by row (K >= M here).
    const int64_t kc = part == Part::lower_k ? std::min(K, i0) : K;
    const int64_t cols = part == Part::lower_c ? std::min(N, i0 + mr) : N;
    for (int64_t j0 = 0; j0 < cols; j0 += Ker::NR) {
      const int nr = static_cast<int>(std::min<int64_t>(Ker::NR, cols - j0));
      float* c = C + i0 * ldc + j0;
      if (part == Part::upper_k) {  // the mr x mr triangle row by row, then the whole tile over k >= i0 + mr
        const int64_t kt = std::min(K, i0 + mr);
        for (int r = 0; r < mr; ++r) {
          const int64_t k0 = std::min(K, i0 + r);
          Ker::gemm_tile(1, nr, kt - k0, A + (i0 + r) * lda + k0, lda, B + k0 * ldb + j0, ldb, c + r * ldc, ldc, beta);
        }
        if (K > kt) Ker::gemm_tile(mr, nr, K - kt, A + i0 * lda + kt, lda, B + kt * ldb + j0, ldb, c, ldc, 1.0f);
        continue;
      }
      if (part != Part::lower_k) {
        Ker::gemm_tile(mr, nr, K, A + i0 * lda, lda, B + j0, ldb, c, ldc, beta);
        continue;
      }
      if (kc > 0) Ker::gemm_tile(mr, nr, kc, A + i0 * lda, lda, B + j0, ldb, c, ldc, beta);
      for (int r = 0; r < mr; ++r)
        Ker::gemm_tile(1, nr, r + 1, A + (i0 + r) * lda + i0, lda, B + i0 * ldb + j0, ldb, c + r * ldc, ldc,
                       kc > 0 ? 1.0f : beta);
    }
  }
}

}  // namespace lightning::detail
