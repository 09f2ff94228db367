// The methods the benchmark times, each one small function over the same inputs, listed in `methods()`.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <lightning/detail/buffer.hpp>
#include <lightning/detail/parallel.hpp>
#include <lightning/detail/tiled.hpp>
#include <lightning/lightning.hpp>

#include "eigen_blocked.hpp"

namespace bench {

inline constexpr int64_t kHeads = 8;

/**
 * One shape's data: batch 1, kHeads heads, contiguous [1, H, n, d] q, k, v and o, d_k = d_v = d.
 * Rows that need more (bf16 copies, the backward's d_o and gradients) make it in Method::prepare,
 * before their timing starts; it lives until the shape changes.
 */
struct Problem {
  int64_t n = 0, d = 0;
  // fp32 tensors start 64-byte lines, as PyTorch's and ggml's allocators give them (malloc's large
  // blocks start 16 bytes past a line): a row of 16 floats is then one line, and outputs stream.
  lightning::detail::Floats q, k, v, o;
  std::vector<lightning::bf16> q16, k16, v16, o16;  // q, k, v rounded to bf16, and a bf16 output
  lightning::detail::Floats d_o, dq, dk, dv;        // the backward's input gradient and outputs
  const float* slopes = nullptr;                    // kHeads decay rates
  int threads = 1;                                  // 0: every core
};

enum class Kind { linear, quadratic };

/** A row of the sweep: how to run it, what it counts and whose FMA peak is its roofline. */
struct Method {
  std::string name;
  Kind kind;
  lightning::Path isa;
  std::function<double(int64_t n, int64_t d)> flops;
  std::function<void(Problem&)> run;
  std::function<void(Problem&)> prepare = [](Problem&) {};  // untimed, before the first run on a shape
  bool backward = false;  // a backward row: its table line also gives backward / forward time
};

using bench_eigen::ConstMap;
using bench_eigen::decay_powers;
using bench_eigen::MutMap;
using bench_eigen::RowMat;

/** SPEC.md's tiled count over all heads: per block of m rows 2 (m(m+1)/2 (d_k + d_v) + 2 m d_k d_v). */
inline double tiled_flops(int64_t n, int64_t d, int64_t block) {
  double f = 0;
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const double m = static_cast<double>(std::min(block, n - t0));
    f += 2 * (m * (m + 1) / 2 * 2 * d + 2 * m * d * d);
  }
  return f * kHeads;
}
/**
 * The backward's count over all heads (SPEC.md gives none; derived here, as the backward computes):
 * per block of m rows the causal pairs m(m+1)/2 meet five products, P = dO V^T and A = Q K^T, then
 * P~ K, P~^T Q and A~^T dO (3 of width d_k, 2 of width d_v), and five m x d_k x d_v products, dO S^T
 * and the update of S in the forward-order pass, V R^T, K R and the update of R in the reverse one:
 * 2 (m(m+1)/2 (3 d_k + 2 d_v) + 5 m d_k d_v), 2.5 times the forward's when d_k = d_v.
 */
inline double backward_flops(int64_t n, int64_t d, int64_t block) {
  double f = 0;
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const double m = static_cast<double>(std::min(block, n - t0));
    f += 2 * (m * (m + 1) / 2 * 5 * d + 5 * m * d * d);
  }
  return f * kHeads;
}
/** Causal quadratic attention over all heads: n(n+1)/2 pairs, each a d_k dot and a d_v axpy. */
inline double quadratic_flops(int64_t n, int64_t d) {
  return kHeads * 2.0 * (static_cast<double>(n) * (n + 1) / 2) * (2.0 * d);
}
/** The recurrence and decode: 4 d_k d_v per token and head (state update plus read-out). */
inline double recurrent_flops(int64_t n, int64_t d) { return kHeads * 4.0 * n * d * d; }

/** Runs fn(head) for every head, on p.threads workers (the way lightning spreads heads). */
template <class Fn>
void for_heads(const Problem& p, Fn&& fn) {
  namespace ld = lightning::detail;
  ld::parallel_for(ld::worker_count(p.threads, kHeads), kHeads, [&](int, int64_t h) { fn(h); });
}

/** The library's forward on one path. */
inline void run_lightning(Problem& p, lightning::Path path) {
  lightning::Options opt;
  opt.slopes = p.slopes;
  opt.threads = p.threads;
  opt.path = path;
  lightning::forward(lightning::bhnd(p.q.data(), 1, kHeads, p.n, p.d), lightning::bhnd(p.k.data(), 1, kHeads, p.n, p.d),
                     lightning::bhnd(p.v.data(), 1, kHeads, p.n, p.d), lightning::bhnd(p.o.data(), 1, kHeads, p.n, p.d),
                     opt);
}

/** q, k and v rounded to bf16 (and a bf16 output) for the bf16 rows, once per shape. */
inline void prepare_bf16(Problem& p) {
  if (p.q16.size() == p.q.size()) return;
  const auto round = [](const lightning::detail::Floats& x, std::vector<lightning::bf16>& y) {
    y.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = lightning::bf16(x[i]);
  };
  round(p.q, p.q16);
  round(p.k, p.k16);
  round(p.v, p.v16);
  p.o16.assign(p.o.size(), lightning::bf16(0.0f));
}

