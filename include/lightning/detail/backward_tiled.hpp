// The block loops of the tiled backward, written once; paths differ only in Kernels<P> (gemm<P>, transpose<P>).
//
// For one (batch, k/v head) pair and a block of m rows i, j with entry state S (forward order) and
// exit adjoint R (the gradient reaching the state after the block from later tokens and dS_out):
//   dQ  = (c lambda^{i+1}) dO S^T + P~ K               P~[i,j] = c lambda^{i-j} (do_i . v_j), j <= i
//   dK  = P~^T Q + (lambda^{m-1-j}) V R^T             summed over the group's q heads
//   dV  = A~^T dO + (lambda^{m-1-j}) K R              A~[i,j] = c lambda^{i-j} (q_i . k_j), j <= i
//   S  <- lambda^m S + (lambda^{m-1-j} K)^T V          R <- lambda^m R + (c lambda^{i+1} Q)^T dO
// Pass 1 runs the blocks forward: it keeps S, writes dQ and the intra-block (block-local) parts of
// dK and dV. Pass 2 runs them in reverse: it keeps R, adds the inter-block parts of dK and dV and
// ends with dS_in = R. Every intra-block product is computed once; only non-negative decay powers.
//
// The slope gradient, when asked for, is taken in forward mode during pass 1: with the tangent
// W_t = -dS_t/dslope = sum_{s<=t} (t-s) lambda^{t-s} k_s^T v_s + (t+1) lambda^{t+1} S_in,
//   dL/dslope = -( sum_t c q_t W_t do_t^T + <dS_out, W_{n-1}> ),
// and per block W_i = lambda^{i+1} (W + (i+1) S) + sum_{j<=i} (i-j) lambda^{i-j} k_j^T v_j, so only
// local weights (i+1), (i-j), (m-1-j) and m appear.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lightning/detail/convert.hpp"
#include "lightning/detail/gemm.hpp"
#include "lightning/detail/parallel.hpp"
#include "lightning/kernels/avx2.hpp"
#include "lightning/kernels/scalar.hpp"
#include "lightning/types.hpp"

