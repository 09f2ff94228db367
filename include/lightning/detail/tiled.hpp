// The block loop of the tiled forward, written once; paths differ only in Kernels<P>.
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
#include "lightning/detail/pack.hpp"
#include "lightning/detail/prefetch.hpp"
#include "lightning/detail/parallel.hpp"
#include "lightning/detail/seqpar.hpp"
#include "lightning/detail/site_times.hpp"
#include "lightning/detail/stream.hpp"
#include "lightning/kernels/avx2.hpp"
#include "lightning/kernels/avx512.hpp"
#include "lightning/kernels/scalar.hpp"
#include "lightning/types.hpp"

namespace lightning::detail {

/**
 * Block size used when options.block_size is 0: the fastest of the sweep in docs/block_size.md
 * (tools/tune) for the SIMD paths, where the masked intra-block work grows with the block.
 */
inline int64_t default_block_size([[maybe_unused]] int64_t d_k, [[maybe_unused]] int64_t d_v, Path path) {
  if (path == Path::automatic) path = best_path;
  if (path == Path::scalar) return 64;
  return path == Path::avx2 ? 24 : 32;  // whole 4-row (avx2) and 8-row (avx512) tiles; the same at d = 64 and 128
}

/**
 * The backward's block size when options.block_size is 0 (docs/block_size.md): the forward's, but 16
 * on avx512 (two 8-row tiles), whose backward took 0.977-1.000x the time of 32 at d = 128 (six runs,
 * the two alternated) and 0.955-0.958x at d = 64, where the forward at 16 took 1.07-1.08x.
 */
inline int64_t default_backward_block_size(int64_t d_k, int64_t d_v, Path path) {
  if (path == Path::automatic) path = best_path;
  return path == Path::avx512 ? 16 : default_block_size(d_k, d_v, path);
}

/**
 * Powers lambda^t = exp(-slope t) with slope t above this (below 2^-63) are taken as 0: a term so
 * weighted is 2^-39 below fp32's resolution next to the current token's, and kept, lambda^t near
 * FLT_MIN times O(1) data makes denormals, which cost a microcode assist per operation on many
 * CPUs. Comparing the exponent, not the power, keeps double denormals out of the table too.
 */
inline constexpr double kMaxDecayExponent = 44.0;

/**
 * The factors by which a running state (the forward's S; the backward's S, H and adjoint) decays
 * block by block, lambda^m for a block of m rows, chosen so that their product over any run of
 * blocks is within two roundings of the exact power: float(lambda^m) alone is off by up to half an
 * ulp the same way every block, and with slow decay that error adds up over the 1/(1 - lambda^m)
 * blocks a state remembers (3e-4 in lambda^n at n = 2^20, slope 1e-6; in the backward, a block of 1
 * at slope 5e-4 and n = 4096 gave dq 3e-5 and d_slopes 1e-4 off the double reference). Each factor
 * takes back what the factors before it rounded off (`drift`, the log of their product over the
 * exact one): an exp per block, where the forward's Fast2Sum carry before 2026-12-07 (S + C, C
 * taking what fp32 rounds off) cost two passes over the state per block, 13% of the forward with
 * slow decay. Faster decay (lambda^m <= 0.9375) forgets the error within 16 blocks: there the
 * factor is pow[m] itself.
 */
struct DecayFactors {
  double slope = 0, drift = 0;
  float next(int64_t m, float pow_m) {
    if (!(pow_m > 0.9375f)) {
      drift = 0;
      return pow_m;
    }
    const double exact = std::exp(-slope * static_cast<double>(m) - drift);
    const float factor = static_cast<float>(exact);
    drift = (static_cast<double>(factor) - exact) / exact;  // log(factor / exact) to first order
    return factor;
  }
};

/**
 * The beta that decays the rows x cols panel x (row stride ld) of a running state (the forward's S;
 * the backward's S or R) by `decay` in C = beta C + A B. A power flushed to 0 still multiplies
 * (0 * NaN stays NaN, as in the recurrence): beta = 0 would overwrite x, so x is multiplied by 0
 * here and 1 is returned.
 */
inline float decay_beta(float* x, int64_t rows, int64_t cols, int64_t ld, float decay) {
  if (decay != 0.0f) return decay;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) x[i * ld + c] *= 0.0f;
  return 1.0f;
}

