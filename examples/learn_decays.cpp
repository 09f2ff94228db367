// Training with the backward: the per-head decay rates of a lightning-attention layer learned by
// gradient descent on a packed batch of sequences of different lengths.
//
//   example_learn_decays           prints the loss and the slopes at each step
//   example_learn_decays --check   exits 1 unless the slopes come within 1e-3 (relative) of the truth
//
// The data are o* = forward_varlen(q, k, v) with the true slopes; the model starts from wrong slopes
// s and minimises L = 1/2 sum (o - o*)^2 over every token of every sequence. backward_varlen takes
// dL/do = o - o* and returns dL/ds (d_slopes; dq, dk and dv are not asked for, so only the work the
// slope gradient needs is done). Each head's log-slope takes a sign-based step (Rprop): the step
// grows while the gradient keeps its sign and halves when it flips.
#include <lightning/lightning.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  const bool check = argc > 1 && std::strcmp(argv[1], "--check") == 0;
  const int64_t G = 3, H = 6, d_k = 32, d_v = 32;          // 2 q heads per k/v head
  const std::vector<int64_t> offsets = {0, 300, 317, 317, 1517, 1581};  // lengths 300, 17, 0, 1200, 64
  const int64_t num_seqs = static_cast<int64_t>(offsets.size()) - 1, N = offsets.back();
  const std::vector<float> truth = {0.5f, 0.05f, 0.005f};

  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto random = [&](int64_t count, float sd) {
    std::vector<float> x(static_cast<size_t>(count));
    for (float& e : x) e = sd * normal(rng);
    return x;
  };
  // Token-major [tokens, heads, d] memory, the layout of a fused projection: views of inputs and of outputs.
  const std::vector<float> q = random(N * H * d_k, 0.4f), k = random(N * G * d_k, 0.4f), v = random(N * G * d_v, 1.0f);
  const auto in = [&](const std::vector<float>& x, int64_t heads, int64_t d) {
    return lightning::bnhd(x.data(), 1, heads, N, d);
  };
  const auto out = [&](std::vector<float>& x, int64_t heads, int64_t d) { return lightning::bnhd(x.data(), 1, heads, N, d); };

  lightning::Options options;
  options.scale = 1.0f / std::sqrt(static_cast<float>(d_k));
  options.slopes = truth.data();
  std::vector<float> target(static_cast<size_t>(N * H * d_v)), o(target.size()), d_o(target.size());
  lightning::forward_varlen(in(q, H, d_k), in(k, G, d_k), in(v, G, d_v), out(target, H, d_v), offsets.data(), num_seqs,
                            options);

  std::vector<float> slopes = {0.1f, 0.1f, 0.1f}, grad(G), last(G, 0.0f), step(G, 0.5f);
  options.slopes = slopes.data();
  const lightning::View<float> none;  // dq, dk, dv: not asked for
  double loss = 0;
  for (int it = 0; it <= 60; ++it) {
    lightning::forward_varlen(in(q, H, d_k), in(k, G, d_k), in(v, G, d_v), out(o, H, d_v), offsets.data(), num_seqs,
                              options);
    loss = 0;
    for (size_t i = 0; i < o.size(); ++i) {
      d_o[i] = o[i] - target[i];
      loss += 0.5 * static_cast<double>(d_o[i]) * d_o[i];
    }
    lightning::backward_varlen(in(q, H, d_k), in(k, G, d_k), in(v, G, d_v), in(d_o, H, d_v), none, none, none,
                               offsets.data(), num_seqs, options, /*state_in=*/{}, /*d_state_out=*/{},
                               /*d_state_in=*/{}, grad.data());
    if (!check && (it % 5 == 0 || it == 60))
      std::printf("step %2d  loss %.3e  slopes %.6f %.6f %.6f\n", it, loss, slopes[0], slopes[1], slopes[2]);
    for (int64_t g = 0; g < G; ++g) {  // Rprop on log(slope): dL/dlog(s) = s dL/ds
      const float gl = slopes[g] * grad[g];
      if (gl * last[g] > 0) step[g] *= 1.2f;
      if (gl * last[g] < 0) step[g] *= 0.5f;
      last[g] = gl;
      if (gl != 0) slopes[g] *= std::exp(gl > 0 ? -step[g] : step[g]);
    }
  }
  double worst = 0;
  for (int64_t g = 0; g < G; ++g) worst = std::fmax(worst, std::fabs(slopes[g] / truth[g] - 1.0f));
  std::printf("learned slopes %.6f %.6f %.6f (true 0.5 0.05 0.005), worst relative error %.1e, loss %.2e\n",
              slopes[0], slopes[1], slopes[2], worst, loss);
  return check && !(worst < 1e-3) ? 1 : 0;
}