namespace lightning::detail {

/** Everything a backward call computes over, already validated; absent outputs are not computed. */
template <class T>
struct BackwardArgs {
  View<const T> q, k, v, d_o;
  View<T> dq, dk, dv;
  View<const float> state_in, d_state_out;
  View<float> d_state_in;
  double* d_slopes;  // null, or one partial sum per (batch, k/v head), reduced by the caller
  const float* slopes;
  float scale;
  int64_t block;
};

/**
 * The decay powers of one k/v head for t in [0, block]: pow[t] = lambda^t, cpow[t] = scale lambda^t
 * and wpow[t] = t lambda^t (the slope tangent's weights), from exp(-slope t) in double. Only
 * non-negative powers; values below the smallest normal float are 0, so strong decay never meets
 * denormal arithmetic. Kept apart from the forward's table so each can change on its own.
 */
struct BackwardDecay {
  std::vector<float> pow, cpow, wpow;
  void fill(double slope, double scale, int64_t block) {
    for (auto* table : {&pow, &cpow, &wpow}) table->resize(static_cast<size_t>(block + 1));
    const auto flush = [](double x) { return std::abs(x) < FLT_MIN ? 0.0f : static_cast<float>(x); };
    for (int64_t t = 0; t <= block; ++t) {
      const double p = std::exp(-slope * static_cast<double>(t));
      pow[static_cast<size_t>(t)] = flush(p);
      cpow[static_cast<size_t>(t)] = flush(scale * p);
      wpow[static_cast<size_t>(t)] = flush(static_cast<double>(t) * p);
    }
  }
};

/** One worker's scratch for the backward, sized once per call: nothing here grows with n. */
struct BackwardWorkspace {
  int64_t block = 0, ldp = 0;  // ldp: leading dimension of the transposed and block x block buffers
  // Row-major blocks: q, d_o, d_o scaled by c lambda^{i+1}, k, k and v decayed to the block's end (vd
  // holds plain v in pass 1), per-block gradient sums, and the slope tangent's dO W^T.
  std::vector<float> q, d_o, dos, k, kd, vd, dq, dk, dv, y;
  // Transposed blocks (rows of length ldp): k^T, v^T, decayed v^T, tangent-weighted v^T, decayed q^T.
  std::vector<float> kt, vt, vdt, vwt, qdt;
  // Block x block products P and A, and the masked transpose of either.
  std::vector<float> p, a, pt;
  // Running states: S^T and its tangent W^T [d_v x d_k], the adjoint R [d_k x d_v] and R^T.
  std::vector<float> st, wt, r, rt;
  std::vector<float> to_end, to_end_weighted;   // per block row j: lambda^{m-1-j} and (m-1-j) lambda^{m-1-j}
  BackwardDecay decay;
  BackwardWorkspace(int64_t block_, int64_t dk_, int64_t dv_) : block(block_), ldp((block_ + 15) / 16 * 16) {
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    for (auto* b : {&q, &k, &kd, &dq, &dk, &y}) b->resize(sz(block * dk_));
    for (auto* b : {&d_o, &dos, &vd, &dv}) b->resize(sz(block * dv_));
    for (auto* b : {&kt, &qdt}) b->resize(sz(dk_ * ldp));
    for (auto* b : {&vt, &vdt, &vwt}) b->resize(sz(dv_ * ldp));
    for (auto* b : {&p, &a, &pt}) b->resize(sz(block * ldp));
    for (auto* b : {&st, &wt, &r, &rt}) b->resize(sz(dk_ * dv_));
    to_end.resize(sz(block));
    to_end_weighted.resize(sz(block));
  }
};

// Whether a path has its own register transpose. One without it borrows AVX2's when the build has
// AVX2 (the AVX-512 path: 8 x 8 is the tile the callers need, and 256-bit shuffles do it in 24
// instructions); otherwise it gets the loop.
template <class Ker, class = void>
struct has_transpose_8x8 : std::false_type {};
template <class Ker>
struct has_transpose_8x8<Ker, std::void_t<decltype(&Ker::transpose_8x8)>> : std::true_type {};
template <Path P>
struct TransposeKernel {
#if LIGHTNING_HAVE_AVX2
  using Ker = std::conditional_t<has_transpose_8x8<kernels::Kernels<P>>::value, kernels::Kernels<P>,
                                 kernels::Kernels<Path::avx2>>;
#else
  using Ker = kernels::Kernels<P>;
#endif
};

/**
 * dst[c * ldd + r] = scale[r] * src[r * lds + c] for r < rows, c < cols (scale null: 1), in 8 x 8
 * tiles: the path's register transpose (or AVX2's) for whole tiles, a loop for the edges. (A column-by-column
 * transpose strides through a few cache sets and thrashes them when rows are 128 floats apart.)
 */
template <Path P>
void transpose(int64_t rows, int64_t cols, const float* src, int64_t lds, float* dst, int64_t ldd,
               const float* scale = nullptr) {
  using Ker = typename TransposeKernel<P>::Ker;
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      if constexpr (has_transpose_8x8<Ker>::value)
        if (r0 + 8 <= rows && c0 + 8 <= cols) {
          Ker::transpose_8x8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd, scale ? scale + r0 : nullptr);
          continue;
        }
      for (int64_t c = c0; c < std::min(cols, c0 + 8); ++c)
        for (int64_t r = r0; r < std::min(rows, r0 + 8); ++r)
          dst[c * ldd + r] = (scale ? scale[r] : 1.0f) * src[r * lds + c];
    }
}

/**
 * The beta that decays a running state x (S or R) by `decay` in C = beta C + A B. A power flushed
 * to 0 still multiplies (0 * NaN stays NaN, as in the recurrence and the forward): beta = 0 would
 * overwrite x, so x is multiplied by 0 here and 1 is returned.
 */
