// The block loops of the tiled backward, written once; paths differ only in Kernels<P>.
//
// For one (batch, k/v head) pair and a block of m rows i, j with entry state S (forward order) and
// exit adjoint R (the gradient reaching the state after the block from later tokens and dS_out):
//   dQ  = (c lambda^{i+1}) dO S^T + P~ K               P~[i,j] = c lambda^{i-j} (do_i . v_j), j <= i
//   dK  = P~^T Q + (lambda^{m-1-j}) V R^T             summed over the group's q heads
//   dV  = A~^T dO + (lambda^{m-1-j}) K R              A~[i,j] = c lambda^{i-j} (q_i . k_j), j <= i
//   S  <- lambda^m S + (lambda^{m-1-j} K)^T V          R <- lambda^m R + (c lambda^{i+1} Q)^T dO
// Pass 1 runs the blocks forward: it keeps S and writes dQ. Pass 2 runs them in reverse: it keeps R,
// writes dK and dV and ends with dS_in = R. Each gradient is written once, its two terms summed in
// one register tile per output tile (gemm_plus_triangle); the price is P~, computed in both passes
// (m^2 d / 2 more multiply-adds per block: 2% of the whole at m = 24, d = 128). Only non-negative
// decay powers appear.
//
// The slope gradient, when asked for: dL/dslope = -sum_t lambda <D_t, S_{t-1}> (S_{-1} = S_in, D_t
// the adjoint of SPEC.md), which sums (t-s) c lambda^{t-s} (q_t . k_s)(do_t . v_s) over the pairs
// s <= t, (t+1) c lambda^{t+1} q_t S_in do_t^T and the couplings to dS_out. A pair's lag t - s, for
// s in an earlier block than t, splits at block edges into (m-1-j) (from s to its block's end), m
// per whole block between them and (i+1) (from t's block start to t); each part is taken where its
// factors already are:
// - within a block, sum_{j<i} (i-j) c lambda^{i-j} (q_i . k_j)(do_i . v_j)   (pass 1, A and P)
// - (i+1) q_i . (c lambda^{i+1} do_i S^T), S the block's entry state        (pass 1, dQ's inter part)
// - q_i . (c lambda^{i+1} do_i H^T) and <dS_out, H> at the end               (pass 1)
// - (m-1-j) v_j . (lambda^{m-1-j} k_j R), R the block's exit adjoint          (pass 2, dV's inter part)
// where H, the whole blocks' part of the tangent -dS/dslope, runs H <- lambda^m (H + m S) per block:
// one d^2 product per token (H's read-out) beyond the backward, and only local weights.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "lightning/detail/buffer.hpp"
#include "lightning/detail/convert.hpp"
#include "lightning/detail/gemm.hpp"
#include "lightning/detail/pack.hpp"
#include "lightning/detail/parallel.hpp"
#include "lightning/detail/prefetch.hpp"
#include "lightning/detail/site_times.hpp"
#include "lightning/detail/stream.hpp"
#include "lightning/detail/tiled.hpp"
#include "lightning/kernels/avx2.hpp"
#include "lightning/kernels/avx512.hpp"
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
  // Null, or S^T after the tokens (from state_in or zero) per (batch, k/v head) item, d_v x d_k each
  // [batch G, d_v, d_k]: a piece's own final state for a sequence split elsewhere (mpi::backward).
  float* states_t_out = nullptr;
  int64_t l1_bytes = 0;  // the L1 size wide_panels and the L1 choices assume (a test sets it); 0: l1_data_bytes()
  /** The L1 data cache size the block loops' choices assume: l1_bytes, or the machine's. */
  int64_t l1() const { return l1_bytes > 0 ? l1_bytes : l1_data_bytes(); }
};

/**
 * Whether pass 1 leaves each q head's masked P~ (block x block) in dK's rows of its block for pass 2,
 * which then reads it instead of computing dO V^T again: fp32 dK, both passes asked for, and room
 * in a row for the group's P~ rows side by side. dK's rows are overwritten by dK in pass 2, after
 * the last read of them. Its rows lie apart or packed at the start of the block's rows (p_stash_ld).
 */
template <class T>
bool stash_p_in_dk(const BackwardArgs<T>& a) {
  return std::is_same_v<T, float> && !a.dq.absent() && !a.dk.absent() &&
         a.q.heads / a.k.heads * a.block <= a.k.dim;
}

/**
 * The row stride of the P~ stash in dK's rows (stash_p_in_dk), whose rows hold the group's P~ rows
 * side by side (group x block floats): packed, group x block, where a block's dK rows are contiguous
 * (its m x group x block floats then fit in the block's m x d_k) and such a row is not a whole
 * number of cache lines, else dK's row stride. Packed, the stash of a block of 24 rows takes 36
 * cache lines instead of parts of 48, and the avx2 backward took 0.9954x, 0.9951x and 0.9965x its
 * time (tools/ab, Zen 4, n = 16384, heads 8, d = 128, 30 pairs, the same bits); avx512's blocks of
 * 16 rows, one line each, took 1.0069x, 1.0014x and 1.0040x packed (the same lines), so stay apart.
 */
template <class T>
int64_t p_stash_ld(const BackwardArgs<T>& a) {
  const int64_t row = a.q.heads / a.k.heads * a.block;
  return a.dk.seq_stride == a.dk.dim && row * static_cast<int64_t>(sizeof(float)) % 64 != 0 ? row : a.dk.seq_stride;
}

/**
 * Copies a P~ block, m x m floats, between row strides: into its stash (pass 1) and out of it (pass 2,
 * before dK's rows are written). A loop the compiler vectorises: std::copy_n called memmove per row.
 */
inline void copy_p(int64_t m, const float* from, int64_t ldf, float* to, int64_t ldt) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) to[i * ldt + j] = from[i * ldf + j];
}

/** Where head h's P~ of the block from token t sits in dK's rows (stash_p_in_dk), row stride p_stash_ld. */
template <class T>
T* p_stash(const BackwardArgs<T>& a, int64_t b, int64_t h, int64_t t) {
  const int64_t group = a.q.heads / a.k.heads, g = h / group;
  return a.dk.row(b, g, t) + (h - g * group) * a.block;
}

/**
 * Whether a block of m rows takes avx512's pair tiles in pass 2 (its V~^T then in pair layout):
 * whole blocks of 16 rows, d_v a multiple of 16, dK asked for and q heads to read.
 */
template <Path P, class T>
bool pair_block(const BackwardArgs<T>& a, int64_t m) {
  return kernels::PairTiles<P>::value && !a.dk.absent() && a.q.heads > 0 && a.v.dim % 16 == 0 && m == 16;
}

/**
 * Whether pass 1 leaves each block's decayed V^T (d_v rows of m floats, row stride m) in dV's rows of
 * that block for pass 2, which then reads no V: with the P~ stash (pass 2's other use of V), dV asked
 * for in fp32 with a block's rows contiguous (its m d_v floats hold the d_v x m transpose), and not
 * for pair blocks (pair_block). Pass 2 reads it in the first q head's dK^T tiles, before that head's
 * dV tiles overwrite it.
 */
template <Path P, class T>
bool stash_v_in_dv(const BackwardArgs<T>& a, int64_t m) {
  return stash_p_in_dk(a) && a.q.heads > 0 && !a.dv.absent() && a.dv.seq_stride == a.dv.dim && !pair_block<P>(a, m);
}

/**
 * The decayed V^T of the block of m rows from token t (row stride ldvd): in dV's rows when `in_dv`
 * (stash_v_in_dv), else the workspace's vdt.
 */
template <class T>
float* decayed_vt(const BackwardArgs<T>& a, bool in_dv, int64_t b, int64_t g, int64_t t, int64_t m, Floats& vdt,
                  int64_t ldp, int64_t& ldvd) {
  if constexpr (std::is_same_v<T, float>)
    if (in_dv) {
      ldvd = m;
      return a.dv.row(b, g, t);
    }
  ldvd = ldp;
  return vdt.data();
}

/**
 * The decay powers of one k/v head for t in [0, block]: pow[t] = lambda^t, cpow[t] = scale lambda^t
 * and cwpow[t] = scale t lambda^t (the slope gradient's weights within a block), from
 * exp(-slope t) in double. Only non-negative powers; values below the smallest normal float are 0,
 * so strong decay never meets denormal arithmetic. Kept apart from the forward's table so each can
 * change on its own.
 */
