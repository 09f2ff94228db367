// A multi-head forward with MiniMax-style decay over a prompt, then a few decode steps.
#include <lightning/lightning.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const int64_t batch = 1, heads = 4, n = 1000, d = 64, steps = 3;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.35f);
  auto random = [&](int64_t count) {
    std::vector<float> x(static_cast<size_t>(count));
    for (auto& e : x) e = normal(rng);
    return x;
  };
  // [batch, heads, n, d] tensors; bnhd() would view [batch, n, heads, d] memory instead.
  std::vector<float> q = random(batch * heads * n * d), k = random(batch * heads * n * d),
                     v = random(batch * heads * n * d), o(static_cast<size_t>(batch * heads * n * d));
  std::vector<float> state(static_cast<size_t>(batch * heads * d * d));  // [batch, heads, d_k, d_v]
  // ALiBi-style slopes 2^(-8(h+1)/H): lambda_h = exp(-slope_h).
  std::vector<float> slopes(heads);
  for (int64_t h = 0; h < heads; ++h) slopes[h] = std::exp2(-8.0f * (h + 1) / heads);

  lightning::Options options;
  options.slopes = slopes.data();
  lightning::forward(lightning::bhnd(q.data(), batch, heads, n, d), lightning::bhnd(k.data(), batch, heads, n, d),
                     lightning::bhnd(v.data(), batch, heads, n, d), lightning::bhnd(o.data(), batch, heads, n, d),
                     options, {}, lightning::state_view(state.data(), batch, heads, d, d));
  std::printf("path %s: prefill of %lld tokens, o[0][0][n-1][0] = %+.5f\n", lightning::path_name(lightning::best_path),
              static_cast<long long>(n), o[static_cast<size_t>((n - 1) * d)]);

  // Decode: one token per step, the state updated in place.
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<float> qt = random(batch * heads * d), kt = random(batch * heads * d), vt = random(batch * heads * d),
                       ot(static_cast<size_t>(batch * heads * d));
    lightning::decode(lightning::bhnd(qt.data(), batch, heads, 1, d), lightning::bhnd(kt.data(), batch, heads, 1, d),
                      lightning::bhnd(vt.data(), batch, heads, 1, d), lightning::bhnd(ot.data(), batch, heads, 1, d),
                      lightning::state_view(state.data(), batch, heads, d, d), options);
    std::printf("decode step %lld: o[0][0][0][0] = %+.5f\n", static_cast<long long>(t), ot[0]);
  }
  return 0;
}
