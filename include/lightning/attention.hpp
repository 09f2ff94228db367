// The public entry points: the tiled forward and the decode step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "lightning/detail/tiled.hpp"
#include "lightning/detail/validate.hpp"
#include "lightning/types.hpp"

namespace lightning {

namespace detail {

/** Calls fn(std::integral_constant<Path, P>{}) for the concrete path `p` names. */
template <class Fn>
void with_path(Path p, Fn&& fn) {
  switch (p == Path::automatic ? best_path : p) {
#if LIGHTNING_HAVE_AVX512
    case Path::avx512: fn(std::integral_constant<Path, Path::avx512>{}); return;
#endif
#if LIGHTNING_HAVE_AVX2
    case Path::avx2: fn(std::integral_constant<Path, Path::avx2>{}); return;
#endif
    default: fn(std::integral_constant<Path, Path::scalar>{}); return;
  }
}

/** Checks q, k, v, o against each other and returns the spans of the inputs and the output. */
template <class T>
void check_qkvo(const char* where, const View<const T>& q, const View<const T>& k, const View<const T>& v,
                const View<T>& o, std::vector<Span>& inputs, Span& out) {
  inputs = {checked_span(where, "q", q), checked_span(where, "k", k), checked_span(where, "v", v)};
  out = checked_span(where, "o", o);
  if (q.dim < 1 || v.dim < 1) fail(where, "head dims must be >= 1: q.dim = ", q.dim, ", v.dim = ", v.dim);
  if (k.heads < 1 || q.heads % k.heads != 0)
    fail(where, "q.heads (", q.heads, ") must be a multiple of k.heads (", k.heads, ")");
  require_shape(where, "k", k, q.batch, k.heads, q.seq, q.dim);
  require_shape(where, "v", v, q.batch, k.heads, q.seq, v.dim);
  require_shape(where, "o", o, q.batch, q.heads, q.seq, v.dim);
  check_no_self_overlap(where, "o", o);
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) check_disjoint(where, "o", out, names[i], inputs[static_cast<size_t>(i)]);
}

/**
 * Checks the optional fp32 state_in and state_out against the expected [count, G, d_k, d_v] and
 * against the spans of q, k, v (`inputs`) and o (`out`); they may only share memory as the very
 * same view (a state carried in place).
 */
inline void check_states(const char* where, const View<const float>& state_in, const View<float>& state_out,
                         int64_t count, int64_t kv_heads, int64_t dk, int64_t dv, const std::vector<Span>& inputs,
                         const Span& out) {
  const Span s_in = checked_span(where, "state_in", state_in);
  const Span s_out = checked_span(where, "state_out", state_out);
  if (!state_in.absent()) require_shape(where, "state_in", state_in, count, kv_heads, dk, dv);
  if (!state_out.absent()) {
    require_shape(where, "state_out", state_out, count, kv_heads, dk, dv);
    check_no_self_overlap(where, "state_out", state_out);
    const char* names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; ++i) check_disjoint(where, "state_out", s_out, names[i], inputs[static_cast<size_t>(i)]);
    check_disjoint(where, "state_out", s_out, "o", out);
    const bool same = state_in.data == state_out.data && state_in.batch_stride == state_out.batch_stride &&
                      state_in.head_stride == state_out.head_stride && state_in.seq_stride == state_out.seq_stride;
    if (!same) check_disjoint(where, "state_out", s_out, "state_in (unless it is the very same view)", s_in);
  }
  check_disjoint(where, "o", out, "state_in", s_in);
}

/** The block size a call with `options` runs with. */
inline int64_t block_for(const Options& options, int64_t dk, int64_t dv) {
  return options.block_size ? options.block_size : default_block_size(dk, dv, options.path);
}

}  // namespace detail

/**
 * The causal lightning-attention forward (SPEC.md): for every batch b and head h,
 *   S_t = lambda S_{t-1} + k_t^T v_t,  o_t = scale * q_t S_t,  S_{-1} = state_in (zero if absent).
 *
 * q [batch, H, n, d_k], k [batch, G, n, d_k], v [batch, G, n, d_v], o [batch, H, n, d_v], with H a
 * multiple of G (grouped heads: q head h reads k/v head h / (H/G)). state_in and state_out are
 * optional fp32 [batch, G, d_k, d_v]; they may be the same buffer, to carry a state in place.
 * Throws lightning::invalid_argument, before writing anything, for inconsistent or bad input.
 */
