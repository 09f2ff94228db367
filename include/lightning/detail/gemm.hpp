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
  lower_k,  ///< rows of tile [i0, i0+mr) use only k < i0+mr (the product with a causally masked P)
  upper_k,  ///< rows of tile [i0, i0+mr) use only k >= i0 (the product with a transposed masked P)
};

template <Path P>
void gemm(Part part, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
          int64_t ldc, float beta) {
  using Ker = kernels::Kernels<P>;
  for (int64_t i0 = 0; i0 < M; i0 += Ker::MR) {
    const int mr = static_cast<int>(std::min<int64_t>(Ker::MR, M - i0));
    const int64_t k0 = part == Part::upper_k ? std::min(K, i0) : 0;
    const int64_t kc = part == Part::lower_k ? std::min(K, i0 + mr) : K;
    const int64_t cols = part == Part::lower_c ? std::min(N, i0 + mr) : N;
    for (int64_t j0 = 0; j0 < cols; j0 += Ker::NR) {
      const int nr = static_cast<int>(std::min<int64_t>(Ker::NR, cols - j0));
      Ker::gemm_tile(mr, nr, kc - k0, A + i0 * lda + k0, lda, B + k0 * ldb + j0, ldb, C + i0 * ldc + j0, ldc, beta);
    }
  }
}

}  // namespace lightning::detail
