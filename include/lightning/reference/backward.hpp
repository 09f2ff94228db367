// The gradients of SPEC.md's closed form in double: what the tiled backward is tested against.
//
// Nothing here calls or shares code with the optimised paths: every gradient is a plain sum over
// token pairs (t, s) of the closed form, O(n^2) per head, with decay powers exp(-slope * p) taken
// directly. Slow on purpose.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lightning/types.hpp"

namespace lightning::reference {

/**
 * Gradients in double, contiguous: dq [batch, q_heads, seq, d_k], dk [batch, kv_heads, seq, d_k],
 * dv [batch, kv_heads, seq, d_v], d_state_in [batch, kv_heads, d_k, d_v], d_slopes [kv_heads]
 * (summed over the batch).
 */
struct Gradients {
  std::vector<double> dq, dk, dv, d_state_in, d_slopes;
};

/**
 * The gradients of L = sum_t do_t . o_t + <dS_out, S_out> for the closed form
 *   o_t   = c (lambda^{t+1} q_t S_in + sum_{s<=t} lambda^{t-s} (q_t . k_s) v_s)
 *   S_out = lambda^n S_in + sum_s lambda^{n-1-s} k_s^T v_s,    lambda = exp(-slope),
 * differentiated term by term (d lambda^p / d slope = -p lambda^p). q and d_o have H heads, k, v,
 * the states and slopes G (H divisible by G); state_in and d_state_out may be absent (zero).
 */
inline Gradients backward_quadratic(View<const float> q, View<const float> k, View<const float> v,
                                    View<const float> d_o, const float* slopes, double scale,
                                    View<const float> state_in = {}, View<const float> d_state_out = {}) {
  const int64_t B = q.batch, H = q.heads, G = k.heads, n = q.seq, dk = q.dim, dv = v.dim, group = H / G;
  const auto at = [](const View<const float>& x, int64_t b, int64_t h, int64_t t, int64_t i) {
    return x.absent() ? 0.0 : static_cast<double>(x.data[b * x.batch_stride + h * x.head_stride + t * x.seq_stride + i]);
  };
  Gradients r;
  r.dq.assign(static_cast<size_t>(B * H * n * dk), 0.0);
  r.dk.assign(static_cast<size_t>(B * G * n * dk), 0.0);
  r.dv.assign(static_cast<size_t>(B * G * n * dv), 0.0);
  r.d_state_in.assign(static_cast<size_t>(B * G * dk * dv), 0.0);
  r.d_slopes.assign(static_cast<size_t>(G), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      const double slope = slopes ? static_cast<double>(slopes[g]) : 0.0;
      const auto decay = [slope](int64_t p) { return std::exp(-slope * static_cast<double>(p)); };
      double* dS0 = &r.d_state_in[static_cast<size_t>((b * G + g) * dk * dv)];
      double& dslope = r.d_slopes[static_cast<size_t>(g)];
      // Terms through dS_out: S_out = lambda^n S_in + sum_s lambda^{n-1-s} k_s^T v_s.
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          const double w = at(d_state_out, b, g, i, j);
          dS0[i * dv + j] += decay(n) * w;
          dslope -= static_cast<double>(n) * decay(n) * at(state_in, b, g, i, j) * w;
          for (int64_t s = 0; s < n; ++s) {
            const double e = decay(n - 1 - s);
            r.dk[static_cast<size_t>(((b * G + g) * n + s) * dk + i)] += e * w * at(v, b, g, s, j);
            r.dv[static_cast<size_t>(((b * G + g) * n + s) * dv + j)] += e * w * at(k, b, g, s, i);
            dslope -= static_cast<double>(n - 1 - s) * e * at(k, b, g, s, i) * w * at(v, b, g, s, j);
          }
        }
      // Terms through the outputs of each q head of the group.
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        for (int64_t t = 0; t < n; ++t) {
          double* dq = &r.dq[static_cast<size_t>(((b * H + h) * n + t) * dk)];
          // o_t's initial-state term c lambda^{t+1} q_t S_in.
          const double e0 = scale * decay(t + 1);
          for (int64_t i = 0; i < dk; ++i)
            for (int64_t j = 0; j < dv; ++j) {
              const double qd = at(q, b, h, t, i) * at(d_o, b, h, t, j);
              dq[i] += e0 * at(d_o, b, h, t, j) * at(state_in, b, g, i, j);
              dS0[i * dv + j] += e0 * qd;
              dslope -= static_cast<double>(t + 1) * e0 * qd * at(state_in, b, g, i, j);
            }
          // o_t's pair terms c lambda^{t-s} (q_t . k_s) (do_t . v_s).
          for (int64_t s = 0; s <= t; ++s) {
            double qk = 0, dov = 0;
            for (int64_t i = 0; i < dk; ++i) qk += at(q, b, h, t, i) * at(k, b, g, s, i);
            for (int64_t j = 0; j < dv; ++j) dov += at(d_o, b, h, t, j) * at(v, b, g, s, j);
            const double e = scale * decay(t - s);
            double* dks = &r.dk[static_cast<size_t>(((b * G + g) * n + s) * dk)];
            double* dvs = &r.dv[static_cast<size_t>(((b * G + g) * n + s) * dv)];
            for (int64_t i = 0; i < dk; ++i) {
              dq[i] += e * dov * at(k, b, g, s, i);
              dks[i] += e * dov * at(q, b, h, t, i);
            }
            for (int64_t j = 0; j < dv; ++j) dvs[j] += e * qk * at(d_o, b, h, t, j);
            dslope -= static_cast<double>(t - s) * e * qk * dov;
          }
        }
    }
  return r;
}

}  // namespace lightning::reference
