// The eigen_blocked baseline for one head, apart from the rest of the bench so that it can also be
// built with the avx2 path's flags (eigen_avx2.cpp): it includes nothing of lightning's, and its
// namespace (and, there, Eigen's) can be renamed so that no inline function is shared between
// translation units built for different instruction sets.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#ifndef LIGHTNING_BENCH_EIGEN_NS
#define LIGHTNING_BENCH_EIGEN_NS bench_eigen
#endif

namespace LIGHTNING_BENCH_EIGEN_NS {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;

/** decay[t] = lambda^t = exp(-slope t) for t in [0, len], underflow flushed to 0. */
inline std::vector<float> decay_powers(float slope, int64_t len) {
  std::vector<float> pw(static_cast<size_t>(len + 1));
  for (int64_t t = 0; t <= len; ++t) {
    const double x = std::exp(-static_cast<double>(slope) * static_cast<double>(t));
    pw[static_cast<size_t>(t)] = x < 1e-38 ? 0.0f : static_cast<float>(x);
  }
  return pw;
}

/**
 * The tiled form as a user would write it in an afternoon with Eigen products, 64-token blocks, for
 * one head: q, k, v and o are n x d row-major.
 */
inline void eigen_blocked_head(const float* q_, const float* k_, const float* v_, float* o_, int64_t n, int64_t d,
                               float slope) {
  constexpr int64_t kBlock = 64;
  const std::vector<float> pw = decay_powers(slope, kBlock);
  RowMat state = RowMat::Zero(d, d), scores(kBlock, kBlock);
  Eigen::VectorXf inter(kBlock), key_decay(kBlock);
  for (int64_t t0 = 0; t0 < n; t0 += kBlock) {
    const int64_t m = std::min(kBlock, n - t0);
    const int64_t at = t0 * d;
    ConstMap q(q_ + at, m, d), k(k_ + at, m, d), v(v_ + at, m, d);
    MutMap o(o_ + at, m, d);
    auto sc = scores.topLeftCorner(m, m);
    sc.noalias() = q * k.transpose();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) sc(i, j) = j <= i ? sc(i, j) * pw[static_cast<size_t>(i - j)] : 0.0f;
    for (int64_t i = 0; i < m; ++i) {
      inter(i) = pw[static_cast<size_t>(i + 1)];
      key_decay(i) = pw[static_cast<size_t>(m - 1 - i)];
    }
    o.noalias() = sc * v;
    o.noalias() += inter.head(m).asDiagonal() * (q * state);
    state *= pw[static_cast<size_t>(m)];
    state.noalias() += (key_decay.head(m).asDiagonal() * k).transpose() * v;
  }
}

}  // namespace LIGHTNING_BENCH_EIGEN_NS