/**
 * pow[t] = lambda^t for t in [0, block], from exp(-slope t) in double: only non-negative powers,
 * those below exp(-kMaxDecayExponent) flushed to 0 so that strong decay never meets denormal
 * arithmetic. cpow[t] = c lambda^t (the scale c in the same double product; below the smallest
 * normal float, 0).
 */
struct DecayTable {
  // rev[x] = pow[block - x] and crev[x] = cpow[block - x], so that a mask row reads them forwards;
  // crev runs on past x = block with zeros, which mask_lower reads.
  Floats pow, cpow, rev, crev;
  int64_t block = 0;  // the longest lag filled: lag 0 of rev and crev is at index block
  double slope = 0;
  void fill(double slope_, double scale, int64_t block_) {
    block = block_;
    slope = slope_;
    for (auto* table : {&pow, &cpow, &rev}) table->resize(static_cast<size_t>(block + 1));
    crev.assign(static_cast<size_t>(2 * block + 1), 0.0f);
    for (int64_t t = 0; t <= block; ++t) {
      const double x = slope * static_cast<double>(t);
      const double p = x > kMaxDecayExponent ? 0.0 : std::exp(-x);
      pow[t] = static_cast<float>(p);
      cpow[t] = std::abs(scale * p) < FLT_MIN ? 0.0f : static_cast<float>(scale * p);
    }
    for (int64_t t = 0; t <= block; ++t) {
      rev[t] = pow[block - t];
      crev[t] = cpow[block - t];
    }
  }
};

/**
 * The row stride, in floats, of the block loops' transposed and block x block buffers: the block
 * rounded up to whole vectors and transpose tiles of path P, no further. At avx2's block of 24 that
 * is 24 rather than 32 (the rounding to 16 before 2026-12-04), a quarter less L1 for those buffers,
 * whose working set at d = 128 exceeds Zen 4's 32 KB: tools/ab (avx2, n = 16384, one head, 300
 * pairs, against the same code at 32) measured the forward at 0.994x and 0.996x its time, where the
 * unchanged backward read 1.001x and 1.012x; a gain under 1%, near what one run resolves.
 */
template <Path P>
inline int64_t block_stride(int64_t block) {
  constexpr int64_t unit = std::max(kernels::Kernels<P>::W, kernels::Kernels<P>::TT);
  return (block + unit - 1) / unit * unit;
}

/**
 * One workspace W per worker for the block loops of path P, built as W(rows, block_stride<P>(rows),
 * args...) for rows the call's block, but no more than its longest sequence (a block holds at most
 * both), and at least 1. Sized for the block alone, a block far past n made and zeroed block x
 * block buffers on every call: at block_size 4096 a forward of 100 tokens (2 heads, d = 64) took
 * 75 ms and a backward 239 ms, against 0.5 ms and 0.3 ms at 128.
 */
template <Path P, class W, class... Args>
std::vector<W> block_workspaces(int workers, int64_t block, int64_t longest, const Args&... args) {
  const int64_t rows = std::max<int64_t>(1, std::min(block, longest));
  return workspaces<W>(workers, rows, block_stride<P>(rows), args...);
}

/** The longest of the packed sequences [offsets[s], offsets[s + 1]), s < num_seqs (0 for none). */
inline int64_t longest_sequence(const int64_t* offsets, int64_t num_seqs) {
  int64_t longest = 0;
  for (int64_t s = 0; s < num_seqs; ++s) longest = std::max(longest, offsets[s + 1] - offsets[s]);
  return longest;
}

/** One worker's scratch, sized once per call: nothing here grows with the sequence length. */
struct Workspace {
  int64_t block = 0, ldp = 0;  // ldp: leading dimension of the block x block and d_k x block buffers
  int64_t lds = 0;             // row stride of the state S (walk_stride(d_v))
  // q, k, v: the block's queries, keys and values as floats when stored in 16 bits; qd: c lambda^{i+1} Q
  // (the read-out of the state); kt, kdt: K^T, plain and decayed towards the block's end; o: 16-bit outputs.
  Floats q, qd, k, kt, kdt, v, p, o, s;
  DecayTable decay;
  Prefetcher prefetch;
  /** `ldp_`: block_stride<P>(block_) for the path that runs (block_workspaces). */
  Workspace(int64_t block_, int64_t ldp_, int64_t dk, int64_t dv) : block(block_), ldp(ldp_), lds(walk_stride(dv)) {
    qd.resize(static_cast<size_t>(block * dk));
    kt.resize(static_cast<size_t>(dk * ldp));
    kdt.resize(static_cast<size_t>(dk * ldp));
    p.resize(static_cast<size_t>(block * ldp));
    s.resize(static_cast<size_t>(dk * lds));  // the padding past d_v stays 0
  }
  /** The 16-bit storage's buffers, sized on first use (fp32 inputs are read and written in place). */
  void widen(int64_t dk, int64_t dv) {
    q.resize(static_cast<size_t>(block * dk));
    k.resize(static_cast<size_t>(block * dk));
    v.resize(static_cast<size_t>(block * dv));
    o.resize(static_cast<size_t>(block * dv));
  }
};