/** The library's forward with bf16 q, k, v and o (fp32 sums and states) on one path. */
inline void run_lightning_bf16(Problem& p, lightning::Path path) {
  lightning::Options opt;
  opt.slopes = p.slopes;
  opt.threads = p.threads;
  opt.path = path;
  lightning::forward(lightning::bhnd(p.q16.data(), 1, kHeads, p.n, p.d),
                     lightning::bhnd(p.k16.data(), 1, kHeads, p.n, p.d),
                     lightning::bhnd(p.v16.data(), 1, kHeads, p.n, p.d),
                     lightning::bhnd(p.o16.data(), 1, kHeads, p.n, p.d), opt);
}

/** d_o (the o buffer's shape, fixed pseudo-random values) and room for dq, dk, dv, once per shape. */
inline void prepare_backward(Problem& p) {
  if (p.d_o.size() == p.o.size()) return;
  p.d_o.resize(p.o.size());
  uint32_t x = 12345;
  for (auto& e : p.d_o) {  // uniform in [-1, 1) / sqrt(d), from a 32-bit LCG: cheap at n = 2^20
    x = x * 1664525u + 1013904223u;
    e = (static_cast<float>(x >> 8) / 8388608.0f - 1.0f) / std::sqrt(static_cast<float>(p.d));
  }
  for (auto* g : {&p.dq, &p.dk, &p.dv}) g->assign(p.o.size(), 0.0f);
}

/** lightning::backward on one path: dq, dk and dv from d_o (no states, no slope gradient). */
inline void run_backward(Problem& p, lightning::Path path) {
  lightning::Options opt;
  opt.slopes = p.slopes;
  opt.threads = p.threads;
  opt.path = path;
  const auto in = [&](const lightning::detail::Floats& x) { return lightning::bhnd(x.data(), 1, kHeads, p.n, p.d); };
  const auto out = [&](lightning::detail::Floats& x) { return lightning::bhnd(x.data(), 1, kHeads, p.n, p.d); };
  lightning::backward(in(p.q), in(p.k), in(p.v), in(p.d_o), out(p.dq), out(p.dk), out(p.dv), opt);
}

/**
 * Causal softmax attention as flash attention does it on a CPU: 64-row query blocks against 64-key
 * blocks, an online softmax (running max and sum) so no n x n matrix exists, the products through
 * Eigen, and key blocks above the diagonal skipped.
 */
inline void run_flash(Problem& p) {
  constexpr int64_t kBq = 64, kBk = 64;
  const int64_t n = p.n, d = p.d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for_heads(p, [&](int64_t h) {
    const float* Q = p.q.data() + h * n * d;
    const float* K = p.k.data() + h * n * d;
    const float* V = p.v.data() + h * n * d;
    float* O = p.o.data() + h * n * d;
    RowMat s(kBq, kBk), acc(kBq, d);
    Eigen::ArrayXf row_max(kBq), row_sum(kBq);
    for (int64_t i0 = 0; i0 < n; i0 += kBq) {
      const int64_t mr = std::min(kBq, n - i0);
      ConstMap qb(Q + i0 * d, mr, d);
      row_max.head(mr).setConstant(-std::numeric_limits<float>::infinity());
      row_sum.head(mr).setZero();
      acc.topRows(mr).setZero();
      for (int64_t j0 = 0; j0 < i0 + mr; j0 += kBk) {
        const int64_t nc = std::min(kBk, i0 + mr - j0);
        ConstMap kb(K + j0 * d, nc, d), vb(V + j0 * d, nc, d);
        auto sb = s.topLeftCorner(mr, nc);
        sb.noalias() = scale * (qb * kb.transpose());
        if (j0 + nc - 1 > i0)  // the diagonal block: mask keys after the query
          for (int64_t r = 0; r < mr; ++r)
            for (int64_t c = std::max<int64_t>(0, i0 + r + 1 - j0); c < nc; ++c)
              sb(r, c) = -std::numeric_limits<float>::infinity();
        const Eigen::ArrayXf new_max = row_max.head(mr).max(sb.array().rowwise().maxCoeff());
        const Eigen::ArrayXf alpha = (row_max.head(mr) - new_max).exp();
        sb = (sb.array().colwise() - new_max).exp().matrix();
        row_sum.head(mr) = row_sum.head(mr) * alpha + sb.array().rowwise().sum();
        acc.topRows(mr) = alpha.matrix().asDiagonal() * acc.topRows(mr);
        acc.topRows(mr).noalias() += sb * vb;
        row_max.head(mr) = new_max;
      }
      MutMap(O + i0 * d, mr, d) = (acc.topRows(mr).array().colwise() / row_sum.head(mr)).matrix();
    }
  });
}