inline float decay_beta(float* x, int64_t size, float decay) {
  if (decay != 0.0f) return decay;
  for (int64_t i = 0; i < size; ++i) x[i] *= 0.0f;
  return 1.0f;
}

/** Scales row i of a causal m x m block by decay[i - j] at column j <= i and zeroes columns i < j < m. */
inline void mask_block(int64_t m, float* x, int64_t ld, const float* decay) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = x + i * ld;
    for (int64_t j = 0; j <= i; ++j) row[j] *= decay[i - j];
    std::fill(row + i + 1, row + m, 0.0f);
  }
}

/** sum_i weight(i) * (x_i . y_i) over m rows of width d, each row's dot in float. */
template <class Weight>
double weighted_row_dots(int64_t m, int64_t d, const float* x, const float* y, Weight weight) {
  double acc = 0;
  for (int64_t i = 0; i < m; ++i) {
    float dot = 0;
    for (int64_t c = 0; c < d; ++c) dot += x[i * d + c] * y[i * d + c];
    acc += weight(i) * static_cast<double>(dot);
  }
  return acc;
}

/**
 * 0 when x[0 .. count) are all finite, NaN otherwise (x - x is NaN exactly for NaN and infinities).
 * d_slopes[g] sums a term for every token of head g, the weight-0 ones (lag 0, no initial state)
 * included, so a NaN or Inf anywhere in head g's inputs makes it NaN, as 0 * NaN is NaN (README).
 */
inline float nonfinite_poison(const float* x, int64_t count) {
  float p = 0.0f;
  for (int64_t i = 0; i < count; ++i) p += x[i] - x[i];
  return p;
}