/** Everything a forward call computes over, already validated. */
template <class T>
struct ForwardArgs {
  View<const T> q, k, v;
  View<T> o;
  View<const float> state_in;
  View<float> state_out;
  const float* slopes;
  float scale;
  int64_t block;
};

/**
 * The forward for batch b, k/v head g and the q heads of its group over tokens [t_begin, t_end),
 * with states state_in/out[sb] (sb = b for forward; the sequence for a packed varlen batch), block
 * by block:
 *   O  = lambda^{i+1} (c Q) S + mask(c Q K^T) V         (inter, then intra)
 *   S <- lambda^m S + (lambda^{m-1-j} K)^T V            (state)
 */
template <Path P, class T>
void forward_group(const ForwardArgs<T>& a, int64_t b, int64_t g, Workspace& w, int64_t t_begin, int64_t t_end,
                   int64_t sb) {
  constexpr bool f32 = std::is_same_v<T, float>;
  const int64_t dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp, lds = w.lds;
  if (!f32) w.widen(dk, dv);
  // Tables for the lags of the workspace's block (no block here is longer), not of a.block: a call's
  // block may be far longer than its sequences, and each item would pay for the whole table.
  w.decay.fill(a.slopes ? a.slopes[g] : 0.0, a.scale, w.block);
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  const float* rev = w.decay.rev.data() + w.decay.block;    // rev[j - i] = pow[i - j] for j <= i
  const float* crev = w.decay.crev.data() + w.decay.block;  // crev[j - i] = cpow[i - j]
  float* S = w.s.data();
  float* Pm = w.p.data();
  bool s_zero = a.state_in.absent();
  DecayFactors factors{w.decay.slope};  // S's per block
  if (!s_zero)
    for (int64_t i = 0; i < dk; ++i) std::copy_n(a.state_in.row(sb, g, i), dv, S + i * lds);
  Prefetcher& pf = w.prefetch;
  pf.into_l1 = P != Path::scalar;
  pf.pace = pace_for(P, dk, dv);
  const bool stream_o = streams<P>(a.o);  // then o's lines are neither prefetched nor read before the writes
  // Without o only the state is computed (mpi::backward's pieces): no q head is read.
  const int64_t heads = a.o.absent() ? 0 : group, h_begin = g * group, h_end = h_begin + heads;

  for (int64_t t0 = t_begin; t0 < t_end; t0 += a.block) {
    LIGHTNING_SITE(forward_block);
    const int64_t m = std::min(a.block, t_end - t0);
    // The next block's inputs and outputs, spread over this block's register tiles.
    const int64_t ahead = t0 + kBlocksAhead * a.block;
    pf.start(std::min(a.block, t_end - ahead));
    if (ahead < t_end) {
      pf.add(a.k, b, g, ahead, false);
      pf.add(a.v, b, g, ahead, false);
      for (int64_t h = h_begin; h < h_end; ++h) {
        pf.add(a.q, b, h, ahead, false);
        if (!stream_o) pf.add(a.o, b, h, ahead, true);
      }
    }
    // Over this block's register tiles, so that the requests end with the state update.
    pf.spread(heads * (triangle_tile_count<P>(false, m, ldp) + tile_count<P>(m, dv)) + tile_count<P>(dk, dv));
    // The block's keys and values: fp32 in place (row stride ldk, ldv), 16-bit storage widened first.
    int64_t ldk, ldv;
    const float* K = rows_as_floats<P>(a.k, b, g, t0, m, w.k, ldk);
    const float* V = rows_as_floats<P>(a.v, b, g, t0, m, w.v, ldv);
    // K^T plain and decayed towards the block's end: row j of K scaled by pow[m - 1 - j] = rev[j - m + 1].
    {
      LIGHTNING_SITE(forward_k_transpose);
      transpose_dual<P>(m, dk, K, ldk, w.kt.data(), ldp, w.kdt.data(), ldp, rev - m + 1);
    }
    for (int64_t h = h_begin; h < h_end; ++h) {
      int64_t ldq;
      const float* Q = rows_as_floats<P>(a.q, b, h, t0, m, w.q, ldq);
      // The scale meets q first, as in c q_t S_t: q S alone may overflow where c q S does not.
      if (!s_zero) {
        LIGHTNING_SITE(forward_q_scaled);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < dk; ++c) w.qd[i * dk + c] = cpw[i + 1] * Q[i * ldq + c];
      }
      // P = mask(Q K^T) c lambda^{i-j}, row tile by row tile up to its last row's column, in whole vectors (the
      // columns past m, up to ldp, are computed from stale K^T columns and never read); each row tile
      // masked while in L1: row i keeps columns j <= i, weighted c lambda^{i-j}, and zeros up to the
      // tile's last row.
      {
        LIGHTNING_SITE(forward_triangle);
        gemm_triangle<P>(false, m, dk, Q, ldq, w.kt.data(), ldp, Pm, ldp, [&] { pf.tile(); },
                         [&](int64_t i0, int mr) { mask_lower(i0, i0 + mr, i0 + mr, Pm, ldp, crev); });
      }
      // O = lambda^{i+1} (c Q) S + P V: both sums in one register tile per (row tile, column tile).
      float* O;
      int64_t ldo;
      if constexpr (f32)
        O = a.o.row(b, h, t0), ldo = a.o.seq_stride;
      else
        O = w.o.data(), ldo = dv;
      {
        LIGHTNING_SITE(forward_read_out);
        gemm_plus_triangle<P>(Part::lower_k, m, dv, s_zero ? 0 : dk, w.qd.data(), dk, S, lds, Pm, ldp, V, ldv, O, ldo,
                              0.0f, [&] { pf.tile(); }, stream_o);
      }
      if constexpr (!f32)
        for (int64_t i = 0; i < m; ++i) store_floats<P>(O + i * dv, dv, a.o.row(b, h, t0 + i));
    }
    // S <- lambda^m S + (decayed K)^T V, lambda^m from `factors` (no drift with slow decay).
    const float decay = factors.next(m, pw[m]);
    const float beta = s_zero ? 0.0f : decay_beta(S, dk, dv, lds, decay);
    {
      LIGHTNING_SITE(forward_update);
      gemm<P>(Part::full, dk, dv, m, w.kdt.data(), ldp, V, ldv, S, lds, beta, [&] { pf.tile(); });
    }
    pf.step(1 << 30);  // whatever is left
    s_zero = false;
  }
  if (stream_o) end_streams();
  if (!a.state_out.absent())
    for (int64_t i = 0; i < dk; ++i) {
      float* out = a.state_out.row(sb, g, i);
      if (s_zero)
        std::fill_n(out, dv, 0.0f);
      else
        std::copy_n(S + i * lds, dv, out);
    }
}

