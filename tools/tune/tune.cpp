// Times the forward and the backward per compiled path and block size against a same-ISA FMA peak
// measured in this process.
//
// Usage: lightning_tune [n] [heads] [reps]; prints one line per (path, d, block): the forward's
// tokens/s and fraction of the roofline peak / (4 d_k d_v) (SPEC.md), the backward's tokens/s (dq, dk
// and dv), and three ratios of times taken in the same repetition: the forward at this block over
// the forward at its default block, the backward likewise, and the backward at this block over the
// forward at its default block (issue 5's ratio). Each figure is the median of `reps` repetitions
// (the peak is the best of three, measured again before each d). On a shared machine the paired
// ratios are what to compare: the load changes between blocks, not within a repetition.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "../fma_chains.hpp"
#include "lightning/lightning.hpp"

using namespace lightning;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/** FLOP/s of tools/fma_chains.hpp's loop (the bench's peak), best of three runs. */
template <Path P>
double fma_peak() {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const int64_t iters = 20'000'000;
    const auto t0 = Clock::now();
    const float sink = tools::fma_chains<P>(iters);
    const double s = seconds_since(t0);
    if (sink == 12345.0f) std::puts("");  // keeps the loop alive
    best = std::max(best, tools::fma_chain_flops<P>(iters) / s);
  }
  return best;
}

double peak_of(Path p) {
#if LIGHTNING_HAVE_AVX512
  if (p == Path::avx512) return fma_peak<Path::avx512>();
#endif
  return fma_peak<Path::avx2>();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 16384;
  const int64_t heads = argc > 2 ? std::atoll(argv[2]) : 8;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::printf("n = %lld, heads = %lld, batch 1, fp32, decay on, 1 thread, median of %d\n", (long long)n,
              (long long)heads, reps);
  std::printf("%-7s %4s %6s %12s %9s %8s %12s %8s %8s\n", "path", "d", "block", "fwd tok/s", "roofline", "/default",
              "bwd tok/s", "/default", "bwd/fwd");
  for (Path p : compiled_paths) {
    if (p == Path::scalar) continue;
    for (int64_t d : {64, 128}) {
      const double peak = peak_of(p);
      std::vector<float> q(heads * n * d), k(q.size()), v(q.size()), o(q.size()), dq(q.size()), dk(q.size()),
          dv(q.size()), slopes(heads);
      for (auto* x : {&q, &k, &v, &o})
        for (float& e : *x) e = nd(rng) * 0.1f;
      for (int64_t h = 0; h < heads; ++h) slopes[h] = std::ldexp(1.0f, -static_cast<int>(h + 1));  // MiniMax's, as the bench
      const auto view = [&](std::vector<float>& x) { return bhnd(x.data(), 1, heads, n, d); };
      const auto time = [&](bool backward_pass, int64_t block) {
        Options opt;
        opt.slopes = slopes.data();
        opt.block_size = block;
        opt.path = p;
        const auto t0 = Clock::now();
        if (backward_pass)
          backward<float>(view(q), view(k), view(v), view(o), view(dq), view(dk), view(dv), opt);
        else  // into dq, which the backward overwrites; its d_o (o) stays as drawn
          forward<float>(view(q), view(k), view(v), view(dq), opt);
        return seconds_since(t0);
      };
      const int64_t fwd_default = detail::default_block_size(d, d, p);
      const int64_t bwd_default = detail::default_backward_block_size(d, d, p);
      std::printf("# %s FMA peak %.1f GFLOP/s; default blocks: forward %lld, backward %lld\n", path_name(p), peak * 1e-9,
                  (long long)fwd_default, (long long)bwd_default);
      for (int64_t block : {16, 24, 32, 48, 64, 96, 128}) {
        std::vector<double> fwd, bwd, fwd_vs_default, bwd_vs_default, bwd_vs_fwd;
        for (int r = 0; r < reps; ++r) {
          // Alternately first, so that neither of a pair always runs on a warmer cache.
          const bool first = r % 2 == 0;
          double f0 = first ? time(false, fwd_default) : 0, f = time(false, block);
          if (!first) f0 = time(false, fwd_default);
          double b0 = first ? time(true, bwd_default) : 0, b = time(true, block);
          if (!first) b0 = time(true, bwd_default);
          fwd.push_back(f);
          bwd.push_back(b);
          fwd_vs_default.push_back(f / f0);
          bwd_vs_default.push_back(b / b0);
          bwd_vs_fwd.push_back(b / f0);
        }
        const double tokens = static_cast<double>(heads * n), rate = tokens / median(fwd);
        std::printf("%-7s %4lld %6lld %12.0f %8.1f%% %8.3f %12.0f %8.3f %8.2f\n", path_name(p), (long long)d,
                    (long long)block, rate, 100.0 * rate / (peak / (4.0 * d * d)), median(fwd_vs_default),
                    tokens / median(bwd), median(bwd_vs_default), median(bwd_vs_fwd));
        std::fflush(stdout);
      }
    }
  }
}
