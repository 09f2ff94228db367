// Naive double-precision forms of SPEC.md that tests and benchmarks compare against.
//
// Nothing here calls or shares code with the optimised paths: plain loops, double accumulators,
// decay powers taken as exp(-slope * t) directly. Slow on purpose.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lightning/types.hpp"

namespace lightning::reference {

/** Outputs in double: o is contiguous [batch, q_heads, seq, d_v], state [batch, kv_heads, d_k, d_v]. */
struct Result {
  std::vector<double> o;
  std::vector<double> state;
};

namespace detail {
/** o of [B, H, n, d_v] and state of [B, G, d_k, d_v], zeroed. */
inline Result zero_result(int64_t B, int64_t H, int64_t G, int64_t n, int64_t dk, int64_t dv) {
  return {std::vector<double>(static_cast<size_t>(B * H * n * dv)), std::vector<double>(static_cast<size_t>(B * G * dk * dv))};
}
inline double slope_of(const float* slopes, int64_t g) { return slopes ? static_cast<double>(slopes[g]) : 0.0; }
inline double at(const View<const float>& x, int64_t b, int64_t h, int64_t t, int64_t i) {
  return static_cast<double>(x.data[b * x.batch_stride + h * x.head_stride + t * x.seq_stride + i]);
}
}  // namespace detail

/**
 * The closed form o_t = c (lambda^{t+1} q_t S_in + sum_{s<=t} lambda^{t-s} (q_t . k_s) v_s),
 * O(n^2) per head, and S_out = lambda^n S_in + sum_s lambda^{n-1-s} k_s^T v_s.
 * q has H heads, k and v have G heads (H divisible by G); slopes has G entries or is null.
 */
inline Result quadratic(View<const float> q, View<const float> k, View<const float> v, const float* slopes,
                        double scale, View<const float> state_in = {}) {
  using detail::at;
  const int64_t B = q.batch, H = q.heads, G = k.heads, n = q.seq, dk = q.dim, dv = v.dim, group = H / G;
  Result r = detail::zero_result(B, H, G, n, dk, dv);
  const bool has_s0 = !state_in.absent();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      const double slope = detail::slope_of(slopes, g);
      for (int64_t t = 0; t < n; ++t) {
        double* o = &r.o[static_cast<size_t>(((b * H + h) * n + t) * dv)];
        for (int64_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (int64_t i = 0; i < dk; ++i) dot += at(q, b, h, t, i) * at(k, b, g, s, i);
          const double w = scale * std::exp(-slope * static_cast<double>(t - s)) * dot;
          for (int64_t j = 0; j < dv; ++j) o[j] += w * at(v, b, g, s, j);
        }
        if (has_s0) {
          const double decay = scale * std::exp(-slope * static_cast<double>(t + 1));
          for (int64_t i = 0; i < dk; ++i) {
            const double qi = decay * at(q, b, h, t, i);
            for (int64_t j = 0; j < dv; ++j) o[j] += qi * at(state_in, b, g, i, j);
          }
        }
      }
    }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      const double slope = detail::slope_of(slopes, g);
      double* S = &r.state[static_cast<size_t>((b * G + g) * dk * dv)];
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          double acc = has_s0 ? std::exp(-slope * static_cast<double>(n)) * at(state_in, b, g, i, j) : 0.0;
          for (int64_t s = 0; s < n; ++s)
            acc += std::exp(-slope * static_cast<double>(n - 1 - s)) * at(k, b, g, s, i) * at(v, b, g, s, j);
          S[i * dv + j] = acc;
        }
    }
  return r;
}

/**
 * The token-by-token recurrence S_t = lambda S_{t-1} + k_t^T v_t, o_t = c q_t S_t, O(n d_k d_v)
 * per head. Same arguments and result layout as `quadratic`.
 */
inline Result recurrence(View<const float> q, View<const float> k, View<const float> v, const float* slopes,
                         double scale, View<const float> state_in = {}) {
  using detail::at;
  const int64_t B = q.batch, H = q.heads, G = k.heads, n = q.seq, dk = q.dim, dv = v.dim, group = H / G;
  Result r = detail::zero_result(B, H, G, n, dk, dv);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      const double lambda = std::exp(-detail::slope_of(slopes, g));
      double* S = &r.state[static_cast<size_t>((b * G + g) * dk * dv)];
      if (!state_in.absent())
        for (int64_t i = 0; i < dk; ++i)
          for (int64_t j = 0; j < dv; ++j) S[i * dv + j] = at(state_in, b, g, i, j);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t i = 0; i < dk; ++i) {
          const double ki = at(k, b, g, t, i);
          for (int64_t j = 0; j < dv; ++j) S[i * dv + j] = lambda * S[i * dv + j] + ki * at(v, b, g, t, j);
        }
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          double* o = &r.o[static_cast<size_t>(((b * H + h) * n + t) * dv)];
          for (int64_t i = 0; i < dk; ++i) {
            const double qi = scale * at(q, b, h, t, i);
            for (int64_t j = 0; j < dv; ++j) o[j] += qi * S[i * dv + j];
          }
        }
      }
    }
  return r;
}

}  // namespace lightning::reference