/** Pass 1 (blocks in forward order) for batch b, k/v head g: dQ, the intra-block dK and dV, d_slopes. */
template <Path P, class T>
void backward_forward_pass(const BackwardArgs<T>& a, int64_t b, int64_t g, BackwardWorkspace& w) {
  const int64_t n = a.q.seq, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp;
  const bool need_dq = !a.dq.absent(), need_dk = !a.dk.absent(), need_dv = !a.dv.absent();
  const bool need_ds = a.d_slopes != nullptr;
  const bool need_p = need_dq || need_dk || need_ds, need_a = need_dv || need_ds;
  const bool keep_s = need_dq || need_ds;  // dQ's inter part and the slope tangent read S
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  const float* wpw = w.decay.wpow.data();
  float* St = w.st.data();
  float* Wt = w.wt.data();
  float* Pm = w.p.data();
  float* Am = w.a.data();
  float* Pt = w.pt.data();
  float* dQ = w.dq.data();
  bool s_zero = a.state_in.absent(), w_zero = true;
  float poison = 0.0f;  // NaN once a NaN or Inf is among the inputs d_slopes reads
  if (!s_zero && keep_s)
    for (int64_t i = 0; i < dk; ++i) {
      const float* row = a.state_in.row(b, g, i);
      for (int64_t c = 0; c < dv; ++c) St[c * dk + i] = row[c];
      if (need_ds) poison += nonfinite_poison(row, dv);
    }
  double slope_sum = 0;  // sum_t c q_t W_t do_t^T, in double across blocks

  for (int64_t t0 = 0; t0 < n; t0 += a.block) {
    const int64_t m = std::min(a.block, n - t0);
    // Rows first (contiguous reads), then tiled transposes into the packed operands.
    for (int64_t j = 0; j < m; ++j) {
      const T* kr = a.k.row(b, g, t0 + j);
      const T* vr = a.v.row(b, g, t0 + j);
      for (int64_t i = 0; i < dk; ++i) w.k[j * dk + i] = to_float(kr[i]);
      for (int64_t c = 0; c < dv; ++c) w.vd[j * dv + c] = to_float(vr[c]);
    }
    if (need_ds) poison += nonfinite_poison(w.k.data(), m * dk) + nonfinite_poison(w.vd.data(), m * dv);
    for (int64_t j = 0; j < m; ++j) {  // row scales towards the block's end: lambda^{m-1-j}, (m-1-j) lambda^{m-1-j}
      w.to_end[j] = pw[m - 1 - j];
      w.to_end_weighted[j] = wpw[m - 1 - j];
    }
    if (need_a) transpose<P>(m, dk, w.k.data(), dk, w.kt.data(), ldp);
    if (need_p) transpose<P>(m, dv, w.vd.data(), dv, w.vt.data(), ldp);
    if (keep_s) transpose<P>(m, dv, w.vd.data(), dv, w.vdt.data(), ldp, w.to_end.data());
    if (need_ds) transpose<P>(m, dv, w.vd.data(), dv, w.vwt.data(), ldp, w.to_end_weighted.data());
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float beta = h == g * group ? 0.0f : 1.0f;  // the group's q heads sum into dK and dV
      for (int64_t i = 0; i < m; ++i) {
        const T* qr = a.q.row(b, h, t0 + i);
        const T* dr = a.d_o.row(b, h, t0 + i);
        for (int64_t c = 0; c < dk; ++c) w.q[i * dk + c] = to_float(qr[c]);
        for (int64_t c = 0; c < dv; ++c) w.d_o[i * dv + c] = to_float(dr[c]);
      }
      if (need_ds) poison += nonfinite_poison(w.q.data(), m * dk) + nonfinite_poison(w.d_o.data(), m * dv);
      // Inter: dQ = (c lambda^{i+1}) dO S^T; the slope terms (i+1) q_i . dQ_i and c lambda^{i+1} q_i W do_i^T.
      if (keep_s && !s_zero) {
        // The scale first, as the forward's c q S: dO S^T alone may overflow where c dO S^T does not.
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < dv; ++c) w.dos[i * dv + c] = cpw[i + 1] * w.d_o[i * dv + c];
        gemm<P>(Part::full, m, dk, dv, w.dos.data(), dv, St, dk, dQ, dk, 0.0f);
        if (need_ds) slope_sum += weighted_row_dots(m, dk, w.q.data(), dQ, [](int64_t i) { return i + 1.0; });
      }
      if (need_ds && !w_zero) {
        gemm<P>(Part::full, m, dk, dv, w.d_o.data(), dv, Wt, dk, w.y.data(), dk, 0.0f);
        slope_sum += weighted_row_dots(m, dk, w.q.data(), w.y.data(), [&](int64_t i) { return double{cpw[i + 1]}; });
      }
      // Intra: P = dO V^T and A = Q K^T on and below the diagonal (entries above are never read).
      if (need_p) gemm<P>(Part::lower_c, m, m, dv, w.d_o.data(), dv, w.vt.data(), ldp, Pm, ldp, 0.0f);
      if (need_a) gemm<P>(Part::lower_c, m, m, dk, w.q.data(), dk, w.kt.data(), ldp, Am, ldp, 0.0f);
      if (need_ds) {
        double acc = 0;  // sum_{j<i} (i-j) lambda^{i-j} A_ij P_ij, times c below
        for (int64_t i = 1; i < m; ++i) {
          float row = 0;
          for (int64_t j = 0; j < i; ++j) row += wpw[i - j] * Am[i * ldp + j] * Pm[i * ldp + j];
          acc += row;
        }
        slope_sum += static_cast<double>(a.scale) * acc;
      }
      if (need_dq || need_dk) mask_block(m, Pm, ldp, cpw);  // P~ = c lambda^{i-j} P, zero above the diagonal
      if (need_dq) {
        gemm<P>(Part::lower_k, m, dk, m, Pm, ldp, w.k.data(), dk, dQ, dk, s_zero ? 0.0f : 1.0f);
        for (int64_t i = 0; i < m; ++i) {
          T* out = a.dq.row(b, h, t0 + i);
          for (int64_t c = 0; c < dk; ++c) out[c] = from_float<T>(dQ[i * dk + c]);
        }
      }
      if (need_dk) {  // dK += P~^T Q, P~^T upper triangular
        transpose<P>(m, m, Pm, ldp, Pt, ldp);
        gemm<P>(Part::upper_k, m, dk, m, Pt, ldp, w.q.data(), dk, w.dk.data(), dk, beta);
      }
      if (need_dv) {  // dV += A~^T dO
        mask_block(m, Am, ldp, cpw);
        transpose<P>(m, m, Am, ldp, Pt, ldp);
        gemm<P>(Part::upper_k, m, dv, m, Pt, ldp, w.d_o.data(), dv, w.dv.data(), dv, beta);
      }
    }
    for (int64_t j = 0; j < m; ++j) {
      if (need_dk) {
        T* out = a.dk.row(b, g, t0 + j);
        for (int64_t c = 0; c < dk; ++c) out[c] = from_float<T>(w.dk[j * dk + c]);
      }
      if (need_dv) {
        T* out = a.dv.row(b, g, t0 + j);
        for (int64_t c = 0; c < dv; ++c) out[c] = from_float<T>(w.dv[j * dv + c]);
      }
    }
    if (keep_s) {
      if (need_ds) {
        // W <- lambda^m (W + m S) + sum_j (m-1-j) lambda^{m-1-j} k_j^T v_j, from the entry S.
        const float decay_m = pw[m], weight_m = static_cast<float>(m) * pw[m];
        for (int64_t e = 0; e < dk * dv; ++e)
          Wt[e] = (w_zero ? 0.0f : decay_m * Wt[e]) + (s_zero ? 0.0f : weight_m * St[e]);
        gemm<P>(Part::full, dv, dk, m, w.vwt.data(), ldp, w.k.data(), dk, Wt, dk, 1.0f);
        w_zero = false;
      }
      gemm<P>(Part::full, dv, dk, m, w.vdt.data(), ldp, w.k.data(), dk, St, dk,
              s_zero ? 0.0f : decay_beta(St, dk * dv, pw[m]));
      s_zero = false;
    }
  }
  if (need_ds) {
    double out = slope_sum;
    if (!a.d_state_out.absent())
      for (int64_t i = 0; i < dk; ++i) {
        const float* row = a.d_state_out.row(b, g, i);
        poison += nonfinite_poison(row, dv);
        if (!w_zero)
          for (int64_t c = 0; c < dv; ++c) out += static_cast<double>(row[c]) * Wt[c * dk + i];
      }
    a.d_slopes[b * a.k.heads + g] = poison == 0.0f ? -out : static_cast<double>(poison);
  }
}