struct BackwardDecay {
  // rcpow[t] = cpow[block - t] for mask_lower, then zeros to t = 2 block; lcpow[t] = cpow[t - block]
  // for mask_upper, after zeros from t = 0 (the masks read past lag 0).
  Floats pow, cpow, cwpow, rcpow, lcpow;
  int64_t block = 0;  // the longest lag filled: lag 0 of rcpow and lcpow is at index block
  double slope = 0;
  void fill(double slope_, double scale, int64_t block_) {
    block = block_;
    slope = slope_;
    for (auto* table : {&pow, &cpow, &cwpow}) table->resize(static_cast<size_t>(block + 1));
    for (auto* table : {&rcpow, &lcpow}) table->assign(static_cast<size_t>(2 * block + 1), 0.0f);
    const auto flush = [](double x) { return std::abs(x) < FLT_MIN ? 0.0f : static_cast<float>(x); };
    for (int64_t t = 0; t <= block; ++t) {
      const double p = std::exp(-slope * static_cast<double>(t));
      pow[static_cast<size_t>(t)] = flush(p);
      cpow[static_cast<size_t>(t)] = flush(scale * p);
      cwpow[static_cast<size_t>(t)] = flush(scale * static_cast<double>(t) * p);
    }
    for (int64_t t = 0; t <= block; ++t) {
      rcpow[static_cast<size_t>(t)] = cpow[static_cast<size_t>(block - t)];
      lcpow[static_cast<size_t>(block + t)] = cpow[static_cast<size_t>(t)];
    }
  }
};

/**
 * One worker's scratch for the backward, sized once per call: nothing here grows with n. Buffers
 * only some calls use (16-bit storage, the slope gradient, avx512's pair tiles) are sized only for
 * them: every buffer is zeroed when made, and at a few blocks that was most of a call's time.
 */
struct BackwardWorkspace {
  int64_t block = 0, ldp = 0;  // ldp: leading dimension of the transposed and block x block buffers
  int64_t ldst = 0, ldr = 0;   // row strides of S^T and H^T (walk_stride(d_k)) and of R (walk_stride(d_v))
  // 16-bit storage widened to floats (fp32 is read in place): blocks of q, k, v and d_o.
  Floats q, k, v, d_o;
  // Row-major blocks: d_o scaled by c lambda^{i+1}, k decayed to the block's end, a scratch (the
  // slope gradient's dO H^T and dQ's inter part, a row-exact dK), dV's inter part for the slope
  // gradient, and dQ, dK, dV where they are staged before the outputs.
  Floats dos, kd, y, yv, dq, dk, dv;
  // Transposed blocks (rows of length ldp): k^T, v^T, v^T decayed to the block's end, q^T plain and
  // scaled by c lambda^{i+1}, and dK^T.
  Floats kt, vt, vdt, qt, qdt, dkt;
  // With pair tiles (avx512, blocks of 16): v^T decayed and the block's P~ in pair layout (rows of 32).
  Floats vdp, pz;
  // Block x block products P and A, and the masked transpose of either.
  Floats p, a, pt;
  // Running states: S^T and the slope gradient's H^T [d_v x d_k], the adjoint R [d_k x d_v]; padding
  // stays 0.
  Floats st, ht, r;
  Floats to_end;  // per block row j: lambda^{m-1-j}
  BackwardDecay decay;
  Prefetcher prefetch;
  /**
   * `ldp_`: block_stride<P>(block_) (block_workspaces); `widened`: 16-bit storage (q, k, v, d_o widened, gradients
   * staged); `slopes`: d_slopes asked for; `pairs`: the path has pair tiles (PairTiles<P>).
   */
  BackwardWorkspace(int64_t block_, int64_t ldp_, int64_t dk_, int64_t dv_, bool widened, bool slopes, bool pairs)
      : block(block_), ldp(ldp_), ldst(walk_stride(dk_)), ldr(walk_stride(dv_)) {
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    for (auto* b : {&kd, &y}) b->resize(sz(block * dk_));
    dos.resize(sz(block * dv_));
    for (auto* b : {&qt, &qdt, &dkt}) b->resize(sz(dk_ * ldp));
    for (auto* b : {&vt, &vdt}) b->resize(sz(dv_ * ldp));
    for (auto* b : {&p, &a, &pt}) b->resize(sz(block * ldp));
    st.resize(sz(dv_ * ldst));
    r.resize(sz(dk_ * ldr));
    to_end.resize(sz(block));
    if (widened) {
      for (auto* b : {&q, &k, &dq, &dk}) b->resize(sz(block * dk_));
      for (auto* b : {&v, &d_o, &dv}) b->resize(sz(block * dv_));
    }
    if (slopes) {
      kt.resize(sz(dk_ * ldp));
      yv.resize(sz(block * dv_));
      ht.resize(sz(dv_ * ldst));
    }
    if (pairs) {
      vdp.resize(sz(dv_ / 2 * kernels::kPairRow));
      pz.resize(sz(block / 2 * kernels::kPairRow));
    }
  }
};

/**
 * sum_i weight(i) * (x_i . y_i) over m rows of width d, each row's dot in float over 16 lanes of
 * partial sums (one sum in order is a chain of dependent adds, which held 2% of the backward with
 * d_slopes), the lanes added in order. A row of weight 0 is skipped, not multiplied: its dot may
 * leave fp32 where the sum does not (a block's last row in pass 2: 0 * Inf was NaN, found by the
 * fuzzer); a NaN or Inf among the inputs makes d_slopes NaN by backward_forward_pass's check.
 */
template <class Weight>
double weighted_row_dots(int64_t m, int64_t d, const float* x, int64_t ldx, const float* y, int64_t ldy,
                         Weight weight) {
  constexpr int L = 16;
  double acc = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double wi = weight(i);
    if (wi == 0.0) continue;
    const float* xi = x + i * ldx;
    const float* yi = y + i * ldy;
    float lane[L] = {};
    int64_t c = 0;
    for (; c + L <= d; c += L)
      for (int l = 0; l < L; ++l) lane[l] += xi[c + l] * yi[c + l];
    for (; c < d; ++c) lane[c % L] += xi[c] * yi[c];
    float dot = 0;
    for (float e : lane) dot += e;
    acc += wi * static_cast<double>(dot);
  }
  return acc;
}

/** Where a block's gradient rows are summed: the fp32 output rows themselves, or `stage` (row stride out.dim). */
template <class T>
float* gradient_rows(const View<T>& out, int64_t b, int64_t h, int64_t t, Floats& stage, int64_t& ld) {
  if constexpr (std::is_same_v<T, float>) {
    ld = out.seq_stride;
    return out.row(b, h, t);
  } else {
    ld = out.dim;
    return stage.data();
  }
}

/** Stores m staged gradient rows into out (nothing to do when they were summed in place). */
template <Path P, class T>
void store_rows(const float* rows, int64_t ld, const View<T>& out, int64_t b, int64_t h, int64_t t, int64_t m) {
  if (std::is_same_v<T, float>) return;  // summed in place
  for (int64_t i = 0; i < m; ++i) store_floats<P>(rows + i * ld, out.dim, out.row(b, h, t + i));
}

/**
 * Starts pf on the rows [t, t + block) of k, with `v_too` v (k/v head g), d_o and, with `q_too`, q
 * (the group's q heads), with `stash` the block's P~ stash (p_stash_ld) and the given outputs,
 * when that block exists (t in [0, n)); `tiles`: how many register tiles the current block has to
 * spread the requests over.
 */
template <class T>
void prefetch_block(Prefetcher& pf, const BackwardArgs<T>& a, int64_t b, int64_t g, int64_t t, bool v_too, bool q_too,
                    bool stash, std::initializer_list<View<T>> per_kv, std::initializer_list<View<T>> per_q,
                    int64_t tiles) {
  const int64_t n = a.q.seq, group = a.q.heads / a.k.heads;
  pf.start(t >= 0 && t < n ? std::min(a.block, n - t) : 0);
  if (pf.rows == 0) return;
  pf.add(a.k, b, g, t, false);
  if (v_too) pf.add(a.v, b, g, t, false);
  // The group's P~ rows start the block's dK rows (p_stash of its first head, which with no q heads,
  // group 0, would divide by zero; then add_rows adds nothing).
  if (stash) pf.add_rows(a.dk.row(b, g, t), p_stash_ld(a), group * a.block, true);
  for (const View<T>& out : per_kv)
    if (!out.absent()) pf.add(out, b, g, t, true);
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    if (q_too) pf.add(a.q, b, h, t, false);
    pf.add(a.d_o, b, h, t, false);
    for (const View<T>& out : per_q)
      if (!out.absent()) pf.add(out, b, h, t, true);
  }
  pf.spread(tiles);
}

