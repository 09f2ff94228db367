// The variable-length forward: sequences of different lengths packed along one token axis.
#pragma once

#include <cstdint>
#include <vector>

#include "lightning/attention.hpp"

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
  const int64_t items = num_seqs * a.k.heads;
  const int workers = worker_count(threads, items);
  std::vector<Workspace> ws = workspaces<Workspace>(workers, a.block, block_stride<P>(a.block), a.q.dim, a.v.dim);
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

}  // namespace lightning
