// The variable-length forward and backward: sequences of different lengths packed along one token axis.
#pragma once

#include <cstdint>
#include <vector>

#include "lightning/attention.hpp"
#include "lightning/backward.hpp"

namespace lightning {

namespace detail {

/** Checks cu_seqlens-style offsets: offsets[0] = 0, non-decreasing, offsets[num_seqs] <= tokens. */
inline void check_offsets(const char* where, const int64_t* offsets, int64_t num_seqs, int64_t tokens) {
  if (num_seqs < 0) fail(where, "num_seqs must be >= 0, got ", num_seqs);
  if (offsets == nullptr) fail(where, "offsets is null (it needs num_seqs + 1 entries, num_seqs = ", num_seqs, ")");
  if (offsets[0] != 0) fail(where, "offsets[0] must be 0, got ", offsets[0]);
  for (int64_t i = 0; i < num_seqs; ++i)
    if (offsets[i + 1] < offsets[i])
      fail(where, "offsets must be non-decreasing: offsets[", i, "] = ", offsets[i], " > offsets[", i + 1,
           "] = ", offsets[i + 1]);
  if (offsets[num_seqs] > tokens)
    fail(where, "offsets[", num_seqs, "] = ", offsets[num_seqs], " runs past the token axis of ", tokens, " tokens");
}

template <Path P, class T>
void forward_varlen_all(const ForwardArgs<T>& a, const int64_t* offsets, int64_t num_seqs, int threads) {
  if (nothing_to_write(a, offsets[num_seqs])) return;
  const int64_t items = num_seqs * a.k.heads;
  const int workers = worker_count(threads, items);
  std::vector<Workspace> ws =
      block_workspaces<P, Workspace>(workers, a.block, longest_sequence(offsets, num_seqs), a.q.dim, a.v.dim);
  parallel_for(workers, items, [&](int worker, int64_t item) {
    const int64_t s = item / a.k.heads;
    forward_group<P>(a, 0, item % a.k.heads, ws[static_cast<size_t>(worker)], offsets[s], offsets[s + 1], s);
  });
}

}  // namespace detail

/**
 * The forward over a packed batch of sequences of different lengths (variable-length prefill).
 *
 * q [1, H, tokens, d_k], k [1, G, tokens, d_k], v [1, G, tokens, d_v], o [1, H, tokens, d_v] hold
 * the sequences one after another on the token axis: sequence i is tokens [offsets[i],
 * offsets[i+1]) (the cu_seqlens convention, num_seqs + 1 entries, offsets[0] = 0, non-decreasing,
 * offsets[num_seqs] <= tokens; lengths 0 are allowed). Tokens from offsets[num_seqs] on are neither
 * read nor written. state_in and state_out are optional fp32 [num_seqs, G, d_k, d_v]: sequence i
 * starts from state_in[i] (zero when absent) and ends in state_out[i]; they may be the same view.
 * The result equals forward() on each sequence alone. Throws lightning::invalid_argument, before
 * writing anything, for inconsistent or bad input.
 */
template <class T>
void forward_varlen(View<const T> q, View<const T> k, View<const T> v, View<T> o, const int64_t* offsets,
                    int64_t num_seqs, const Options& options = {}, View<const float> state_in = {},
                    View<float> state_out = {}) {
  constexpr const char* where = "lightning::forward_varlen";
  std::vector<detail::Span> inputs;
  detail::Span out;
  detail::check_qkvo(where, q, k, v, o, inputs, out);
  if (q.batch != 1) detail::fail(where, "packed sequences take q.batch = 1, got ", q.batch);
  detail::check_offsets(where, offsets, num_seqs, q.seq);
  detail::check_options(where, options, k.heads);
  detail::check_states(where, state_in, state_out, num_seqs, k.heads, q.dim, v.dim, inputs, out);
  const detail::ForwardArgs<T> args{q, k, v, o, state_in, state_out, options.slopes, options.scale,
                                    detail::block_for(options, q.dim, v.dim)};
  detail::with_path(options.path, [&](auto path) {
    detail::forward_varlen_all<decltype(path)::value>(args, offsets, num_seqs, options.threads);
  });
}

/** forward_varlen() for mutable inputs. */
template <class T>
void forward_varlen(View<T> q, View<T> k, View<T> v, View<T> o, const int64_t* offsets, int64_t num_seqs,
                    const Options& options = {}, View<const float> state_in = {}, View<float> state_out = {}) {
  forward_varlen<T>(View<const T>(q), View<const T>(k), View<const T>(v), o, offsets, num_seqs, options, state_in,
                    state_out);
}

/**
 * The gradients of forward_varlen (backward() on each packed sequence alone).
 *
 * q [1, H, tokens, d_k], k [1, G, tokens, d_k], v [1, G, tokens, d_v], d_o [1, H, tokens, d_v] and
 * the optional outputs dq, dk, dv of the same shapes hold the sequences one after another on the
 * token axis, as for forward_varlen (offsets, num_seqs: the cu_seqlens convention). state_in,
 * d_state_out and d_state_in are optional fp32 [num_seqs, G, d_k, d_v], entry i sequence i's; as
 * in backward(), d_state_in may be the very same view as d_state_out. Each sequence's dq, dk, dv
 * and d_state_in are those backward() gives it alone, bit for bit; d_slopes (G floats, optional) is
 * the slope gradient summed over the sequences. Tokens from offsets[num_seqs] on are neither read
 * nor written. Throws lightning::invalid_argument, before writing anything, for bad offsets and
 * for what backward() rejects.
 */
template <class T>
void backward_varlen(View<const T> q, View<const T> k, View<const T> v, View<const T> d_o, View<T> dq, View<T> dk,
                     View<T> dv, const int64_t* offsets, int64_t num_seqs, const Options& options = {},
                     View<const float> state_in = {}, View<const float> d_state_out = {},
                     View<float> d_state_in = {}, float* d_slopes = nullptr) {
  constexpr const char* where = "lightning::backward_varlen";
  if (num_seqs < 0) detail::fail(where, "num_seqs must be >= 0, got ", num_seqs);
  detail::check_backward(where, q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in, d_slopes,
                         num_seqs);
  if (q.batch != 1) detail::fail(where, "packed sequences take q.batch = 1, got ", q.batch);
  detail::check_offsets(where, offsets, num_seqs, q.seq);
  detail::run_backward<T>({q, k, v, d_o, dq, dk, dv, state_in, d_state_out, d_state_in, nullptr, options.slopes,
                           options.scale, 0},
                          options, d_slopes, offsets, num_seqs);
}

/** backward_varlen() for mutable inputs. */
template <class T>
void backward_varlen(View<T> q, View<T> k, View<T> v, View<T> d_o, View<T> dq, View<T> dk, View<T> dv,
                     const int64_t* offsets, int64_t num_seqs, const Options& options = {},
                     View<const float> state_in = {}, View<const float> d_state_out = {},
                     View<float> d_state_in = {}, float* d_slopes = nullptr) {
  backward_varlen<T>(View<const T>(q), View<const T>(k), View<const T>(v), View<const T>(d_o), dq, dk, dv, offsets,
                     num_seqs, options, state_in, d_state_out, d_state_in, d_slopes);
}

}  // namespace lightning