/** The L1 data cache size from which the backward's prefetch choices differ from a 32 KB L1's (Zen 4's). */
inline constexpr int64_t kLargeL1Bytes = 48 * 1024;

/**
 * Whether pass 1's software prefetches ask the next block's inputs into L1 (else into L2 only): on
 * an L1 below kLargeL1Bytes (the forward's always do). On a Zen 4 (32 KB) reads into L1 took the forward
 * 0.94-0.98x its time and the backward 0.98-1.00x (both passes); on the Intel Xeon of family 6
 * model 167 (48 KB L1, 2 MB L2) pass 1's reads into L2 took the backward 0.9786x, 0.9757x and
 * 0.9895x its time on avx512 and 0.9905x, 0.9909x, 0.9927x and 0.9940x on avx2 (tools/ab, d = 128,
 * n = 16384, heads 8, 30-40 pairs; the unchanged forward 0.993-0.999x), where pass 2's reads into
 * L2 had measured 0.993-1.001x. On the Zen 5 EPYC of family 26 model 2 (48 KB L1, 1 MB L2) a tie in
 * the whole backward (0.999x, 1.003x; every per-stream mix of levels within the noise), though a
 * backward asking for dq alone, pass 1 without the stashes, took 0.96-0.98x its time with reads into L1
 * (docs/performance-history.md, 2026-12-07 from 06:09 UTC).
 */
inline bool pass1_reads_into_l1(int64_t l1_bytes) { return l1_bytes < kLargeL1Bytes; }

/**
 * Pass 1 (blocks in forward order) for batch b, k/v head g: dQ and the slope gradient's terms but
 * the adjoint's (pass 2 adds those); with `final_st`, S^T after the last token there too (d_v x d_k,
 * contiguous: backward_split's pieces).
 */
template <Path P, class T>
void backward_forward_pass(const BackwardArgs<T>& a, int64_t b, int64_t g, BackwardWorkspace& w,
                           float* final_st = nullptr) {
  using Ker = kernels::Kernels<P>;
  const int64_t n = a.q.seq, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp, ldst = w.ldst;
  Prefetcher& pf = w.prefetch;
  pf.into_l1 = P != Path::scalar && pass1_reads_into_l1(a.l1());
  pf.pace = pace_for(P, dk, dv);
  const auto tile = [&] { pf.tile(); };
  const bool need_dq = !a.dq.absent(), need_ds = a.d_slopes != nullptr, stash = stash_p_in_dk(a);
  const bool stream_dq = streams<P>(a.dq);  // then dQ's lines are neither prefetched nor read before the writes
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  const float* cwpw = w.decay.cwpow.data();
  const float* crev = w.decay.rcpow.data() + w.decay.block;  // crev[j - i] = cpw[i - j]
  float* St = w.st.data();
  float* Ht = w.ht.data();
  float* Pm = w.p.data();
  float* Am = w.a.data();
  bool s_zero = a.state_in.absent(), h_zero = true;
  DecayFactors factors{w.decay.slope};     // S's and H's per block
  const int64_t state_size = dv * ldst;    // S^T's and H^T's floats, padding included: 0 stays 0
  // d_slopes[g] sums a term for every token of head g, the weight-0 ones (lag 0, no initial state)
  // included, so a NaN or Inf anywhere in head g's inputs makes it NaN, as 0 * NaN is NaN (README):
  // false once one is among the inputs d_slopes reads (all_finite: vectorised sums, where one float
  // sum in order had held 10% of the avx512 backward with d_slopes).
  bool finite = true;
  if (!s_zero) {
    for (int64_t i = 0; i < dk; ++i) {
      const float* row = a.state_in.row(b, g, i);
      for (int64_t c = 0; c < dv; ++c) St[c * ldst + i] = row[c];
    }
    if (need_ds) finite = all_finite(dk, dv, a.state_in.row(b, g, 0), a.state_in.seq_stride);
  }
  double slope_sum = 0;  // the slope gradient's terms (header comment) but pass 2's, in double across blocks

  for (int64_t t0 = 0; t0 < n; t0 += a.block) {
    LIGHTNING_SITE(pass1_block);
    const int64_t m = std::min(a.block, n - t0);
    // kBlocksAhead blocks ahead, over this block's P, dQ and state-update tiles; q only for d_slopes,
    // and the stashes in dK's and dV's rows, which this pass writes.
    prefetch_block(pf, a, b, g, t0 + kBlocksAhead * a.block, true, need_ds, stash,
                   {stash_v_in_dv<P>(a, a.block) ? a.dv : View<T>{}},
                   {stream_dq ? View<T>{} : a.dq},
                   group * (triangle_tile_count<P>(false, m, ldp) + tile_count<P>(m, dk)) + tile_count<P>(dv, dk));
    int64_t ldk, ldv;
    const float* K = rows_as_floats<P>(a.k, b, g, t0, m, w.k, ldk);
    const float* V = rows_as_floats<P>(a.v, b, g, t0, m, w.v, ldv);
    if (need_ds) finite = finite && all_finite(m, dk, K, ldk) && all_finite(m, dv, V, ldv);
    for (int64_t j = 0; j < m; ++j) w.to_end[j] = pw[m - 1 - j];  // row scales towards the block's end
    // V^T for P = dO V^T and the decayed V^T for the state update (and pass 2), in one transpose.
    int64_t ldvd;
    float* Vdt = decayed_vt(a, stash_v_in_dv<P>(a, m), b, g, t0, m, w.vdt, ldp, ldvd);
    {
      LIGHTNING_SITE(pass1_v_transpose);
      transpose_dual<P>(m, dv, V, ldv, w.vt.data(), ldp, Vdt, ldvd, w.to_end.data());
    }
    if (need_ds) transpose<P>(m, dk, K, ldk, w.kt.data(), ldp);
    // Without dQ and d_slopes only S is wanted (a piece's final state, states_t_out): no q head's terms.
    for (int64_t h = g * group; h < (need_dq || need_ds ? g + 1 : g) * group; ++h) {
      int64_t ldq = 0, ldo;
      const float* Q = need_ds ? rows_as_floats<P>(a.q, b, h, t0, m, w.q, ldq) : nullptr;  // read only for d_slopes
      const float* dO = rows_as_floats<P>(a.d_o, b, h, t0, m, w.d_o, ldo);
      if (need_ds) finite = finite && all_finite(m, dk, Q, ldq) && all_finite(m, dv, dO, ldo);
      // The scale first, as the forward's c q S: dO S^T alone may overflow where c dO S^T does not
      // (nor dO W^T where c dO W^T does not: the slope gradient's second term, whose W is nonzero
      // only from the second block on, as S is).
      if (!s_zero) {
        LIGHTNING_SITE(pass1_do_scaled);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < dv; ++c) w.dos[i * dv + c] = cpw[i + 1] * dO[i * ldo + c];
      }
      // P~ = c lambda^{i-j} dO V^T on and below the diagonal, zero above; masked after the slope
      // terms have read P when they are asked for.
      const auto mask_p = [&](int64_t i0, int mr) { mask_lower(i0, i0 + mr, m, Pm, ldp, crev); };
      {
        LIGHTNING_SITE(pass1_triangle);
        gemm_triangle<P>(false, m, dv, dO, ldo, w.vt.data(), ldp, Pm, ldp, tile, [&](int64_t i0, int mr) {
          if (!need_ds) mask_p(i0, mr);
        });
      }
      if (need_ds) {
        // q_i H (c lambda^{i+1} do_i)^T and (i+1) q_i . (c lambda^{i+1} do_i S^T) (the second is dQ's
        // inter part, from which dQ's tiles then start: the same bits whether or not d_slopes is
        // asked for, and one d^2 product fewer than taking it twice), then sum_{j<i} (c (i-j)
        // lambda^{i-j}) A_ij P_ij. The scale comes first in each, so that no unscaled product leaves
        // fp32 where the scaled sum does not: at scale 0, dO W^T (W the tangent H was before
        // 2026-12-07) or A_ij P_ij past FLT_MAX made d_slopes 0 * Inf = NaN (found by the fuzzer,
        // 2026-12-04).
        if (!h_zero) {
          gemm<P>(Part::full, m, dk, dv, w.dos.data(), dv, Ht, ldst, w.y.data(), dk, 0.0f);
          slope_sum += weighted_row_dots(m, dk, Q, ldq, w.y.data(), dk, [](int64_t) { return 1.0; });
        }
        if (!s_zero) {  // left in y for dQ (gemm_plus_triangle's C0)
          gemm<P>(Part::full, m, dk, dv, w.dos.data(), dv, St, ldst, w.y.data(), dk, 0.0f);
          slope_sum += weighted_row_dots(m, dk, Q, ldq, w.y.data(), dk, [](int64_t i) { return i + 1.0; });
        }
        gemm_triangle<P>(false, m, dk, Q, ldq, w.kt.data(), ldp, Am, ldp, NoOp{}, [](int64_t, int) {});
        double acc = 0;
        for (int64_t i = 1; i < m; ++i) {
          float row = 0;
          for (int64_t j = 0; j < i; ++j) {  // weight 0 (scale 0, or flushed) skipped: A_ij may be past FLT_MAX
            const float weight = cwpw[i - j];
            if (weight != 0.0f) row += weight * Am[i * ldp + j] * Pm[i * ldp + j];
          }
          acc += row;
        }
        slope_sum += acc;
      }
      if (need_dq) {  // dQ = (c lambda^{i+1}) dO S^T + P~ K
        if (need_ds) mask_p(0, m);
        int64_t ldd;
        float* dQ = gradient_rows(a.dq, b, h, t0, w.dq, ldd);
        const bool inter_in_y = need_ds && !s_zero;
        {
          LIGHTNING_SITE(pass1_dq);
          gemm_plus_triangle<P>(Part::lower_k, m, dk, s_zero || inter_in_y ? 0 : dv, w.dos.data(), dv, St, ldst, Pm,
                                ldp, K, ldk, dQ, ldd, 0.0f, tile, stream_dq, inter_in_y ? w.y.data() : nullptr, dk);
        }
        store_rows<P>(dQ, ldd, a.dq, b, h, t0, m);
        if constexpr (std::is_same_v<T, float>)
          if (stash) {
            LIGHTNING_SITE(pass1_p_stash);
            copy_p(m, Pm, ldp, p_stash(a, b, h, t0), p_stash_ld(a));
          }
      }
    }
    const float decay = factors.next(m, pw[m]);  // lambda^m for S and H (DecayFactors)
    if (need_ds && !s_zero) {  // while S is zero so is H: both start with the first nonzero S
      // H <- lambda^m (H + m S), from the entry S: the lags of whole blocks between a pair's tokens
      // (the part of the lag before the block's end is pass 2's, through R). H is not read before
      // its first value (the workspace's last item left it).
      const float weight_m = static_cast<float>(m) * pw[m];
      if (h_zero)
        for (int64_t e = 0; e < state_size; ++e) Ht[e] = weight_m * St[e];
      else  // as a plain loop g++ 12 left it scalar: 5% of the call
        Ker::axpby(state_size, weight_m, St, decay, Ht);
      h_zero = false;
    }
    if (t0 + m == n && !final_st) break;  // no later block reads S
    {
      LIGHTNING_SITE(pass1_update);
      gemm<P>(Part::full, dv, dk, m, Vdt, ldvd, K, ldk, St, ldst, s_zero ? 0.0f : decay_beta(St, dv, dk, ldst, decay),
              tile);
    }
    pf.step(1 << 30);  // whatever is left
    s_zero = false;
  }
  if (stream_dq) end_streams();
  if (final_st)
    for (int64_t c = 0; c < dv; ++c)
      for (int64_t i = 0; i < dk; ++i) final_st[c * dk + i] = s_zero ? 0.0f : St[c * ldst + i];
  if (need_ds) {
    double out = slope_sum;
    if (!a.d_state_out.absent()) {
      finite = finite && all_finite(dk, dv, a.d_state_out.row(b, g, 0), a.d_state_out.seq_stride);
      if (!h_zero)
        for (int64_t i = 0; i < dk; ++i) {
          const float* row = a.d_state_out.row(b, g, i);
          for (int64_t c = 0; c < dv; ++c) out += static_cast<double>(row[c]) * Ht[c * ldst + i];
        }
    }
    a.d_slopes[b * a.k.heads + g] = finite ? -out : std::numeric_limits<double>::quiet_NaN();
  }
}

