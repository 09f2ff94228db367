// The public backward: gradients of the tiled forward with respect to q, k, v, the initial state and the slopes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "lightning/attention.hpp"
#include "lightning/detail/backward_tiled.hpp"
#include "lightning/detail/validate.hpp"
#include "lightning/types.hpp"

namespace lightning {

namespace detail {

/**
 * The argument checks of backward() (and of mpi::backward and backward_varlen), all before anything
 * is written; the states have `state_rows` entries (-1: q.batch; backward_varlen: one per sequence).
 */
template <class T>
void check_backward(const char* where, const View<const T>& q, const View<const T>& k, const View<const T>& v,
                    const View<const T>& d_o, const View<T>& dq, const View<T>& dk, const View<T>& dv,
                    const Options& options, const View<const float>& state_in, const View<const float>& d_state_out,
                    const View<float>& d_state_in, const float* d_slopes, int64_t state_rows = -1) {
  std::vector<std::pair<const char*, Span>> inputs = {
      {"q", checked_span(where, "q", q)},
      {"k", checked_span(where, "k", k)},
      {"v", checked_span(where, "v", v)},
      {"d_o", checked_span(where, "d_o", d_o)},
      {"state_in", checked_span(where, "state_in", state_in)},
      {"d_state_out", checked_span(where, "d_state_out", d_state_out)}};
  if (q.dim < 1 || v.dim < 1) fail(where, "head dims must be >= 1: q.dim = ", q.dim, ", v.dim = ", v.dim);
  if (k.heads < 1 || q.heads % k.heads != 0)
    fail(where, "q.heads (", q.heads, ") must be a multiple of k.heads (", k.heads, ")");
  const int64_t B = q.batch, H = q.heads, G = k.heads, n = q.seq, d_k = q.dim, d_v = v.dim;
  const int64_t S = state_rows < 0 ? B : state_rows;
  require_shape(where, "k", k, B, G, n, d_k);
  require_shape(where, "v", v, B, G, n, d_v);
  require_shape(where, "d_o", d_o, B, H, n, d_v);
  if (!state_in.absent()) require_shape(where, "state_in", state_in, S, G, d_k, d_v);
  if (!d_state_out.absent()) require_shape(where, "d_state_out", d_state_out, S, G, d_k, d_v);
  check_options(where, options, G);
  if (options.slopes) {
    const auto lo = reinterpret_cast<uintptr_t>(options.slopes);
    inputs.push_back({"options.slopes", {lo, lo + static_cast<uintptr_t>(G) * sizeof(float)}});
  }

  // Outputs: shapes, no element written twice, and none overlapping an input or another output.
  std::vector<std::pair<const char*, Span>> outputs;
  const auto add_output = [&](const char* name, const auto& x, int64_t rows, int64_t heads, int64_t seq, int64_t dim) {
    const Span s = checked_span(where, name, x);
    if (x.absent()) return;
    require_shape(where, name, x, rows, heads, seq, dim);
    check_no_self_overlap(where, name, x);
    outputs.push_back({name, s});
  };
  add_output("dq", dq, B, H, n, d_k);
  add_output("dk", dk, B, G, n, d_k);
  add_output("dv", dv, B, G, n, d_v);
  add_output("d_state_in", d_state_in, S, G, d_k, d_v);
  if (d_slopes) {
    const auto lo = reinterpret_cast<uintptr_t>(d_slopes);
    outputs.push_back({"d_slopes", {lo, lo + static_cast<uintptr_t>(G) * sizeof(float)}});
  }
  const bool carried = !d_state_in.absent() && d_state_in.data == d_state_out.data &&
                       d_state_in.batch_stride == d_state_out.batch_stride &&
                       d_state_in.head_stride == d_state_out.head_stride &&
                       d_state_in.seq_stride == d_state_out.seq_stride;
  for (size_t i = 0; i < outputs.size(); ++i) {
    for (const auto& [name, span] : inputs) {
      const bool same_state = carried && outputs[i].first == std::string_view("d_state_in") &&
                              name == std::string_view("d_state_out");
      if (!same_state) check_disjoint(where, outputs[i].first, outputs[i].second, name, span);
    }
    for (size_t j = 0; j < i; ++j)
      check_disjoint(where, outputs[i].first, outputs[i].second, outputs[j].first, outputs[j].second);
  }

}

/**
 * backward() and backward_varlen() after their checks: `a` without its block and slope partial
 * sums, which are set here; `rows` batch entries, or with `offsets` sequences (backward_all).
 */
template <class T>
void run_backward(BackwardArgs<T> a, const Options& options, float* d_slopes, const int64_t* offsets, int64_t rows) {
  const int64_t G = a.k.heads;
  a.block = options.block_size ? options.block_size : default_backward_block_size(a.q.dim, a.v.dim, options.path);
  std::vector<double> slope_parts(d_slopes ? static_cast<size_t>(rows * G) : 0);
  a.d_slopes = d_slopes ? slope_parts.data() : nullptr;
  with_path(options.path, [&](auto path) { backward_all<decltype(path)::value>(a, options.threads, offsets, rows); });
  if (d_slopes)  // summed over the rows in a fixed order, so any thread count gives the same bits
    for (int64_t g = 0; g < G; ++g) {
      double sum = 0;
      for (int64_t r = 0; r < rows; ++r) sum += slope_parts[static_cast<size_t>(r * G + g)];
      d_slopes[g] = static_cast<float>(sum);
    }
}

}  // namespace detail

/**
 * The gradients of the forward (SPEC.md, "Backward"): with dO the gradient of o and dS_out that of
 * state_out, the adjoint state D_t = lambda D_{t+1} + scale q_t^T do_t (D_{n-1} = dS_out + scale
 * q_{n-1}^T do_{n-1}) gives
 *   dq_t = scale do_t S_t^T,  dk_t = v_t D_t^T,  dv_t = k_t D_t,  dS_in = lambda D_0 (dS_out when n = 0).
 *
 * Inputs: q [batch, H, n, d_k], k [batch, G, n, d_k], v [batch, G, n, d_v] and options.slopes,
 * options.scale as given to forward(); d_o [batch, H, n, d_v]; state_in (the forward's, optional,
 * zero when absent) and d_state_out (optional, zero when absent), fp32 [batch, G, d_k, d_v].
 *
 * Outputs, each optional (absent: not computed, and work only it needs is skipped): dq [batch, H, n,
 * d_k]; dk [batch, G, n, d_k] and dv [batch, G, n, d_v], summed over the q heads of each k/v head;
 * d_state_in fp32 [batch, G, d_k, d_v], which may be the very same view as d_state_out (to pass a
 * gradient back through a sequence processed in pieces); d_slopes, G floats, the gradient with
 * respect to options.slopes summed over the batch (taken at slope 0 when options.slopes is null).
 *
 * T is float, bf16 or fp16, as for forward(): q, k, v, d_o, dq, dk and dv in T; the arithmetic is
 * fp32 and each gradient is rounded to T once (states and d_slopes are fp32 always).
 *
 * The forward need not have been run: the tiled backward recomputes what it needs block by block,
 * in working memory independent of n. Throws lightning::invalid_argument, before writing anything,
 * for inconsistent or bad input, overlapping outputs, or an output overlapping an input.
 */
template <class T>
void backward(View<const T> q, View<const T> k, View<const T> v, View<const T> d_o, View<T> dq, View<T> dk,
              View<T> dv, const Options& options = {}, View<const float> state_in = {},
              View<const float> d_state_out = {}, View<float> d_state_in = {}, float* d_slopes = nullptr) {
  detail::check_backward("lightning::backward", q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in,
                         d_slopes);
  const int64_t B = q.batch, G = k.heads, d_k = q.dim, d_v = v.dim;
  // No token and no state holds an element: there is nothing to differentiate, and the slope
  // gradient, a sum over no terms, is 0. Returned here because such a call may be valid with a
  // batch whose product with the heads does not fit in int64 (found by the fuzzer).
  if ((q.seq == 0 || d_k == 0 || d_v == 0) && state_in.absent() && d_state_out.absent() && d_state_in.absent()) {
    if (d_slopes) std::fill_n(d_slopes, G, 0.0f);
    return;
  }
  detail::run_backward<T>({q, k, v, d_o, dq, dk, dv, state_in, d_state_out, d_state_in, nullptr, options.slopes,
                           options.scale, 0},
                          options, d_slopes, nullptr, B);
}

/** backward() for mutable inputs (so callers need not spell out View<const T>). */
template <class T>
void backward(View<T> q, View<T> k, View<T> v, View<T> d_o, View<T> dq, View<T> dk, View<T> dv,
              const Options& options = {}, View<const float> state_in = {}, View<const float> d_state_out = {},
              View<float> d_state_in = {}, float* d_slopes = nullptr) {
  backward<T>(View<const T>(q), View<const T>(k), View<const T>(v), View<const T>(d_o), dq, dk, dv, options, state_in,
              d_state_out, d_state_in, d_slopes);
}

}  // namespace lightning