/** The quadratic form ((Q K^T) .* M) V of reference::quadratic, literally: an n x n matrix per head. */
inline void run_naive_quadratic(Problem& p) {
  const int64_t n = p.n, d = p.d;
  for_heads(p, [&](int64_t h) {
    ConstMap q(p.q.data() + h * n * d, n, d), k(p.k.data() + h * n * d, n, d), v(p.v.data() + h * n * d, n, d);
    const std::vector<float> pw = decay_powers(p.slopes[h], n);
    RowMat scores = q * k.transpose();
    for (int64_t t = 0; t < n; ++t)
      for (int64_t s = 0; s < n; ++s) scores(t, s) = s <= t ? scores(t, s) * pw[static_cast<size_t>(t - s)] : 0.0f;
    MutMap(p.o.data() + h * n * d, n, d).noalias() = scores * v;
  });
}

/** The token-by-token recurrence in fp32: S = lambda S + k^T v, o = q S, one token at a time. */
inline void run_recurrence(Problem& p) {
  const int64_t n = p.n, d = p.d;
  for_heads(p, [&](int64_t h) {
    const float lambda = decay_powers(p.slopes[h], 1)[1];
    std::vector<float> state(static_cast<size_t>(d * d), 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const float* q = p.q.data() + (h * n + t) * d;
      const float* k = p.k.data() + (h * n + t) * d;
      const float* v = p.v.data() + (h * n + t) * d;
      float* o = p.o.data() + (h * n + t) * d;
      std::fill_n(o, d, 0.0f);
      for (int64_t i = 0; i < d; ++i) {
        float* srow = state.data() + i * d;
        for (int64_t j = 0; j < d; ++j) srow[j] = lambda * srow[j] + k[i] * v[j];
        for (int64_t j = 0; j < d; ++j) o[j] += q[i] * srow[j];
      }
    }
  });
}

#if LIGHTNING_HAVE_AVX512
}  // namespace bench
/** eigen_blocked_head built without AVX-512 (eigen_avx2.cpp). */
void eigen_blocked_head_avx2(const float* q, const float* k, const float* v, float* o, int64_t n, int64_t d,
                             float slope);
namespace bench {
#endif

/** One head of the tiled form written plainly with Eigen products (eigen_blocked.hpp). */
using EigenHead = void (*)(const float* q, const float* k, const float* v, float* o, int64_t n, int64_t d, float slope);

/**
 * An Eigen build of the tiled form, 64-token blocks, head by head: `eigen_blocked` and, where
 * -march=native has AVX-512, the same built for AVX2 only (the avx2 path's comparison).
 */
template <EigenHead head>
inline void run_eigen_blocked(Problem& p) {
  for_heads(p, [&](int64_t h) {
    const int64_t at = h * p.n * p.d;
    head(p.q.data() + at, p.k.data() + at, p.v.data() + at, p.o.data() + at, p.n, p.d, p.slopes[h]);
  });
}

/** The block size the library picks for d_k = d_v = d on a path (forward and backward alike). */
inline int64_t block_of(int64_t d, lightning::Path path) { return lightning::detail::default_block_size(d, d, path); }

/** Every method of the sweep; a new row is one more entry here. */
inline std::vector<Method> methods() {
  using lightning::Path;
  std::vector<Method> list;
  for (Path path : lightning::compiled_paths) {
    list.push_back({std::string("lightning_") + lightning::path_name(path), Kind::linear, path,
                    [path](int64_t n, int64_t d) { return tiled_flops(n, d, block_of(d, path)); },
                    [path](Problem& p) { run_lightning(p, path); }});
  }
  const Path best = Path::automatic;  // Eigen uses the widest ISA -march=native gives: the best FMA peak
  {
    const Path path = lightning::best_path;
    list.push_back({std::string("lightning_bf16_") + lightning::path_name(path), Kind::linear, path,
                    [path](int64_t n, int64_t d) { return tiled_flops(n, d, block_of(d, path)); },
                    [path](Problem& p) { run_lightning_bf16(p, path); }, prepare_bf16});
  }
  for (Path path : lightning::compiled_paths) {
    list.push_back({std::string("backward_") + lightning::path_name(path), Kind::linear, path,
                    [path](int64_t n, int64_t d) { return backward_flops(n, d, block_of(d, path)); },
                    [path](Problem& p) { run_backward(p, path); }, prepare_backward, true});
  }
  list.push_back({"eigen_blocked", Kind::linear, best, [](int64_t n, int64_t d) { return tiled_flops(n, d, 64); },
                  run_eigen_blocked<bench_eigen::eigen_blocked_head>});
#if LIGHTNING_HAVE_AVX512
  list.push_back({"eigen_blocked_avx2", Kind::linear, Path::avx2,
                  [](int64_t n, int64_t d) { return tiled_flops(n, d, 64); },
                  run_eigen_blocked<eigen_blocked_head_avx2>});
#endif
  list.push_back({"recurrence", Kind::linear, best, recurrent_flops, run_recurrence});
  list.push_back({"flash_softmax", Kind::quadratic, best, quadratic_flops, run_flash});
  list.push_back({"naive_quadratic", Kind::quadratic, best, quadratic_flops, run_naive_quadratic});
  return list;
}

}  // namespace bench
