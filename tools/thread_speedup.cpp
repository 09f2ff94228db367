// Times the forward (or, with the argument `backward`, the backward: dq, dk and dv, no states, no slope
// gradient; `backward_slopes` also d_slopes) at 1 and N threads, alternating, and prints the median
// speed-up per shape beside what the machine itself gave N threads at once in the same repetitions:
// an FMA loop and a read+write pass, each run on 1 thread and on N threads together, as the ratio of
// throughputs. Every head's slope is `slope` (0: no decay).
// Usage: thread_speedup [threads=2] [reps=5] [n=262144] [forward|backward|backward_slopes] [slope=0.01]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fma_chains.hpp"
#include "lightning/detail/buffer.hpp"
#include "lightning/lightning.hpp"

namespace {

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

/** Wall seconds of body(t) run on `threads` std::threads at once, t = 0 .. threads - 1. */
template <class Body>
double wall_seconds(int threads, Body body) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/** The FMA loop on 8-lane vectors where AVX2 is compiled in (floats otherwise). */
float fma_loop(int64_t iters) {
#if LIGHTNING_HAVE_AVX2
  return lightning::tools::fma_chains<lightning::Path::avx2>(iters);
#else
  return lightning::tools::fma_chains<lightning::Path::scalar>(iters);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2, reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 262144;
  const std::string mode = argc > 4 ? argv[4] : "forward";
  const bool backward = mode == "backward" || mode == "backward_slopes", slope_gradient = mode == "backward_slopes";
  const float slope = argc > 5 ? static_cast<float>(std::atof(argv[5])) : 0.01f;

  // What the machine gives `threads` threads at once, measured in the same repetitions as each shape
  // (a shared machine's share moves from minute to minute): an FMA loop, and a read+write pass over
  // 64 MiB per thread, beyond the last-level cache.
  std::vector<float> sinks(static_cast<size_t>(threads));  // one per thread, read at the end
  const auto fma = [&](int t) { sinks[static_cast<size_t>(t)] += fma_loop(20'000'000); };
  const size_t floats = size_t{16} << 20;
  std::vector<std::vector<float>> buffers(static_cast<size_t>(threads), std::vector<float>(floats, 1.0f));
  const auto pass = [&](int t) {
    float* x = buffers[static_cast<size_t>(t)].data();
    for (int round = 0; round < 2; ++round)
      for (size_t i = 0; i < floats; ++i) x[i] = x[i] * 0.5f + 0.25f;
  };
  struct Shape { int64_t heads, d; };
  for (const Shape s : {Shape{1, 128}, Shape{8, 128}, Shape{1, 64}, Shape{8, 64}}) {
    const size_t size = static_cast<size_t>(s.heads * n * s.d);
    lightning::detail::Floats q(size), k(size), v(size), o(size);  // 64-byte lines, as in the benchmark
    lightning::detail::Floats dq(backward ? size : 0), dk(dq.size()), dv(dq.size());  // o is d_o there
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    for (auto* x : {&q, &k, &v, &o})
      for (auto& e : *x) e = dist(rng);
    std::vector<float> slopes(static_cast<size_t>(s.heads), slope), d_slopes(slopes.size());
    auto time = [&](int t) {
      lightning::Options opt;
      opt.slopes = slopes.data();
      opt.threads = t;
      const auto x = [&](lightning::detail::Floats& t) { return lightning::bhnd(t.data(), 1, s.heads, n, s.d); };
      const auto t0 = std::chrono::steady_clock::now();
      if (backward)
        lightning::backward(x(q), x(k), x(v), x(o), x(dq), x(dk), x(dv), opt, {}, {}, {},
                            slope_gradient ? d_slopes.data() : nullptr);
      else
        lightning::forward(x(q), x(k), x(v), x(o), opt);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<double> one, many, ratio, fma_ratio, pass_ratio;
    for (int r = 0; r < reps; ++r) {
      fma_ratio.push_back(threads * wall_seconds(1, fma) / wall_seconds(threads, fma));
      one.push_back(time(1));
      many.push_back(time(threads));
      ratio.push_back(one.back() / many.back());
      pass_ratio.push_back(threads * wall_seconds(1, pass) / wall_seconds(threads, pass));
    }
    std::printf("%s heads %lld d %lld n %lld slope %g: 1 thread %.3f s, %d threads %.3f s, speed-up (median of %d ratios) %.2fx;"
                " the machine, %d threads against 1: FMA loop %.2fx, read+write pass %.2fx\n",
                mode.c_str(), static_cast<long long>(s.heads), static_cast<long long>(s.d),
                static_cast<long long>(n), slope, median(one),
                threads, median(many), reps, median(ratio), threads, median(fma_ratio), median(pass_ratio));
  }
  if (sinks[0] == 1.0f) std::printf(" ");  // keeps the FMA loops' results alive
}