/**
 * dK^T (+)= Q^T P~ (column-exact) for a q head whose Q holds a NaN or Inf: P~^T Q row by row
 * (gemm's upper_k) into the scratch y, then added transposed; `add` says dKt already holds a sum.
 */
template <Path P>
void add_dk_intra_exact(int64_t m, int64_t dk, const float* Pm, int64_t ldpm, float* Pt, int64_t ldp, const float* Q,
                        int64_t ldq, float* y, float* dKt, bool add) {
  transpose<P>(m, m, Pm, ldpm, Pt, ldp);
  gemm<P>(Part::upper_k, m, dk, m, Pt, ldp, Q, ldq, y, dk, 0.0f);
  for (int64_t c = 0; c < dk; ++c)
    for (int64_t j = 0; j < m; ++j) dKt[c * ldp + j] = add ? dKt[c * ldp + j] + y[j * dk + c] : y[j * dk + c];
}

/**
 * Whether pass 2's panels of dV and R (backward_reverse_pass) are a register tile wide (col_tile) on
 * a path whose narrower tiles have more rows (avx2: 4 x 24, and 6 x 16 up to NR - W = 16 columns),
 * rather than NR - W: when the panel loop's working set at NR columns fits in `l1_bytes` of L1 (the
 * decayed K rows, m x d_k; the scaled Q^T, d_k x ldp; A~^T, m x ldp; the panel's columns of R, dO and
 * dV, d_k + 2 m rows). At m = 24 and d = 128 that is 43 KB: on a Zen 4 (32 KB L1) 16 columns took
 * the backward 0.9965x and 0.9946x the time of 24 (tools/ab, n = 16384, one head, 300 pairs); on the
 * Intel Xeon of family 6 model 167 (48 KB) 24 took 0.9905x and 0.9920x the time of 16, and 0.9921x
 * at d = 64 (30 pairs, heads 8), where the set is 25 KB and the panels are 24 wide on a 32 KB L1
 * too (not measured there). Either width gives the same bits.
 */
template <Path P>
bool wide_panels(int64_t m, int64_t ldp, int64_t dk, int64_t l1_bytes) {
  using Ker = kernels::Kernels<P>;
  if constexpr (Ker::NMR == Ker::MR) return true;
  const int64_t floats = m * dk + (dk + m) * ldp + (dk + 2 * m) * Ker::NR;
  return floats * static_cast<int64_t>(sizeof(float)) <= l1_bytes;
}

/**
 * Whether pass 2 asks the V~^T stash and dK's rows into L1 once more just before dK^T (they were
 * asked a block ahead by the Prefetcher): on an L1 below 48 KiB. On a Zen 4 (32 KB) many of those
 * lines had left L1 again, and the two requests took the avx2 backward 0.987x and then 0.990x its
 * time (tools/ab, n = 16384, one head, 400 pairs, fastest tenth); on the Intel Xeon of family 6 model
 * 167 (48 KB) the backward took 0.9888x, 0.9929x, 0.9945x, 0.9905x and 0.9895x the time without
 * them (d = 128, 30-40 pairs, heads 8; 0.9978x at d = 64), one of the two left out 0.997-1.005x.
 */
inline bool reask_into_l1(int64_t l1_bytes) { return l1_bytes < kLargeL1Bytes; }

/**
 * Pass 2 (blocks in reverse order) for batch b, k/v head g: dK, dV, dS_in and the slope gradient's
 * terms through the adjoint (added to pass 1's). dK is summed transposed, dK^T = Q^T P~ + R
 * (lambda^{m-1-j} V)^T, so that both dK and dV read R as it is kept (no d_k x d_v transpose per
 * block), and leaves through one m x d_k transpose.
 */
