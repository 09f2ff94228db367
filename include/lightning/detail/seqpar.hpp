// Sequence parallelism (SPEC.md): pieces run from a zero state, an exclusive scan of their states, a read-out correction.
//
// Shared by the threaded split of detail/tiled.hpp and by anything that computes pieces elsewhere
// (processes): the scan operator and the correction are built on gemm<P>/Kernels<P>, so every path
// has them, and every decay factor is a non-negative power exp(-slope n) taken in double.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lightning/detail/buffer.hpp"
#include "lightning/detail/convert.hpp"
#include "lightning/detail/gemm.hpp"
#include "lightning/types.hpp"

namespace lightning::detail {

/** lambda^n = exp(-slope n) for n >= 0, in double; below the smallest normal float it is 0. */
inline float decay_power(double slope, int64_t n) {
  const double p = std::exp(-slope * static_cast<double>(n));
  return p < FLT_MIN ? 0.0f : static_cast<float>(p);
}

/**
 * How many of `len` rows a correction reaches before its weight lambda^t (t = 1, 2, ...) leaves the
 * normal floats, past t = -ln(FLT_MIN) / slope, where decay_power gives 0: all of them without decay.
 */
inline int64_t rows_before_underflow(double slope, int64_t len) {
  if (!(slope > 0)) return len;
  const double rows = std::ceil(-std::log(static_cast<double>(FLT_MIN)) / slope) + 1;
  return rows >= static_cast<double>(len) ? len : static_cast<int64_t>(rows);
}

/**
 * The scan operator (A, n_a) then (B, n_b) -> (lambda^{n_b} A + B, n_a + n_b), in place on the
 * later element: later = lambda^{n_later} earlier + later over `count` floats.
 */
template <Path P>
void combine_states(int64_t count, const float* earlier, float* later, double slope, int64_t n_later) {
  const float p = decay_power(slope, n_later);
  if (p != 0.0f) {
    kernels::Kernels<P>::axpy(count, p, earlier, later);
  } else {
    // A power flushed to 0 still multiplies: 0 * NaN stays NaN, as in the recurrence (README, NaN policy).
    for (int64_t i = 0; i < count; ++i) later[i] += 0.0f * earlier[i];
  }
}

/**
 * The exponent of row t's weight lambda^lag in a correction: t - origin + 1 for a piece's incoming
 * state read out forward (origin: the piece's first token), origin - 1 - t for the gradient of its
 * outgoing state carried back (from_end; origin: the token after its last).
 */
struct Lag {
  int64_t origin;
  bool from_end = false;
  int64_t of(int64_t t) const { return from_end ? origin - 1 - t : t - origin + 1; }
};

/**
 * A correction of rows computed from a zero state: out_t += scale lambda^{lag(t)} x_t S for rows t in
 * [row_begin, row_end) of head h of x and out, S (x.dim x out.dim, contiguous) the true state or
 * adjoint. The forward's read-out takes x = q, out = o and S the incoming state (Lag{piece begin});
 * the backward's dQ takes d_o, dq and S^T, its dK v and the outgoing adjoint's transpose, its dV k
 * and the adjoint (Lag{piece end, true}). `scratch` grows to block * (x.dim + out.dim) floats.
 */
template <Path P, class T>
void correct_rows(const View<const T>& x, const View<T>& out, int64_t b, int64_t h, int64_t row_begin,
                  int64_t row_end, const float* S, double slope, float scale, Lag lag, int64_t block,
                  Floats& scratch) {
  const int64_t dx = x.dim, dout = out.dim;
  scratch.resize(static_cast<size_t>(block * (dx + dout)));
  float* X = scratch.data();
  float* R = X + block * dx;
  // A finite S whose weight has underflowed adds exactly 0; a non-finite one still reaches every row (NaN policy).
  const bool finite = std::all_of(S, S + dx * dout, [](float e) { return std::isfinite(e); });
  // Blocks in the order of falling weights, so that once one underflows every later one does too.
  for (int64_t done = 0; done < row_end - row_begin; done += block) {
    const int64_t m = std::min(block, row_end - row_begin - done);
    const int64_t t0 = lag.from_end ? row_end - done - m : row_begin + done;
    if (finite && decay_power(slope, lag.of(lag.from_end ? t0 + m - 1 : t0)) == 0.0f) return;
    for (int64_t i = 0; i < m; ++i) {
      const T* xr = x.row(b, h, t0 + i);
      for (int64_t c = 0; c < dx; ++c) X[i * dx + c] = to_float(xr[c]);
    }
    gemm<P>(Part::full, m, dout, dx, X, dx, S, dout, R, dout, 0.0f);
    for (int64_t i = 0; i < m; ++i) {
      const float f = static_cast<float>(scale * static_cast<double>(decay_power(slope, lag.of(t0 + i))));
      T* orow = out.row(b, h, t0 + i);
      if constexpr (std::is_same_v<T, float>) {
        kernels::Kernels<P>::axpy(dout, f, R + i * dout, orow);
      } else {
        for (int64_t c = 0; c < dout; ++c) orow[c] = from_float<T>(to_float(orow[c]) + f * R[i * dout + c]);
      }
    }
  }
}

/**
 * The read-out correction of a piece that ran from a zero state while its true incoming state is S
 * (d_k x d_v, contiguous): o_t += scale lambda^{t - piece_begin + 1} q_t S for rows t in
 * [row_begin, row_end) of q head h.
 */
template <Path P, class T>
void correct_readout(const View<const T>& q, const View<T>& o, int64_t b, int64_t h, int64_t piece_begin,
                     int64_t row_begin, int64_t row_end, const float* S, double slope, float scale, int64_t block,
                     Floats& scratch) {
  correct_rows<P>(q, o, b, h, row_begin, row_end, S, slope, scale, Lag{piece_begin, false}, block, scratch);
}

/**
 * Whether `items` work items of `tokens` tokens each go along the sequence too on `wanted` threads:
 * when they do not share out evenly and each thread still gets at least 8 blocks (a smaller share
 * is not worth the corrections and the extra thread start).
 */
inline bool split_along_sequence(int64_t items, int64_t tokens, int wanted, int64_t block) {
  return wanted > 1 && items % wanted != 0 && items * tokens / wanted >= 8 * block;
}

/**
 * Worker `share`'s equal part of a line of runs of the given lengths, laid end to end:
 * fn(run, from, to) for each run it holds rows [from, to) of (offsets within the run).
 */
template <class Fn>
void for_share_of_runs(const std::vector<int64_t>& lengths, int workers, int64_t share, Fn&& fn) {
  int64_t total = 0;
  for (int64_t len : lengths) total += len;
  const int64_t lo = total * share / workers, hi = total * (share + 1) / workers;
  int64_t at = 0;  // where run r starts on the line
  for (size_t r = 0; r < lengths.size(); ++r) {
    const int64_t from = std::max(lo, at), to = std::min(hi, at + lengths[r]);
    if (from < to) fn(r, from - at, to - at);
    at += lengths[r];
  }
}

/** A consecutive run [begin, end) of one work item's tokens, computed by one worker. */
struct Piece {
  int64_t item, begin, end;
  int worker;
};

/**
 * Splits work items of the given lengths over `workers`: the items laid end to end form one line
 * of tokens, cut into equal consecutive shares, each cut moved to a multiple of `align` inside its
 * item. Pieces come in item order, then token order; an item of length 0 gets one empty piece.
 */
inline std::vector<Piece> split_line(const std::vector<int64_t>& lengths, int workers, int64_t align) {
  std::vector<int64_t> start(lengths.size() + 1, 0);  // where each item starts on the line
  for (size_t i = 0; i < lengths.size(); ++i) start[i + 1] = start[i] + lengths[i];
  const int64_t total = start.back();
  std::vector<int64_t> cut(static_cast<size_t>(workers) + 1, total);  // worker w's share starts at cut[w]
  for (int w = 0; w < workers; ++w) {
    const int64_t x = total * w / workers;
    const size_t i = static_cast<size_t>(std::upper_bound(start.begin(), start.end(), x) - start.begin()) - 1;
    const int64_t off = x - start[i];
    cut[static_cast<size_t>(w)] = i < lengths.size() ? start[i] + std::min(lengths[i], (off + align / 2) / align * align)
                                                     : total;
  }
  std::vector<Piece> pieces;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t s = start[i], e = start[i + 1];
    for (int w = 0; w < workers; ++w) {
      const int64_t lo = std::max(s, cut[static_cast<size_t>(w)]), hi = std::min(e, cut[static_cast<size_t>(w) + 1]);
      // An empty item goes to the worker whose share holds its place on the line.
      if (hi > lo || (s == e && cut[static_cast<size_t>(w)] <= s && (s < cut[static_cast<size_t>(w) + 1] || w + 1 == workers))) {
        pieces.push_back({static_cast<int64_t>(i), s == e ? 0 : lo - s, s == e ? 0 : hi - s, w});
        if (s == e) break;
      }
    }
  }
  return pieces;
}

}  // namespace lightning::detail