template <class T>
void forward(View<const T> q, View<const T> k, View<const T> v, View<T> o, const Options& options = {},
             View<const float> state_in = {}, View<float> state_out = {}) {
  constexpr const char* where = "lightning::forward";
  std::vector<detail::Span> inputs;
  detail::Span out;
  detail::check_qkvo(where, q, k, v, o, inputs, out);
  detail::check_options(where, options, k.heads);
  detail::check_states(where, state_in, state_out, q.batch, k.heads, q.dim, v.dim, inputs, out);
  const detail::ForwardArgs<T> args{q, k, v, o, state_in, state_out, options.slopes, options.scale,
                                    detail::block_for(options, q.dim, v.dim)};
  detail::with_path(options.path, [&](auto path) { detail::forward_all<decltype(path)::value>(args, options.threads); });
}

/** forward() for mutable inputs (so callers need not spell out View<const T>). */
template <class T>
void forward(View<T> q, View<T> k, View<T> v, View<T> o, const Options& options = {},
             View<const float> state_in = {}, View<float> state_out = {}) {
  forward<T>(View<const T>(q), View<const T>(k), View<const T>(v), o, options, state_in, state_out);
}

/**
 * One decode step: for each sequence b and head, S = lambda S + k^T v, o = scale * q S, with the
 * state updated in place. q [batch, H, 1, d_k], k [batch, G, 1, d_k], v [batch, G, 1, d_v],
 * o [batch, H, 1, d_v].
 *
 * Without `slots`, states is [batch, G, d_k, d_v]. With `slots` (batch entries), states is a
 * cache [slots, G, d_k, d_v] and sequence b uses states[slots[b]]; a negative slot marks padding,
 * whose state and output are neither read nor written. Two sequences may not share a slot.
 */
template <class T>
void decode(View<const T> q, View<const T> k, View<const T> v, View<T> o, View<float> states,
            const Options& options = {}, const int64_t* slots = nullptr) {
  constexpr const char* where = "lightning::decode";
  std::vector<detail::Span> inputs;
  detail::Span out;
  detail::check_qkvo(where, q, k, v, o, inputs, out);
  if (q.seq != 1) detail::fail(where, "decode takes one token per sequence: q.seq = ", q.seq);
  detail::check_options(where, options, k.heads);
  const detail::Span s = detail::checked_span(where, "states", states);
  detail::require_shape(where, "states", states, slots ? states.batch : q.batch, k.heads, q.dim, v.dim);
  detail::check_no_self_overlap(where, "states", states);
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) detail::check_disjoint(where, "states", s, names[i], inputs[i]);
  detail::check_disjoint(where, "states", s, "o", out);
  if (slots) {
    std::vector<std::pair<int64_t, int64_t>> used;  // (slot, sequence)
    for (int64_t b = 0; b < q.batch; ++b) {
      if (slots[b] >= states.batch)
        detail::fail(where, "slots[", b, "] = ", slots[b], " is out of range for a cache of ", states.batch, " slots");
      if (slots[b] >= 0) used.emplace_back(slots[b], b);
    }
    std::sort(used.begin(), used.end());
    const auto dup = std::adjacent_find(used.begin(), used.end(), [](auto& x, auto& y) { return x.first == y.first; });
    if (dup != used.end())
      detail::fail(where, "slots[", dup->second, "] and slots[", (dup + 1)->second, "]: two sequences share cache slot ",
                   dup->first);
  }
  const detail::DecodeArgs<T> args{q, k, v, o, states, slots, options.slopes, options.scale};
  detail::with_path(options.path, [&](auto path) { detail::decode_all<decltype(path)::value>(args, options.threads); });
}

/** decode() for mutable inputs. */
template <class T>
void decode(View<T> q, View<T> k, View<T> v, View<T> o, View<float> states, const Options& options = {},
            const int64_t* slots = nullptr) {
  decode<T>(View<const T>(q), View<const T>(k), View<const T>(v), o, states, options, slots);
}

}  // namespace lightning
