// Times the backward against the forward on one shape, alternating the two so machine noise hits both.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <random>
#include <vector>

#include "cpu_seconds.hpp"
#include "lightning/detail/buffer.hpp"
#include "lightning/lightning.hpp"

namespace lightning::tools {

/** Medians over the repetitions: CPU seconds per forward and per backward call, and their per-pair ratio. */
struct BackwardTiming {
  double forward_seconds, backward_seconds, ratio;
};

/**
 * The timing tools' inputs, [batch, heads, n, d]: q, k, v, d_o and dS_out drawn in that order from
 * N(0, 0.3^2) (seed 1), and MiniMax-like slopes 0.5 / (h + 1).
 */
struct TimingInputs {
  detail::Floats q, k, v, d_o, ds_out;
  std::vector<float> slopes;
  TimingInputs(int64_t batch, int64_t heads, int64_t n, int64_t d_k, int64_t d_v) {
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    const auto draw = [&](detail::Floats& x, int64_t count) {
      x.resize(static_cast<size_t>(count));
      for (auto& e : x) e = dist(rng);
    };
    draw(q, batch * heads * n * d_k);
    draw(k, batch * heads * n * d_k);
    draw(v, batch * heads * n * d_v);
    draw(d_o, batch * heads * n * d_v);
    draw(ds_out, batch * heads * d_k * d_v);
    for (int64_t h = 0; h < heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
  }
};

/**
 * The gradients a timed backward asks for: all of them (dq, dk, dv and dS_in), or one pass's worth,
 * dq alone (pass 1 only) or dk, dv and dS_in (pass 2 only, which then computes P~ and V^T itself:
 * without dq no pass 1 leaves them in dK's and dV's rows).
 */
enum class Gradients { all, dq, dk_dv };

/**
 * Runs forward (with state_out) and backward (`which` gradients; d_slopes too when `slope_gradient`,
 * with all of them) alternately `reps` times on random [batch, heads, n, d] inputs with MiniMax-like
 * slopes, after one warm-up call of each, and returns the medians. The tensors start 64-byte lines
 * (bench/methods.hpp says why). block_size is Options::block_size
 * for both (0: the library's choice).
 */
inline BackwardTiming time_backward(int64_t batch, int64_t heads, int64_t n, int64_t d_k, int64_t d_v, Path path,
                                    int reps, int threads = 1, bool slope_gradient = false,
                                    int64_t block_size = 0, Gradients which = Gradients::all) {
  const TimingInputs inputs(batch, heads, n, d_k, d_v);
  const detail::Floats &q = inputs.q, &k = inputs.k, &v = inputs.v, &d_o = inputs.d_o, &ds_out = inputs.ds_out;
  detail::Floats o(v.size()), s_out(ds_out.size()), dq(q.size()), dk(k.size()), dv(v.size()), ds_in(ds_out.size()),
      d_slopes(static_cast<size_t>(heads));
  Options opt;
  opt.slopes = inputs.slopes.data();
  opt.path = path;
  opt.threads = threads;
  opt.block_size = block_size;
  const auto in = [&](const detail::Floats& x, int64_t d) { return bhnd<const float>(x.data(), batch, heads, n, d); };
  const auto out = [&](detail::Floats& x, int64_t d) { return bhnd(x.data(), batch, heads, n, d); };
  const auto run_forward = [&] {
    forward(in(q, d_k), in(k, d_k), in(v, d_v), out(o, d_v), opt, {}, state_view(s_out.data(), batch, heads, d_k, d_v));
  };
  const bool pass1 = which != Gradients::dk_dv, pass2 = which != Gradients::dq;
  const auto run_backward = [&] {
    backward(in(q, d_k), in(k, d_k), in(v, d_v), in(d_o, d_v), pass1 ? out(dq, d_k) : View<float>{},
             pass2 ? out(dk, d_k) : View<float>{}, pass2 ? out(dv, d_v) : View<float>{}, opt, {},
             state_view(static_cast<const float*>(ds_out.data()), batch, heads, d_k, d_v),
             pass2 ? state_view(ds_in.data(), batch, heads, d_k, d_v) : View<float>{},
             slope_gradient && which == Gradients::all ? d_slopes.data() : nullptr);
  };
  run_forward();
  run_backward();
  std::vector<double> fw, bw, ratio;
  for (int r = 0; r < reps; ++r) {
    fw.push_back(cpu_seconds(run_forward));
    bw.push_back(cpu_seconds(run_backward));
    ratio.push_back(bw.back() / fw.back());
  }
  const auto median = [](std::vector<double> x) {
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  return {median(fw), median(bw), median(ratio)};
}

}  // namespace lightning::tools
