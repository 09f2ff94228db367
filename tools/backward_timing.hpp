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

/** The median of x, the upper one of the two middle values for an even count. */
inline double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

/**
 * The timed calls on random [batch, heads, n, d] inputs with MiniMax-like slopes (TimingInputs):
 * forward (with state_out) and backward (`which` gradients from dS_out, d_slopes too when
 * `slope_gradient`, with all of them), each writing its outputs here. The tensors start 64-byte
 * lines (bench/methods.hpp says why). block_size is Options::block_size for both (0: the library's
 * choice).
 */
class TimingCalls {
 public:
  TimingCalls(int64_t batch, int64_t heads, int64_t n, int64_t d_k, int64_t d_v, Path path, int threads = 1,
              bool slope_gradient = false, int64_t block_size = 0, Gradients which = Gradients::all)
      : batch_(batch), heads_(heads), n_(n), d_k_(d_k), d_v_(d_v), in_(batch, heads, n, d_k, d_v),
        o_(in_.v.size()), s_out_(in_.ds_out.size()), dq_(in_.q.size()), dk_(in_.k.size()), dv_(in_.v.size()),
        ds_in_(in_.ds_out.size()), d_slopes_(static_cast<size_t>(heads)),
        pass1_(which != Gradients::dk_dv), pass2_(which != Gradients::dq),
        slopes_out_(slope_gradient && which == Gradients::all) {
    opt_.slopes = in_.slopes.data();
    opt_.path = path;
    opt_.threads = threads;
    opt_.block_size = block_size;
  }
  void run_forward() {
    forward(in(in_.q, d_k_), in(in_.k, d_k_), in(in_.v, d_v_), out(o_, d_v_), opt_, {},
            state_view(s_out_.data(), batch_, heads_, d_k_, d_v_));
  }
  void run_backward() {
    backward(in(in_.q, d_k_), in(in_.k, d_k_), in(in_.v, d_v_), in(in_.d_o, d_v_),
             pass1_ ? out(dq_, d_k_) : View<float>{}, pass2_ ? out(dk_, d_k_) : View<float>{},
             pass2_ ? out(dv_, d_v_) : View<float>{}, opt_, {},
             state_view(static_cast<const float*>(in_.ds_out.data()), batch_, heads_, d_k_, d_v_),
             pass2_ ? state_view(ds_in_.data(), batch_, heads_, d_k_, d_v_) : View<float>{},
             slopes_out_ ? d_slopes_.data() : nullptr);
  }

 private:
  View<const float> in(const detail::Floats& x, int64_t d) const {
    return bhnd<const float>(x.data(), batch_, heads_, n_, d);
  }
  View<float> out(detail::Floats& x, int64_t d) const { return bhnd(x.data(), batch_, heads_, n_, d); }

  int64_t batch_, heads_, n_, d_k_, d_v_;
  TimingInputs in_;
  detail::Floats o_, s_out_, dq_, dk_, dv_, ds_in_, d_slopes_;
  bool pass1_, pass2_, slopes_out_;
  Options opt_;
};

/**
 * Runs TimingCalls' forward and backward alternately `reps` times after one warm-up call of each,
 * and returns the medians.
 */
inline BackwardTiming time_backward(int64_t batch, int64_t heads, int64_t n, int64_t d_k, int64_t d_v, Path path,
                                    int reps, int threads = 1, bool slope_gradient = false,
                                    int64_t block_size = 0, Gradients which = Gradients::all) {
  TimingCalls calls(batch, heads, n, d_k, d_v, path, threads, slope_gradient, block_size, which);
  const auto run_forward = [&] { calls.run_forward(); };
  const auto run_backward = [&] { calls.run_backward(); };
  run_forward();
  run_backward();
  std::vector<double> fw, bw, ratio;
  for (int r = 0; r < reps; ++r) {
    fw.push_back(cpu_seconds(run_forward));
    bw.push_back(cpu_seconds(run_backward));
    ratio.push_back(bw.back() / fw.back());
  }
  return {median(fw), median(bw), median(ratio)};
}

}  // namespace lightning::tools
