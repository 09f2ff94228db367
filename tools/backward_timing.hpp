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
 * Runs forward (with state_out) and backward (dq, dk, dv and dS_in, from dS_out; d_slopes when
 * `slope_gradient`) alternately `reps` times on random [batch, heads, n, d] inputs with MiniMax-like
 * slopes, after one warm-up call of each, and returns the medians. The tensors start 64-byte lines
 * (bench/methods.hpp says why). block_size is Options::block_size
 * for both (0: the library's choice).
 */
inline BackwardTiming time_backward(int64_t batch, int64_t heads, int64_t n, int64_t d_k, int64_t d_v, Path path,
                                    int reps, int threads = 1, bool slope_gradient = false,
                                    int64_t block_size = 0) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  const auto buffer = [&](int64_t count) {
    detail::Floats x(static_cast<size_t>(count));
    for (auto& e : x) e = dist(rng);
    return x;
  };
  const int64_t tk = batch * heads * n * d_k, tv = batch * heads * n * d_v, ts = batch * heads * d_k * d_v;
  auto q = buffer(tk), k = buffer(tk), v = buffer(tv), d_o = buffer(tv), ds_out = buffer(ts);
  detail::Floats o(static_cast<size_t>(tv)), s_out(static_cast<size_t>(ts)), dq(q.size()), dk(k.size()),
      dv(v.size()), ds_in(static_cast<size_t>(ts)), d_slopes(static_cast<size_t>(heads));
  std::vector<float> slopes(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) slopes[static_cast<size_t>(h)] = 0.5f / static_cast<float>(h + 1);
  Options opt;
  opt.slopes = slopes.data();
  opt.path = path;
  opt.threads = threads;
  opt.block_size = block_size;
  const auto in = [&](const detail::Floats& x, int64_t d) { return bhnd<const float>(x.data(), batch, heads, n, d); };
  const auto out = [&](detail::Floats& x, int64_t d) { return bhnd(x.data(), batch, heads, n, d); };
  const auto run_forward = [&] {
    forward(in(q, d_k), in(k, d_k), in(v, d_v), out(o, d_v), opt, {}, state_view(s_out.data(), batch, heads, d_k, d_v));
  };
  const auto run_backward = [&] {
    backward(in(q, d_k), in(k, d_k), in(v, d_v), in(d_o, d_v), out(dq, d_k), out(dk, d_k), out(dv, d_v), opt, {},
             state_view(static_cast<const float*>(ds_out.data()), batch, heads, d_k, d_v),
             state_view(ds_in.data(), batch, heads, d_k, d_v), slope_gradient ? d_slopes.data() : nullptr);
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