template <Path P, class T>
void backward_reverse_pass(const BackwardArgs<T>& a, int64_t b, int64_t g, BackwardWorkspace& w) {
  using Ker = kernels::Kernels<P>;
  const int64_t n = a.q.seq, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp, ldr = w.ldr;
  Prefetcher& pf = w.prefetch;
  pf.into_l1 = P != Path::scalar;
  pf.pace = pace_for(P, dk, dv);
  const auto tile = [&] { pf.tile<true>(); };
  const bool need_dk = !a.dk.absent(), need_dv = !a.dv.absent(), need_ds_in = !a.d_state_in.absent();
  const bool need_ds = a.d_slopes != nullptr;
  const bool stash = stash_p_in_dk(a);  // pass 1 ran (for dQ) and left P~ in dK's rows
  // Streamed outputs are not prefetched, but for the stashes in their rows, which this pass reads; dV
  // only with one q head per k/v head, whose tiles write it once (a group sums into it).
  const bool stream_dk = streams<P>(a.dk), stream_dv = group == 1 && streams<P>(a.dv);
  const bool v_stashed = stash_v_in_dv<P>(a, a.block);  // whole blocks read no V (a shorter last one may)
  const View<T> dk_ahead = stream_dk ? View<T>{} : a.dk;  // streamed, only the P~ stash is asked for
  const View<T> dv_ahead = !stream_dv || v_stashed ? a.dv : View<T>{};
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  const float* crev = w.decay.rcpow.data() + w.decay.block;  // crev[j - i] = cpw[i - j]
  const float* lag = w.decay.lcpow.data() + w.decay.block;   // lag[i - j] = cpw[i - j]
  float* R = w.r.data();
  float* Pm = w.p.data();
  float* Pt = w.pt.data();
  float* dKt = w.dkt.data();
  bool r_zero = a.d_state_out.absent();
  if (!r_zero)
    for (int64_t i = 0; i < dk; ++i) std::copy_n(a.d_state_out.row(b, g, i), dv, R + i * ldr);
  DecayFactors factors{w.decay.slope};  // R's per block, from the last
  double slope_sum = 0;  // sum_j (m-1-j) v_j . (lambda^{m-1-j} k_j R) over the blocks (header comment)
  // dK^T's products are one vector wide at avx512's block of 16: there they run in pair tiles
  // (kernels/avx512.hpp, pair_block); other blocks as below.
  constexpr bool has_pairs = kernels::PairTiles<P>::value;
  const bool wide = wide_panels<P>(std::min(a.block, n), ldp, dk, a.l1()), reask = reask_into_l1(a.l1());

  for (int64_t t0 = n == 0 ? 0 : (n - 1) / a.block * a.block; t0 >= 0 && n > 0; t0 -= a.block) {
    LIGHTNING_SITE(pass2_block);
    const int64_t m = std::min(a.block, n - t0);
    // kBlocksAhead blocks back, over this block's P (unless kept from pass 1), dK^T, A, dV and R
    // tiles, each stream's lines in descending order (tile<true>).
    prefetch_block(pf, a, b, g, t0 - kBlocksAhead * a.block, !v_stashed || need_ds, true, stash && stream_dk,
                   {dk_ahead, dv_ahead}, {},
                   group * ((stash ? 0 : triangle_tile_count<P>(false, m, ldp)) +
                            tile_count<P>(dk, m) + triangle_tile_count<P>(true, m, ldp) +
                            tile_count<P>(m, dv) + tile_count<P>(dk, dv)));
    int64_t ldk, ldv;
    const float* K = rows_as_floats<P>(a.k, b, g, t0, m, w.k, ldk);
    const float* V = rows_as_floats<P>(a.v, b, g, t0, m, w.v, ldv);
    for (int64_t j = 0; j < m; ++j) w.to_end[j] = pw[m - 1 - j];
    const bool pairs = pair_block<P>(a, m), v_in_dv = stash_v_in_dv<P>(a, m);
    // The decayed V^T of dK's inter term (in pair layout for pair tiles; as pass 1 left it in dV's
    // rows, stash_v_in_dv), and V^T for P = dO V^T unless pass 1 kept P~; the decayed K rows of dV's
    // inter term.
    int64_t ldvd;
    const float* Vdt = decayed_vt(a, v_in_dv, b, g, t0, m, w.vdt, ldp, ldvd);
    // The Prefetcher asked for this block's rows during an earlier block; with L1 at 32 KB (Zen 4)
    // many of their lines have left it again. V~^T as pass 1 left it (read first by dK^T, after Q^T
    // and A~^T) and dK's rows (written by dK^T's transpose, asked before dK^T) are asked into L1
    // once more where L1 is below 48 KiB (reask_into_l1). tools/ab, avx2, Zen 4, n = 16384, one
    // head, 400 pairs, fastest tenth, with requests two blocks ahead: V~^T 0.987x the backward's
    // time, then dK's rows 0.990x (one block ahead, without both the backward took 0.996x its time
    // and the forward 0.996x, a tie: kept). No other stream gained so: K and Q asked at the end of
    // the block before, 1.013x; the block's d_o before dK^T, 1.01x; the P~ stash, 1.00x; in pass 1,
    // dQ's rows 1.010x, the stashes' rows 1.006x.
    if (v_in_dv && reask) prefetch_rows_into_l1(Vdt, 1, m * dv, 0, false);
    if (pairs) {  // implies need_dk
      if constexpr (has_pairs) pair_transpose<P>(m, dv, V, ldv, w.vdp.data(), kernels::kPairRow, w.to_end.data());
      if (!stash) transpose<P>(m, dv, V, ldv, w.vt.data(), ldp);
    } else if (need_dk && !v_in_dv) {
      if (stash)
        transpose<P>(m, dv, V, ldv, w.vdt.data(), ldp, w.to_end.data());
      else
        transpose_dual<P>(m, dv, V, ldv, w.vt.data(), ldp, w.vdt.data(), ldp, w.to_end.data());
    }
    if ((need_dv || need_ds) && !r_zero) {  // the decayed K rows of dV's inter term
      LIGHTNING_SITE(pass2_k_decayed);
      for (int64_t j = 0; j < m; ++j)
        for (int64_t c = 0; c < dk; ++c) w.kd[j * dk + c] = w.to_end[j] * K[j * ldk + c];
    }
    // With d_slopes, dV's inter term (lambda^{m-1-j} K) R apart, for the slope gradient's weighted
    // dots; dV's tiles then start from it (C0): the same bits as the one product.
    const bool inter_in_yv = need_ds && !r_zero;
    if (inter_in_yv) {
      gemm<P>(Part::full, m, dv, dk, w.kd.data(), dk, R, ldr, w.yv.data(), dv, 0.0f);
      slope_sum += weighted_row_dots(m, dv, V, ldv, w.yv.data(), dv, [m](int64_t j) { return m - 1.0 - j; });
    }
    // dK^T, once every q head's term is in, transposed into dK's rows.
    const auto store_dk = [&] {
      int64_t lddk;
      float* dK = gradient_rows(a.dk, b, g, t0, w.dk, lddk);
      LIGHTNING_SITE(pass2_dk_transpose);
      transpose<P>(dk, m, dKt, ldp, dK, lddk, nullptr, stream_dk);
      store_rows<P>(dK, lddk, a.dk, b, g, t0, m);
    };
    // With whole tiles, the group's last q head's dK^T tiles store their sums (the group's earlier
    // heads' in dKt added) transposed into dK's rows (kernels::TransposedTiles: avx2), the same bits
    // without the transpose out; that head's P~ stash, which those rows hold, is copied out first.
    // tools/ab (avx2, n = 16384, one head, 400 pairs; one tree on both sides, the tiles switched on
    // one side by the environment): backward 0.9909 and 0.9909 with them on the new side, 1.0038 and
    // 1.0048 on the old side, 0.9977 and 0.9982 on neither.
    bool dk_transposed = false;
    if constexpr (kernels::TransposedTiles<P>::value)
      dk_transposed = need_dk && !stream_dk && m % Ker::NR == 0 && dk % Ker::MR == 0;
    int64_t lddv = 0;
    float* dV = need_dv ? gradient_rows(a.dv, b, g, t0, w.dv, lddv) : nullptr;
    const bool update_r = t0 > 0 || need_ds_in;  // the adjoint entering the first block is dS_in only
    const float decay = factors.next(m, pw[m]);  // lambda^m for R (DecayFactors)
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      int64_t ldq, ldo;
      const float* Q = rows_as_floats<P>(a.q, b, h, t0, m, w.q, ldq);
      const float* dO = rows_as_floats<P>(a.d_o, b, h, t0, m, w.d_o, ldo);
      // The group's q heads sum into dK and dV; the first also brings the inter-block term.
      const bool first = h == g * group;
      const bool inter = first && !r_zero;
      const float beta = first ? 0.0f : 1.0f;
      // Q^T plain (dK^T and A^T = K Q^T) and scaled by c lambda^{i+1} (the update of R).
      const bool need_qt = need_dk || need_dv;
      {
        LIGHTNING_SITE(pass2_q_transpose);
        if (need_qt && update_r)
          transpose_dual<P>(m, dk, Q, ldq, w.qt.data(), ldp, w.qdt.data(), ldp, cpw + 1);
        else if (need_qt)
          transpose<P>(m, dk, Q, ldq, w.qt.data(), ldp);
        else if (update_r)
          transpose<P>(m, dk, Q, ldq, w.qdt.data(), ldp, cpw + 1);
      }
      if (need_dv) {  // A~^T from K Q^T on and above the diagonal
        LIGHTNING_SITE(pass2_triangle);
        gemm_triangle<P>(true, m, dk, K, ldk, w.qt.data(), ldp, Pt, ldp, tile,
                         [&](int64_t j0, int mr) { mask_upper(j0, j0 + mr, m, Pt, ldp, lag); });
      }
      if constexpr (std::is_same_v<T, float>)
        if (need_dk && !stream_dk && reask && h + 1 == (g + 1) * group)
          prefetch_rows_into_l1(a.dk.row(b, g, t0), m, dk, a.dk.seq_stride, true);
      if (need_dk) {  // dK^T = Q^T P~ + R (lambda^{m-1-j} V)^T
        // P~ as pass 1 left it in dK's rows (the same bits), or computed here.
        const float* Pl = Pm;
        int64_t ldl = ldp;
        if constexpr (std::is_same_v<T, float>)
          if (stash) Pl = p_stash(a, b, h, t0), ldl = p_stash_ld(a);
        if (!stash)
          gemm_triangle<P>(false, m, dv, dO, ldo, w.vt.data(), ldp, Pm, ldp, tile,
                           [&](int64_t i0, int mr) { mask_lower(i0, i0 + mr, m, Pm, ldp, crev); });
        // With a NaN or Inf in Q, Q^T P~ would meet P~'s zeros: R (V~)^T alone, then the row-exact term.
        // A~^T's first row, c lambda^i (k_0 . q_i) for every i, is finite only if every q_i is (a NaN or
        // Inf in q_i makes the sum NaN or Inf, and its weight, even 0, keeps it so): when dV is asked
        // for, that row of m floats is the test instead of Q's m d_k. A non-finite k_0, or a product
        // past FLT_MAX, takes the exact path too, which is right for any Q, only slower.
        bool finite_q;
        {
          LIGHTNING_SITE(pass2_q_test);
          finite_q = need_dv ? all_finite(1, m, Pt, ldp) : all_finite(m, dk, Q, ldq);
        }
        const bool last = h + 1 == (g + 1) * group, dk_out = dk_transposed && last && finite_q;
        if (dk_out) {
          if constexpr (kernels::TransposedTiles<P>::value) {
            if (Pl != Pm) {  // the stash, in the rows about to be written
              copy_p(m, Pl, ldl, Pm, ldp);
              Pl = Pm, ldl = ldp;
            }
            int64_t lddk;
            float* dK = gradient_rows(a.dk, b, g, t0, w.dk, lddk);
            LIGHTNING_SITE(pass2_dkt);
            gemm_plus_lower_right_transposed<P>(dk, m, inter ? dv : 0, R, ldr, Vdt, ldvd, w.qt.data(), ldp, Pl, ldl,
                                                dK, lddk, first ? nullptr : dKt, ldp, tile);
            store_rows<P>(dK, lddk, a.dk, b, g, t0, m);
          }
        } else if (pairs) {  // P~ zipped into pair layout
          if constexpr (has_pairs) {
            LIGHTNING_SITE(pass2_dkt);
            if (finite_q) Ker::zip_row_pairs(m, Pl, ldl, w.pz.data());
            if (finite_q || inter)
              gemm_pairs<P>(dk, inter ? dv : 0, R, ldr, w.vdp.data(), finite_q ? m : 0, w.qt.data(), ldp,
                            w.pz.data(), dKt, ldp, beta, tile);
          }
        } else if (finite_q) {
          LIGHTNING_SITE(pass2_dkt);
          gemm_plus_lower_right<P>(dk, m, inter ? dv : 0, R, ldr, Vdt, ldvd, w.qt.data(), ldp, Pl, ldl, dKt, ldp, beta,
                                   tile);
        } else if (inter) {
          gemm<P>(Part::full, dk, m, dv, R, ldr, Vdt, ldvd, dKt, ldp, beta);
        }
        if (!finite_q) add_dk_intra_exact<P>(m, dk, Pl, ldl, w.a.data(), ldp, Q, ldq, w.y.data(), dKt, inter || !first);
        // After the group's last term, while dK^T is in L1: at the block's end (after dV and R, whose
        // panels evict it) the transpose took 0.4% more of the avx2 backward.
        if (last && !dk_out) store_dk();
      }
      // By column panels of R, one register tile wide: dV's columns, then R's same columns, which
      // stay in L1 between the two (R is d_k x d_v, 64 KB at d = 128); on avx2 16 columns wide when
      // 24 would not fit in L1 (wide_panels).
      for (int64_t c0 = 0, cols = 0; c0 < dv; c0 += cols) {
        cols = wide ? col_tile<P>(dv - c0) : std::min<int64_t>(Ker::NR - Ker::W, dv - c0);
        if (need_dv) {  // dV = A~^T dO + (lambda^{m-1-j} K) R
          LIGHTNING_SITE(pass2_dv);
          gemm_plus_triangle<P>(Part::upper_k, m, cols, inter && !inter_in_yv ? dk : 0, w.kd.data(), dk, R + c0, ldr,
                                Pt, ldp, dO + c0, ldo, dV + c0, lddv, beta, tile, stream_dv,
                                inter && inter_in_yv ? w.yv.data() + c0 : nullptr, dv);
        }
        if (update_r) {  // R <- lambda^m R + sum_h (c lambda^{i+1} Q_h)^T dO_h
          const float r_beta = r_zero ? 0.0f : first ? decay_beta(R + c0, dk, cols, ldr, decay) : 1.0f;
          LIGHTNING_SITE(pass2_r_update);
          gemm<P>(Part::full, dk, cols, m, w.qdt.data(), ldp, dO + c0, ldo, R + c0, ldr, r_beta, tile);
        }
      }
      if (update_r) r_zero = false;
    }
    if (group == 0) {  // no q heads: only the adjoint state reaches dK and dV, and it decays
      if (need_dk && r_zero) std::fill(w.dkt.begin(), w.dkt.end(), 0.0f);
      if (need_dk && !r_zero) gemm<P>(Part::full, dk, m, dv, R, ldr, Vdt, ldvd, dKt, ldp, 0.0f);
      if (need_dv && r_zero)
        for (int64_t j = 0; j < m; ++j) std::fill_n(dV + j * lddv, dv, 0.0f);
      if (need_dv && !r_zero) gemm<P>(Part::full, m, dv, dk, w.kd.data(), dk, R, ldr, dV, lddv, 0.0f);
      if (update_r && !r_zero)
        for (int64_t e = 0; e < dk * ldr; ++e) R[e] *= decay;  // a power flushed to 0 still multiplies
    }
    if (need_dk && group == 0) store_dk();
    if (need_dv) store_rows<P>(dV, lddv, a.dv, b, g, t0, m);
    pf.step<true>(1 << 30);  // whatever is left
  }
  if (stream_dk || stream_dv) end_streams();
  if (need_ds) a.d_slopes[b * a.k.heads + g] -= slope_sum;  // pass 1 wrote its terms (or NaN) there
  if (need_ds_in)
    for (int64_t i = 0; i < dk; ++i) {
      float* out = a.d_state_in.row(b, g, i);
      if (r_zero)
        std::fill_n(out, dv, 0.0f);
      else
        std::copy_n(R + i * ldr, dv, out);
    }
}