/**
 * The sequence-parallel forward (SPEC.md) over `workers` threads: the (batch, k/v head) items laid
 * end to end are cut into equal shares; each piece runs from a zero state (an item's first piece
 * from state_in), the states of each item's pieces are scanned, and the later pieces' outputs are
 * corrected, those rows shared out evenly again.
 */
template <Path P, class T>
void forward_split(const ForwardArgs<T>& a, int workers, const std::vector<Piece>& pieces) {
  const int64_t G = a.k.heads, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / G, size = dk * dv;
  Floats states(pieces.size() * static_cast<size_t>(size));
  std::vector<Workspace> ws = block_workspaces<P, Workspace>(workers, a.block, a.q.seq, dk, dv);
  // Share w is an item of parallel_for, run by whichever thread takes it.
  parallel_for(workers, workers, [&](int thread, int64_t share) {
    for (size_t p = 0; p < pieces.size(); ++p) {
      if (pieces[p].worker != share) continue;
      const int64_t b = pieces[p].item / G, g = pieces[p].item % G;
      ForwardArgs<T> piece = a;
      if (p > 0 && pieces[p - 1].item == pieces[p].item) piece.state_in = {};
      piece.state_out = View<float>(states.data() + p * static_cast<size_t>(size), 1, 1, dk, dv, 0, 0, dv);
      forward_group<P>(piece, b, g, ws[static_cast<size_t>(thread)], pieces[p].begin, pieces[p].end, b);
    }
  });
  // The exclusive scan of each item's piece states, in place: states[p] becomes the true state after
  // piece p, so piece p's incoming state is states[p - 1].
  std::vector<size_t> corrected;  // the pieces with an incoming state, whose rows are corrected
  std::vector<int64_t> lengths;
  for (size_t p = 0; p < pieces.size(); ++p) {
    const int64_t g = pieces[p].item % G;
    float* s = states.data() + p * static_cast<size_t>(size);
    if (p > 0 && pieces[p - 1].item == pieces[p].item) {
      combine_states<P>(size, s - size, s, a.slopes ? a.slopes[g] : 0.0, pieces[p].end - pieces[p].begin);
      if (!a.o.absent()) {
        corrected.push_back(p);
        lengths.push_back(pieces[p].end - pieces[p].begin);
      }
    }
    if (!a.state_out.absent() && (p + 1 == pieces.size() || pieces[p + 1].item != pieces[p].item))
      for (int64_t i = 0; i < dk; ++i) std::copy_n(s + i * dv, dv, a.state_out.row(pieces[p].item / G, g, i));
  }
  parallel_for(workers, workers, [&](int, int64_t share) {
    Floats scratch;
    for_share_of_runs(lengths, workers, share, [&](size_t r, int64_t from, int64_t to) {
      const size_t p = corrected[r];
      const Piece& pc = pieces[p];
      const int64_t b = pc.item / G, g = pc.item % G;
      const float* s_in = states.data() + (p - 1) * static_cast<size_t>(size);
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        correct_readout<P>(a.q, a.o, b, h, pc.begin, pc.begin + from, pc.begin + to, s_in,
                           a.slopes ? a.slopes[g] : 0.0, a.scale, a.block, scratch);
    });
  });
}

