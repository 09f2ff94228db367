// Times the forward at 1 and N threads, alternating, and prints the median speed-up per shape.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "lightning/lightning.hpp"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2, reps = argc > 2 ? std::atoi(argv[2]) : 5;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 262144;
  struct Shape { int64_t heads, d; };
  for (const Shape s : {Shape{1, 128}, Shape{8, 128}, Shape{1, 64}, Shape{8, 64}}) {
    const size_t size = static_cast<size_t>(s.heads * n * s.d);
    std::vector<float> q(size), k(size), v(size), o(size);
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    for (auto* x : {&q, &k, &v})
      for (auto& e : *x) e = dist(rng);
    std::vector<float> slopes(static_cast<size_t>(s.heads), 0.01f);
    auto time = [&](int t) {
      lightning::Options opt;
      opt.slopes = slopes.data();
      opt.threads = t;
      const auto t0 = std::chrono::steady_clock::now();
      lightning::forward(lightning::bhnd(q.data(), 1, s.heads, n, s.d), lightning::bhnd(k.data(), 1, s.heads, n, s.d),
                         lightning::bhnd(v.data(), 1, s.heads, n, s.d), lightning::bhnd(o.data(), 1, s.heads, n, s.d),
                         opt);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<double> one, many, ratio;
    for (int r = 0; r < reps; ++r) {
      one.push_back(time(1));
      many.push_back(time(threads));
      ratio.push_back(one.back() / many.back());
    }
    auto median = [](std::vector<double> x) {
      std::sort(x.begin(), x.end());
      return x[x.size() / 2];
    };
    std::printf("heads %lld d %lld n %lld: 1 thread %.3f s, %d threads %.3f s, speed-up (median of %d ratios) %.2fx\n",
                static_cast<long long>(s.heads), static_cast<long long>(s.d), static_cast<long long>(n), median(one),
                threads, median(many), reps, median(ratio));
  }
}