/**
 * Tokens [t0, t0 + len) of x, every batch entry; an absent view stays absent. No tokens keep x's
 * data: an empty sequence at the end of a packed batch starts at t0 = x.seq, whose row address may
 * lie past x's memory (with a free seq_stride, far past), which no call of its own would compute.
 * Nor does a view without elements whose data is null (no heads, say: found by the fuzzer on the
 * sequence-parallel backward, an offset added to a null pointer).
 */
template <class T>
View<T> token_range(const View<T>& x, int64_t t0, int64_t len) {
  if (x.absent()) return x;
  View<T> r = x;
  r.data = len > 0 && x.data ? x.row(0, 0, t0) : x.data;
  r.seq = len;
  return r;
}

/** `a` on tokens [t0, t0 + len) only: its token views cut by token_range, the rest as it is. */
template <class T>
BackwardArgs<T> tokens_of(const BackwardArgs<T>& a, int64_t t0, int64_t len) {
  BackwardArgs<T> r = a;
  for (View<const T>* x : {&r.q, &r.k, &r.v, &r.d_o}) *x = token_range(*x, t0, len);
  for (View<T>* x : {&r.dq, &r.dk, &r.dv}) *x = token_range(*x, t0, len);
  return r;
}

/** Entry s of the states x [S, G, d_k, d_v] as a view [1, G, d_k, d_v]; an absent view stays absent. */
template <class T>
View<T> state_entry(const View<T>& x, int64_t s) {
  if (x.absent()) return x;
  View<T> r = x;
  r.data = x.row(s, 0, 0);
  r.batch = 1;
  return r;
}