/** Pass 2 (blocks in reverse order) for batch b, k/v head g: the inter-block dK and dV, and dS_in. */
template <Path P, class T>
void backward_reverse_pass(const BackwardArgs<T>& a, int64_t b, int64_t g, BackwardWorkspace& w) {
  const int64_t n = a.q.seq, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp;
  const bool need_dk = !a.dk.absent(), need_dv = !a.dv.absent(), need_ds_in = !a.d_state_in.absent();
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  float* R = w.r.data();
  float* Rt = w.rt.data();
  bool r_zero = a.d_state_out.absent();
  if (!r_zero)
    for (int64_t i = 0; i < dk; ++i) std::copy_n(a.d_state_out.row(b, g, i), dv, R + i * dv);

  for (int64_t t0 = n == 0 ? 0 : (n - 1) / a.block * a.block; t0 >= 0 && n > 0; t0 -= a.block) {
    const int64_t m = std::min(a.block, n - t0);
    // out += (lambda^{m-1-j} x_j) state, row by row: dK with x = V and state R^T, dV with x = K and state R.
    const auto add_inter = [&](const View<const T>& x, const float* state, const View<T>& out, std::vector<float>& xd,
                               [[maybe_unused]] std::vector<float>& acc) {
      const int64_t dx = x.dim, dout = out.dim;
      for (int64_t j = 0; j < m; ++j) {
        const T* row = x.row(b, g, t0 + j);
        for (int64_t c = 0; c < dx; ++c) xd[j * dx + c] = pw[m - 1 - j] * to_float(row[c]);
      }
      if constexpr (std::is_same_v<T, float>) {  // straight into the rows pass 1 wrote
        gemm<P>(Part::full, m, dout, dx, xd.data(), dx, state, dout, out.row(b, g, t0), out.seq_stride, 1.0f);
      } else {
        gemm<P>(Part::full, m, dout, dx, xd.data(), dx, state, dout, acc.data(), dout, 0.0f);
        for (int64_t j = 0; j < m; ++j) {
          T* row = out.row(b, g, t0 + j);
          for (int64_t c = 0; c < dout; ++c) row[c] = from_float<T>(to_float(row[c]) + acc[j * dout + c]);
        }
      }
    };
    if (!r_zero && need_dk) {
      transpose<P>(dk, dv, R, dv, Rt, dk);
      add_inter(a.v, Rt, a.dk, w.vd, w.dk);
    }
    if (!r_zero && need_dv) add_inter(a.k, R, a.dv, w.kd, w.dv);
    if (t0 == 0 && !need_ds_in) break;  // the adjoint entering the first block is dS_in only
    // R <- lambda^m R + sum_h (c lambda^{i+1} Q_h)^T dO_h
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t i = 0; i < m; ++i) {
        const T* qr = a.q.row(b, h, t0 + i);
        const T* dr = a.d_o.row(b, h, t0 + i);
        for (int64_t c = 0; c < dk; ++c) w.q[i * dk + c] = to_float(qr[c]);
        for (int64_t c = 0; c < dv; ++c) w.d_o[i * dv + c] = to_float(dr[c]);
      }
      transpose<P>(m, dk, w.q.data(), dk, w.qdt.data(), ldp, cpw + 1);
      const float beta = r_zero ? 0.0f : h == g * group ? decay_beta(R, dk * dv, pw[m]) : 1.0f;
      gemm<P>(Part::full, dk, dv, m, w.qdt.data(), ldp, w.d_o.data(), dv, R, dv, beta);
      r_zero = false;
    }
  }
  if (need_ds_in)
    for (int64_t i = 0; i < dk; ++i) {
      float* out = a.d_state_in.row(b, g, i);
      if (r_zero)
        std::fill_n(out, dv, 0.0f);
      else
        std::copy_n(R + i * dv, dv, out);
    }
}

/** Both passes for every (batch, k/v head) pair, spread over `threads` workers. */
template <Path P, class T>
void backward_all(const BackwardArgs<T>& a, int threads) {
  const int64_t items = a.q.batch * a.k.heads;
  const bool pass1 = !a.dq.absent() || !a.dk.absent() || !a.dv.absent() || a.d_slopes;
  const bool pass2 = !a.dk.absent() || !a.dv.absent() || !a.d_state_in.absent();
  const int workers = worker_count(threads, items);
  std::vector<BackwardWorkspace> ws(static_cast<size_t>(workers), BackwardWorkspace(a.block, a.q.dim, a.v.dim));
  parallel_for(workers, items, [&](int worker, int64_t item) {
    const int64_t b = item / a.k.heads, g = item % a.k.heads;
    BackwardWorkspace& w = ws[static_cast<size_t>(worker)];
    w.decay.fill(a.slopes ? a.slopes[g] : 0.0, a.scale, a.block);
    if (pass1) backward_forward_pass<P>(a, b, g, w);
    if (pass2) backward_reverse_pass<P>(a, b, g, w);
  });
}

}  // namespace lightning::detail
