// Compares two source trees' forward and backward in one process, their calls alternated pair by
// pair (which runs first alternating too), so that the machine's drift hits both alike:
//   ab avx2|avx512 [pairs] [n] [heads] [d]
// Prints whether the two backwards give the same gradients, then the medians (and quartiles) over
// the pairs of new/old CPU seconds per call and of each tree's backward/forward ratio.
// Built by tools/ab/ab.sh.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ab_side.hpp"
#include "backward_timing.hpp"
#include "cpu_seconds.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s avx2|avx512 [pairs] [n] [heads] [d]\n", argv[0]);
    return 2;
  }
  const bool avx512 = std::strcmp(argv[1], "avx512") == 0;
  const int pairs = argc > 2 ? std::atoi(argv[2]) : 30;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 16384, heads = argc > 4 ? std::atoll(argv[4]) : 8,
                d = argc > 5 ? std::atoll(argv[5]) : 128;
  const int64_t size = heads * n * d, states = heads * d * d;
  const lightning::tools::TimingInputs in(1, heads, n, d, d);  // the inputs of tools/time_backward
  lightning::detail::Floats o(size), s_out(states), ds_in(states), grads[2][3];
  for (auto& side : grads)
    for (auto& g : side) g.resize(static_cast<size_t>(size));
  const auto run = [&](bool new_side, bool backward) {
    auto& g = grads[new_side];
    const AbCall c{backward, avx512, heads, n, d, in.q.data(), in.k.data(), in.v.data(), in.d_o.data(),
                   in.ds_out.data(), in.slopes.data(), o.data(), s_out.data(), g[0].data(), g[1].data(), g[2].data(),
                   ds_in.data()};
    return lightning::tools::cpu_seconds([&] { (new_side ? ab_run_lightning_new : ab_run_lightning_old)(c); });
  };
  run(false, true);
  run(true, true);
  double diff = 0;
  for (int i = 0; i < 3; ++i)
    for (int64_t e = 0; e < size; ++e)
      diff = std::max(diff, static_cast<double>(std::fabs(grads[0][i][static_cast<size_t>(e)] - grads[1][i][static_cast<size_t>(e)])));
  std::printf("largest |new - old| over dq, dk, dv: %g\n", diff);
  std::vector<double> backward, forward, ratio_old, ratio_new, times[2][2];
  for (int p = 0; p < pairs; ++p) {
    double t[2][2];
    for (int s = 0; s < 2; ++s) {
      const bool side = (s == 0) == (p % 2 == 1);
      t[side][0] = run(side, false);
      t[side][1] = run(side, true);
    }
    for (int side = 0; side < 2; ++side)
      for (int b = 0; b < 2; ++b) times[side][b].push_back(t[side][b]);
    backward.push_back(t[1][1] / t[0][1]);
    forward.push_back(t[1][0] / t[0][0]);
    ratio_old.push_back(t[0][1] / t[0][0]);
    ratio_new.push_back(t[1][1] / t[1][0]);
  }
  const auto at = [](std::vector<double> x, double f) {
    std::sort(x.begin(), x.end());
    return x[static_cast<size_t>(f * static_cast<double>(x.size() - 1) + 0.5)];
  };
  const auto line = [&](const char* what, const std::vector<double>& x) {
    std::printf("%s: median %.4f (quartiles %.4f-%.4f)\n", what, at(x, 0.5), at(x, 0.25), at(x, 0.75));
  };
  std::printf("%s, n %lld, heads %lld, d %lld, %d pairs\n", avx512 ? "avx512" : "avx2", static_cast<long long>(n),
              static_cast<long long>(heads), static_cast<long long>(d), pairs);
  line("backward new/old", backward);
  line("forward new/old", forward);
  line("old backward/forward", ratio_old);
  line("new backward/forward", ratio_new);
  // Interference only adds time: the fastest tenth of each side's calls, compared, resolves less
  // noisy hosts' differences that the medians of per-pair ratios leave within their quartiles.
  const auto fast = [&](int side, int b) { return at(times[side][b], 0.1); };
  std::printf("fastest tenth: backward new/old %.4f, forward new/old %.4f, backward/forward old %.4f new %.4f\n",
              fast(1, 1) / fast(0, 1), fast(1, 0) / fast(0, 0), fast(0, 1) / fast(0, 0), fast(1, 1) / fast(1, 0));
}