/**
 * A line of gradient rows computed from a zero state or adjoint, to be corrected (correct_rows):
 * rows [begin, end) of batch entry b, head `head`, of dQ (from d_o and S^T, the true state before
 * the rows' piece; Lag{piece begin}), dK (from v and G^T) or dV (from k and G), G the gradient of the
 * state after the piece (Lag{piece end, true}).
 */
struct GradientRows {
  enum Kind { dq, dk, dv } kind;
  int64_t b, head, begin, end;
  const float* matrix;
  double slope;
  Lag lag;
};

/**
 * Appends the lines of item (b, g)'s tokens [begin, end) that `a` asks for: dQ's (one per q head of
 * the group) when the true state before them, st_in (S^T, d_v x d_k), is given; dK's and dV's when
 * the gradient of the state after them is, as g_out (d_k x d_v) and its transpose gt_out.
 */
template <class T>
void add_gradient_rows(std::vector<GradientRows>& lines, const BackwardArgs<T>& a, int64_t b, int64_t g,
                       int64_t begin, int64_t end, double slope, const float* st_in, const float* g_out,
                       const float* gt_out) {
  const int64_t group = a.q.heads / a.k.heads;
  if (st_in && !a.dq.absent())
    for (int64_t h = g * group; h < (g + 1) * group; ++h)
      lines.push_back({GradientRows::dq, b, h, begin, end, st_in, slope, Lag{begin, false}});
  if (g_out && !a.dk.absent()) lines.push_back({GradientRows::dk, b, g, begin, end, gt_out, slope, Lag{end, true}});
  if (g_out && !a.dv.absent()) lines.push_back({GradientRows::dv, b, g, begin, end, g_out, slope, Lag{end, true}});
}

/** Corrects the lines' rows, laid end to end and cut into equal shares over `workers` threads. */
template <Path P, class T>
void correct_gradients(const BackwardArgs<T>& a, int workers, const std::vector<GradientRows>& lines) {
  std::vector<int64_t> lengths;
  for (const GradientRows& l : lines) lengths.push_back(l.end - l.begin);
  parallel_for(workers, workers, [&](int, int64_t share) {
    Floats scratch;
    for_share_of_runs(lengths, workers, share, [&](size_t r, int64_t from, int64_t to) {
      const GradientRows& l = lines[r];
      const int64_t r0 = l.begin + from, r1 = l.begin + to;
      if (l.kind == GradientRows::dq)
        correct_rows<P>(a.d_o, a.dq, l.b, l.head, r0, r1, l.matrix, l.slope, a.scale, l.lag, a.block, scratch);
      else if (l.kind == GradientRows::dk)
        correct_rows<P>(a.v, a.dk, l.b, l.head, r0, r1, l.matrix, l.slope, 1.0f, l.lag, a.block, scratch);
      else
        correct_rows<P>(a.k, a.dv, l.b, l.head, r0, r1, l.matrix, l.slope, 1.0f, l.lag, a.block, scratch);
    });
  });
}

/**
 * Whether backward_split reruns its pieces rather than correcting rows, counted in d_k x d_v
 * products per row: the corrections (shared out evenly) take one per row while its weight has not
 * underflowed, per q head for a later piece's dQ and once each for an earlier piece's dK and dV; the
 * rerun's state updates (each worker its own pieces') one per row for S (not an item's last piece)
 * and one per q head for the adjoint (not its first). Either way the pieces' backwards remain.
 */
template <class T>
bool rerun_cheaper(const BackwardArgs<T>& a, int workers, const std::vector<Piece>& pieces, bool pass1, bool pass2) {
  const int64_t G = a.k.heads, group = a.q.heads / G;
  const int64_t corrected_later = pass1 && !a.dq.absent() ? group : 0;
  const int64_t corrected_earlier = pass2 ? (a.dk.absent() ? 0 : 1) + (a.dv.absent() ? 0 : 1) : 0;
  double corrections = 0;
  std::vector<double> updates(static_cast<size_t>(workers), 0.0);
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& pc = pieces[p];
    const bool first = p == 0 || pieces[p - 1].item != pc.item;
    const bool last = p + 1 == pieces.size() || pieces[p + 1].item != pc.item;
    const int64_t len = pc.end - pc.begin;
    const double rows = static_cast<double>(rows_before_underflow(a.slopes ? a.slopes[pc.item % G] : 0.0, len));
    corrections += rows * static_cast<double>((first ? 0 : corrected_later) + (last ? 0 : corrected_earlier));
    updates[static_cast<size_t>(pc.worker)] +=
        static_cast<double>(len) * static_cast<double>((pass1 && !last ? 1 : 0) + (pass2 && !first ? group : 0));
  }
  return *std::max_element(updates.begin(), updates.end()) < corrections / workers;
}

/**
 * The sequence-parallel backward over `workers` threads: the (batch, k/v head) items laid end to end
 * are cut into equal shares (`pieces`, split_line). Each piece needs the true state before it and the
 * gradient of the state after it (the adjoint): the pieces' own final states from a zero state (an
 * item's first piece from state_in) are scanned forward, and their own adjoints from a zero gradient
 * (an item's last piece from d_state_out) backward, with SPEC.md's operator. Then, either
 * - `rerun` (always with d_slopes, whose terms need each piece's true states): the pieces first run
 *   only those state updates, then both passes from the scanned state and adjoint, as a call on
 *   their tokens would; d_slopes sums the pieces' terms per item in token order;
 * - or not: the pieces first run both passes from zero, which leave S^T after them and the adjoint
 *   before them, and then rows are corrected, shared out evenly again: a later piece's dQ by
 *   c lambda^{i+1} dO S_in^T, an earlier piece's dK and dV by lambda^{m-1-j} V G^T and
 *   lambda^{m-1-j} K G, G the gradient of the state after the piece (m its length, i and j rows
 *   within it); dS_in is the scanned adjoint before an item's first piece.
 * a.states_t_out, if given, gets the scanned state after an item's last piece.
 */
