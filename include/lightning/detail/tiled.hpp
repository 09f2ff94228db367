// The block loop of the tiled forward, written once; paths differ only in Kernels<P>.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lightning/detail/convert.hpp"
#include "lightning/detail/gemm.hpp"
#include "lightning/detail/parallel.hpp"
#include "lightning/kernels/avx2.hpp"
#include "lightning/kernels/avx512.hpp"
#include "lightning/kernels/scalar.hpp"
#include "lightning/types.hpp"

namespace lightning::detail {

/**
 * Block size used when options.block_size is 0: the fastest of the sweep in docs/block_size.md
 * (tools/tune) for the SIMD paths, where the masked intra-block work grows with the block.
 */
inline int64_t default_block_size(int64_t d_k, int64_t d_v, Path path) {
  if (path == Path::automatic) path = best_path;
  if (path == Path::scalar) return 64;
  return path == Path::avx2 && d_k * d_v <= 64 * 64 ? 48 : 32;
}

/**
 * pow[t] = lambda^t and cpow[t] = scale * lambda^t for t in [0, block], from exp(-slope t) in
 * double: only non-negative powers, values below the smallest normal float flushed to 0 so that
 * strong decay never meets denormal arithmetic.
 */
struct DecayTable {
  std::vector<float> pow, cpow, crev;  // crev[x] = cpow[block - x], so a mask row reads it forwards
  void fill(double slope, double scale, int64_t block) {
    pow.resize(static_cast<size_t>(block + 1));
    cpow.resize(static_cast<size_t>(block + 1));
    crev.resize(static_cast<size_t>(block + 1));
    for (int64_t t = 0; t <= block; ++t) {
      const double p = std::exp(-slope * static_cast<double>(t));
      pow[t] = p < FLT_MIN ? 0.0f : static_cast<float>(p);
      const double cp = scale * p;
      cpow[t] = std::abs(cp) < FLT_MIN ? 0.0f : static_cast<float>(cp);
    }
    for (int64_t t = 0; t <= block; ++t) crev[t] = cpow[block - t];
  }
};

/** One worker's scratch, sized once per call: nothing here grows with the sequence length. */
struct Workspace {
  int64_t block = 0, ldp = 0;  // ldp: leading dimension of the block x block and d_k x block buffers
  std::vector<float> q, kt, kdt, v, p, o, s;
  DecayTable decay;
  Workspace(int64_t block_, int64_t dk, int64_t dv) : block(block_), ldp((block_ + 15) / 16 * 16) {
    q.resize(static_cast<size_t>(block * dk));
    kt.resize(static_cast<size_t>(dk * ldp));
    kdt.resize(static_cast<size_t>(dk * ldp));
    v.resize(static_cast<size_t>(block * dv));
    p.resize(static_cast<size_t>(block * ldp));
    o.resize(static_cast<size_t>(block * dv));
    s.resize(static_cast<size_t>(dk * dv));
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
 * The forward for batch b, k/v head g and the q heads of its group, block by block:
 *   O  = (c lambda^{i+1}) (Q S) + mask_c(Q K^T) V        (inter, then intra)
 *   S <- lambda^m S + (lambda^{m-1-j} K)^T V            (state)
 */
template <Path P, class T>
void forward_group(const ForwardArgs<T>& a, int64_t b, int64_t g, Workspace& w) {
  const int64_t n = a.q.seq, dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads, ldp = w.ldp;
  w.decay.fill(a.slopes ? a.slopes[g] : 0.0, a.scale, a.block);
  const float* pw = w.decay.pow.data();
  const float* cpw = w.decay.cpow.data();
  const float* crev = w.decay.crev.data() + a.block;  // crev[j - i] = cpw[i - j] for j <= i
  float* S = w.s.data();
  bool s_zero = a.state_in.absent();
  if (!s_zero)
    for (int64_t i = 0; i < dk; ++i) std::copy_n(a.state_in.row(b, g, i), dv, S + i * dv);

  for (int64_t t0 = 0; t0 < n; t0 += a.block) {
    const int64_t m = std::min(a.block, n - t0);
    // Pack the block's keys transposed (plain and decayed towards the block's end) and values.
    for (int64_t j = 0; j < m; ++j) {
      const T* kr = a.k.row(b, g, t0 + j);
      const T* vr = a.v.row(b, g, t0 + j);
      const float dj = pw[m - 1 - j];
      for (int64_t i = 0; i < dk; ++i) {
        const float x = to_float(kr[i]);
        w.kt[i * ldp + j] = x;
        w.kdt[i * ldp + j] = dj * x;
      }
      for (int64_t c = 0; c < dv; ++c) w.v[j * dv + c] = to_float(vr[c]);
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t i = 0; i < m; ++i) {
        const T* qr = a.q.row(b, h, t0 + i);
        for (int64_t c = 0; c < dk; ++c) w.q[i * dk + c] = to_float(qr[c]);
      }
      float* O = w.o.data();
      if (!s_zero) {
        gemm<P>(Part::full, m, dv, dk, w.q.data(), dk, S, dv, O, dv, 0.0f);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < dv; ++c) O[i * dv + c] *= cpw[i + 1];
      }
      float* Pm = w.p.data();
      gemm<P>(Part::lower_c, m, m, dk, w.q.data(), dk, w.kt.data(), ldp, Pm, ldp, 0.0f);
      for (int64_t i = 0; i < m; ++i) {
        float* row = Pm + i * ldp;
        const float* mask = crev - i;  // contiguous in j, so this loop vectorises
        for (int64_t j = 0; j <= i; ++j) row[j] *= mask[j];
        std::fill(row + i + 1, row + m, 0.0f);
      }
      gemm<P>(Part::lower_k, m, dv, m, Pm, ldp, w.v.data(), dv, O, dv, s_zero ? 0.0f : 1.0f);
      for (int64_t i = 0; i < m; ++i) {
        T* orow = a.o.row(b, h, t0 + i);
        for (int64_t c = 0; c < dv; ++c) orow[c] = from_float<T>(O[i * dv + c]);
      }
    }
    gemm<P>(Part::full, dk, dv, m, w.kdt.data(), ldp, w.v.data(), dv, S, dv, s_zero ? 0.0f : pw[m]);
    s_zero = false;
  }
  if (!a.state_out.absent())
    for (int64_t i = 0; i < dk; ++i) {
      float* out = a.state_out.row(b, g, i);
      if (s_zero)
        std::fill_n(out, dv, 0.0f);
      else
        std::copy_n(S + i * dv, dv, out);
    }
}

template <Path P, class T>
void forward_all(const ForwardArgs<T>& a, int threads) {
  const int64_t items = a.q.batch * a.k.heads;
  const int workers = worker_count(threads, items);
  std::vector<Workspace> ws(static_cast<size_t>(workers), Workspace(a.block, a.q.dim, a.v.dim));
  parallel_for(workers, items, [&](int worker, int64_t item) {
    forward_group<P>(a, item / a.k.heads, item % a.k.heads, ws[static_cast<size_t>(worker)]);
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

/** One token for batch b, k/v head g: each state row is read, updated and read out once. */
template <Path P, class T>
void decode_group(const DecodeArgs<T>& a, int64_t b, int64_t g, std::vector<float>& acc) {
  using Ker = kernels::Kernels<P>;
  const int64_t slot = a.slots ? a.slots[b] : b;
  if (slot < 0) return;
  const int64_t dk = a.q.dim, dv = a.v.dim, group = a.q.heads / a.k.heads;
  const double lambda_d = std::exp(-(a.slopes ? static_cast<double>(a.slopes[g]) : 0.0));
  const float lambda = lambda_d < FLT_MIN ? 0.0f : static_cast<float>(lambda_d);
  const T* kr = a.k.row(b, g, 0);
  const T* vr = a.v.row(b, g, 0);
  acc.assign(static_cast<size_t>((group + 1) * dv), 0.0f);
  float* vf = acc.data() + group * dv;
  for (int64_t c = 0; c < dv; ++c) vf[c] = to_float(vr[c]);
  for (int64_t r = 0; r < dk; ++r) {
    float* srow = a.states.row(slot, g, r);
    Ker::axpby(dv, to_float(kr[r]), vf, lambda, srow);
    for (int64_t h = 0; h < group; ++h)
      Ker::axpy(dv, a.scale * to_float(a.q.row(b, g * group + h, 0)[r]), srow, acc.data() + h * dv);
  }
  for (int64_t h = 0; h < group; ++h) {
    T* orow = a.o.row(b, g * group + h, 0);
    for (int64_t c = 0; c < dv; ++c) orow[c] = from_float<T>(acc[static_cast<size_t>(h * dv + c)]);
  }
}

template <Path P, class T>
void decode_all(const DecodeArgs<T>& a, int threads) {
  const int64_t items = a.q.batch * a.k.heads;
  const int workers = worker_count(threads, items);
  std::vector<std::vector<float>> acc(static_cast<size_t>(workers));
  parallel_for(workers, items, [&](int worker, int64_t item) {
    decode_group<P>(a, item / a.k.heads, item % a.k.heads, acc[static_cast<size_t>(worker)]);
  });
}

}  // namespace lightning::detail