/**
 * Whether a forward over `tokens` tokens in all writes nothing: no element of o (no token, no q head
 * or d_v = 0) and no state_out. Such a call returns before it counts or sizes anything, however many
 * batch entries and heads it names (zero strides let one row stand for 2^61 of them, and batch x
 * heads may not fit in int64): each (batch, k/v head) item makes its decay tables, tokens or not
 * (found by the fuzzer: no token, no q head and 2^31 k/v heads ran for more than ten minutes).
 */
template <class T>
bool nothing_to_write(const ForwardArgs<T>& a, int64_t tokens) {
  return (tokens == 0 || a.q.heads == 0 || a.v.dim == 0) && a.state_out.absent();
}

/**
 * Threads over (batch, k/v head) items when their count is a multiple of the threads; otherwise
 * (fewer items than threads, or a remainder) along the sequence too, so every thread gets an
 * equal share of the tokens.
 */
template <Path P, class T>
void forward_all(const ForwardArgs<T>& a, int threads) {
  const int64_t n = a.q.seq;
  if (nothing_to_write(a, n)) return;
  const int64_t items = a.q.batch * a.k.heads;
  const int wanted = worker_count(threads, INT32_MAX);
  if (split_along_sequence(items, n, wanted, a.block)) {
    forward_split<P>(a, wanted, split_line(std::vector<int64_t>(static_cast<size_t>(items), n), wanted, a.block));
    return;
  }
  const int workers = worker_count(threads, items);
  std::vector<Workspace> ws = block_workspaces<P, Workspace>(workers, a.block, n, a.q.dim, a.v.dim);
  parallel_for(workers, items, [&](int worker, int64_t item) {
    const int64_t b = item / a.k.heads;
    forward_group<P>(a, b, item % a.k.heads, ws[static_cast<size_t>(worker)], 0, n, b);
  });
}

/** Everything a decode step computes over, already validated; state rows come from `state_of`. */
template <class T>
struct DecodeArgs {
  View<const T> q, k, v;
  View<T> o;
  View<float> states;    // [batch or slots, kv heads, d_k, d_v]
  const int64_t* slots;  // null: sequence b uses states[b]; else states[slots[b]], skipped when negative
  const float* slopes;
  float scale;
};