template <Path P, class T>
void backward_split(const BackwardArgs<T>& a, int workers, const std::vector<Piece>& pieces, bool pass1, bool pass2,
                    bool rerun) {
  const int64_t G = a.k.heads, dk = a.q.dim, dv = a.v.dim, size = dk * dv;
  const size_t np = pieces.size();
  const auto at = [&](Floats& x, size_t p) { return x.data() + p * static_cast<size_t>(size); };
  const auto first = [&](size_t p) { return p == 0 || pieces[p - 1].item != pieces[p].item; };
  const auto last = [&](size_t p) { return p + 1 == np || pieces[p + 1].item != pieces[p].item; };
  const auto slope = [&](size_t p) { return a.slopes ? static_cast<double>(a.slopes[pieces[p].item % G]) : 0.0; };
  // S^T after an item's last piece: a.states_t_out's, if asked for.
  const auto final_st = [&](size_t p) { return a.states_t_out ? a.states_t_out + pieces[p].item * size : nullptr; };
  // The adjoints are wanted by pass 2, and by the slope gradient's term <G, W> at each piece's end.
  const bool adjoint = pass2 || a.d_slopes;
  // Per piece: S^T after it (an item's last piece's in final_st) and the adjoint before it, then its
  // transpose for dK's correction (or S after it for the rerun).
  Floats states(pass1 ? np * static_cast<size_t>(size) : 0), adjoints(adjoint ? np * static_cast<size_t>(size) : 0);
  Floats transposed((rerun ? pass1 : pass2) ? np * static_cast<size_t>(size) : 0);
  std::vector<BackwardWorkspace> ws = block_workspaces<P, BackwardWorkspace>(
      workers, a.block, a.q.seq, dk, dv, !std::is_same_v<T, float>, a.d_slopes != nullptr, kernels::PairTiles<P>::value);
  const auto for_pieces = [&](auto&& fn) {  // fn(piece's args, p, workspace) for each piece, on its worker
    parallel_for(workers, workers, [&](int thread, int64_t share) {
      for (size_t p = 0; p < np; ++p) {
        if (pieces[p].worker != share) continue;
        BackwardArgs<T> piece = tokens_of(a, pieces[p].begin, pieces[p].end - pieces[p].begin);
        if (!first(p)) piece.state_in = {};
        if (!last(p)) piece.d_state_out = {};
        BackwardWorkspace& w = ws[static_cast<size_t>(thread)];
        w.decay.fill(slope(p), a.scale, w.block);
        fn(piece, p, w);
      }
    });
  };
  for_pieces([&](BackwardArgs<T>& piece, size_t p, BackwardWorkspace& w) {
    const int64_t b = pieces[p].item / G, g = pieces[p].item % G;
    if (rerun) {  // the state updates alone: S^T after the piece, unless last; the adjoint before it, unless first
      piece.dq = piece.dk = piece.dv = {};
      piece.d_slopes = nullptr;
      if (pass1 && !last(p)) backward_forward_pass<P>(piece, b, g, w, at(states, p));
      if (adjoint && !first(p)) {
        piece.d_state_in = View<float>(at(adjoints, p), 1, 1, dk, dv, 0, 0, dv);
        backward_reverse_pass<P>(piece, b, g, w);
      }
      return;
    }
    piece.d_state_in = pass2 ? View<float>(at(adjoints, p), 1, 1, dk, dv, 0, 0, dv) : View<float>();
    if (pass1) backward_forward_pass<P>(piece, b, g, w, last(p) ? final_st(p) : at(states, p));
    if (pass2) backward_reverse_pass<P>(piece, b, g, w);
  });
  // The scans, in place: states[p] becomes S^T after piece p, adjoints[p] the gradient of the state
  // before it (the true dS_in at an item's first piece). A rerun's last pieces end with the true
  // final state, its first pieces with the true dS_in.
  for (size_t p = 0; p < np; ++p)
    if (pass1 && !first(p) && (!last(p) || (final_st(p) && !rerun))) {
      combine_states<P>(size, at(states, p - 1), last(p) ? final_st(p) : at(states, p), slope(p),
                        pieces[p].end - pieces[p].begin);
    }
  if (adjoint)
    for (size_t p = np; p-- > 0;) {
      if (!last(p) && !(rerun && first(p)))
        combine_states<P>(size, at(adjoints, p + 1), at(adjoints, p), slope(p), pieces[p].end - pieces[p].begin);
      if (!last(p) && !rerun) transpose<P>(dk, dv, at(adjoints, p + 1), dv, at(transposed, p + 1), dk);
    }
  // dS_in, once no piece reads d_state_out any more: it may be the very same view.
  const auto write_d_state_in = [&] {
    if (!a.d_state_in.absent())
      for (size_t p = 0; p < np; ++p)
        if (first(p))
          for (int64_t i = 0; i < dk; ++i)
            std::copy_n(at(adjoints, p) + i * dv, dv, a.d_state_in.row(pieces[p].item / G, pieces[p].item % G, i));
  };
  if (rerun) {
    // Both passes of each piece from the true state before it (S, from the scanned S^T) and the
    // gradient of the state after it; the slope gradient's terms per piece, summed per item below.
    if (pass1)
      for (size_t p = 0; p + 1 < np; ++p)
        if (!last(p)) transpose<P>(dv, dk, at(states, p), dk, at(transposed, p), dv);
    std::vector<double> terms(a.d_slopes ? np : 0);
    // Each worker's d_slopes slots, one per item (the passes write a.d_slopes[b G + g]).
    std::vector<std::vector<double>> own(static_cast<size_t>(workers),
                                         std::vector<double>(a.d_slopes ? static_cast<size_t>(a.q.batch * G) : 0));
    for_pieces([&](BackwardArgs<T>& piece, size_t p, BackwardWorkspace& w) {
      const int64_t b = pieces[p].item / G, g = pieces[p].item % G;
      if (pass1 && !first(p)) piece.state_in = View<const float>(at(transposed, p - 1), 1, 1, dk, dv, 0, 0, dv);
      if (adjoint && !last(p)) piece.d_state_out = View<const float>(at(adjoints, p + 1), 1, 1, dk, dv, 0, 0, dv);
      // An item's dS_in from its first piece, kept until every piece has read d_state_out.
      piece.d_state_in = first(p) && !a.d_state_in.absent() ? View<float>(at(adjoints, p), 1, 1, dk, dv, 0, 0, dv)
                                                            : View<float>();
      std::vector<double>& slots = own[static_cast<size_t>(pieces[p].worker)];
      if (a.d_slopes) piece.d_slopes = slots.data();
      if (pass1) backward_forward_pass<P>(piece, b, g, w, last(p) ? final_st(p) : nullptr);
      if (pass2) backward_reverse_pass<P>(piece, b, g, w);
      if (a.d_slopes) terms[p] = slots[static_cast<size_t>(pieces[p].item)];
    });
    if (a.d_slopes)
      for (size_t p = 0; p < np; ++p) {
        double& sum = a.d_slopes[pieces[p].item];
        sum = first(p) ? terms[p] : sum + terms[p];
      }
    write_d_state_in();
    return;
  }
  write_d_state_in();
  // The corrections: each row one product with a d_k x d_v matrix.
  std::vector<GradientRows> lines;
  for (size_t p = 0; p < np; ++p) {
    const bool after = pass2 && !last(p);
    add_gradient_rows(lines, a, pieces[p].item / G, pieces[p].item % G, pieces[p].begin, pieces[p].end, slope(p),
                      pass1 && !first(p) ? at(states, p - 1) : nullptr, after ? at(adjoints, p + 1) : nullptr,
                      after ? at(transposed, p + 1) : nullptr);
  }
  correct_gradients<P>(a, workers, lines);
}

/**
 * Both passes for every item, spread over `threads` workers. An item is a (batch, k/v head) pair;
 * with `offsets` (cu_seqlens, batch 1) it is a (sequence, k/v head) pair, sequence s the tokens
 * [offsets[s], offsets[s + 1]) with its states and slope partial sums at entry s, run as a call of
 * its own on those tokens would run it.
 */
template <Path P, class T>
void backward_all(const BackwardArgs<T>& a, int threads, const int64_t* offsets, int64_t num_seqs) {
  // Without tokens only dS_in and d_slopes have elements. A call that writes nothing returns before
  // it counts or sizes anything, however many batch entries and heads it names (nothing_to_write).
  const bool tokens = (offsets ? offsets[num_seqs] : a.q.seq) > 0;
  const bool pass1 = (tokens && !a.dq.absent()) || a.d_slopes || a.states_t_out;
  const bool pass2 = (tokens && (!a.dk.absent() || !a.dv.absent() || a.d_slopes)) || !a.d_state_in.absent();
  if (!pass1 && !pass2) return;
  const int64_t items = (offsets ? num_seqs : a.q.batch) * a.k.heads;
  // As the forward (forward_all); with d_slopes the pieces rerun from their true states.
  const int wanted = worker_count(threads, INT32_MAX);
  if (!offsets && split_along_sequence(items, a.q.seq, wanted, a.block)) {
    const std::vector<Piece> pieces =
        split_line(std::vector<int64_t>(static_cast<size_t>(items), a.q.seq), wanted, a.block);
    backward_split<P>(a, wanted, pieces, pass1, pass2, a.d_slopes || rerun_cheaper(a, wanted, pieces, pass1, pass2));
    return;
  }
  const int workers = worker_count(threads, items);
  std::vector<BackwardWorkspace> ws = block_workspaces<P, BackwardWorkspace>(
      workers, a.block, offsets ? longest_sequence(offsets, num_seqs) : a.q.seq, a.q.dim, a.v.dim,
      !std::is_same_v<T, float>, a.d_slopes != nullptr, kernels::PairTiles<P>::value);
  parallel_for(workers, items, [&](int worker, int64_t item) {
    const int64_t b = item / a.k.heads, g = item % a.k.heads;
    BackwardArgs<T> piece = offsets ? tokens_of(a, offsets[b], offsets[b + 1] - offsets[b]) : a;
    if (offsets) {
      for (View<const float>* x : {&piece.state_in, &piece.d_state_out}) *x = state_entry(*x, b);
      piece.d_state_in = state_entry(piece.d_state_in, b);
      if (piece.d_slopes) piece.d_slopes += b * a.k.heads;
    }
    const int64_t pb = offsets ? 0 : b;
    BackwardWorkspace& w = ws[static_cast<size_t>(worker)];
    w.decay.fill(a.slopes ? a.slopes[g] : 0.0, a.scale, w.block);  // the lags of its blocks (forward_group)
    if (pass1)
      backward_forward_pass<P>(piece, pb, g, w, a.states_t_out ? a.states_t_out + item * a.q.dim * a.v.dim : nullptr);
    if (pass2) backward_reverse_pass<P>(piece, pb, g, w);
  });
}

}  // namespace lightning::detail