/**
 * Whether the avx512 path's decode step updates each state row with the avx2 path's row kernel
 * (256-bit vectors) instead of its own (512-bit): on AMD cores. The step streams the states through
 * memory once. On the Zen 5 EPYC (family 26 model 2) the 512-bit loop, one load and one store per
 * cache line, moved 28-38 GB/s where the 256-bit one moved 47-53 (the benchmark's decode rows, 768
 * MiB of states: 50% of the alternated read+write pass against 93-96% at d = 128, 68-69% against
 * 90-91% at d = 64); with a prefetchw 4 KiB ahead the 512-bit loop moved 53-56 GB/s, and alone over
 * one buffer, outside decode_group, 54-55. In earlier sessions' benchmarks (alternated column) the
 * avx512 rows ran at 0.89-1.12x the avx2 rows' rate on the Zen 4 EPYC and at 1.05-1.18x on the Intel
 * Xeons (family 6 model 167), which keep the 512-bit loop. Both kernels do the same FMAs per lane:
 * the same bits, but in a tail of fewer than 8 floats. A variable, so that the tests run both.
 */
inline bool avx512_decode_in_256_bits = amd_cpu();

/** One token for batch b, k/v head g: each state row is read, updated and read out once. */
template <Path P, class T>
void decode_group(const DecodeArgs<T>& a, int64_t b, int64_t g, Floats& acc) {
  using Ker = kernels::Kernels<P>;
  const int64_t slot = a.slots ? a.slots[b] : b;
  if (slot < 0) return;
  const int64_t dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads;
  const double slope = a.slopes ? static_cast<double>(a.slopes[g]) : 0.0;
  const float lambda = slope > kMaxDecayExponent ? 0.0f : static_cast<float>(std::exp(-slope));
  // Slow decay: lambda S as S - mu S, mu = 1 - lambda. float(lambda) near 1 is off by up to 2^-25, an
  // error decode steps add up coherently (7.5e-4 after 2^17 steps at slope 1e-6); mu keeps 24 bits.
  const float mu = static_cast<float>(-std::expm1(-slope));
  const bool slow = mu < 0.0625f;
  const T* kr = a.k.row(b, g, 0);
  const T* vr = a.v.row(b, g, 0);
  acc.assign(static_cast<size_t>((group + 1) * dv), 0.0f);
  float* vf = acc.data() + group * dv;
  load_floats<P>(vr, dv, vf);
  // avx512_decode_in_256_bits: avx2's row kernel (Kernels<P> on other paths, a type that exists).
  using Narrow = kernels::Kernels<P == Path::avx512 ? Path::avx2 : P>;
  const bool narrow = P == Path::avx512 && avx512_decode_in_256_bits;
  const float decay = slow ? -mu : lambda;  // decode_row's b
  // No software prefetch: in the usual layout an item's state rows are one contiguous run (64 KiB at
  // d = 128), which the hardware prefetchers follow. Asking for every line about 4 KiB ahead with
  // prefetchw (added on a Xeon, where it raised decode from 51-58% to 73-86% of a read+write pass)
  // made the step slower on the Zen 4 EPYC: without it, 0.99-1.17x the rate (old/new alternated,
  // 64 MiB of states, 20 runs over both SIMD paths and d = 64, 128); asking for only each row's
  // first line, 0.86-1.06x.
  for (int64_t r = 0; r < dk; ++r) {
    float* srow = a.states.row(slot, g, r);
    // The update and the first q head's read-out in one pass; the other heads of the group read the row from L1.
    const float kv = to_float(kr[r]), c = a.scale * to_float(a.q.row(b, g * group, 0)[r]);
    if (narrow)
      Narrow::decode_row(dv, decay, slow, kv, vf, srow, c, acc.data());
    else
      Ker::decode_row(dv, decay, slow, kv, vf, srow, c, acc.data());
    for (int64_t h = 1; h < group; ++h)
      Ker::axpy(dv, a.scale * to_float(a.q.row(b, g * group + h, 0)[r]), srow, acc.data() + h * dv);
  }
  for (int64_t h = 0; h < group; ++h) store_floats<P>(acc.data() + h * dv, dv, a.o.row(b, g * group + h, 0));
}

template <Path P, class T>
void decode_all(const DecodeArgs<T>& a, int threads) {
  const int64_t items = a.q.batch * a.k.heads;
  const int workers = worker_count(threads, items);
  std::vector<Floats> acc(static_cast<size_t>(workers));
  parallel_for(workers, items, [&](int worker, int64_t item) {
    decode_group<P>(a, item / a.k.heads, item % a.k.heads, acc[static_cast<size_t>(worker)]);
  });
}

}  // namespace lightning::detail
