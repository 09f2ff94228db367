// Times the forward per compiled path and block size against a same-ISA FMA peak measured in this process.
//
// Usage: lightning_tune [n] [heads] [reps]; prints one line per (path, d, block) with tokens/s and the
// fraction of the roofline peak / (4 d_k d_v) (SPEC.md), the best of `reps` runs (the peak is the
// best of three, measured again before each d).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "lightning/lightning.hpp"

using namespace lightning;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// FLOP/s of a loop of independent FMAs (enough chains to cover latency x ports) of one vector width:
// the bench's loop (bench/bench.cpp), 16 chains with the accumulator as the addend, so that both tools
// measure the same peak.
template <class V, V (*fma)(V, V, V), V (*set1)(float)>
double fma_peak(int lanes) {
  constexpr int chains = 16;
  V acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = set1(static_cast<float>(c));
  volatile float vx = 0.9999f, vy = 1e-6f;  // not constants, so x * y is not folded away
  const V x = set1(vx), y = set1(vy);
  const long iters = 20'000'000;
  const auto t0 = Clock::now();
  for (long i = 0; i < iters; ++i)
    for (int c = 0; c < chains; ++c) acc[c] = fma(x, y, acc[c]);
  const double s = seconds_since(t0);
  float sink = 0;
  for (int c = 0; c < chains; ++c) {
    alignas(64) float tmp[16];
    std::copy_n(reinterpret_cast<const float*>(&acc[c]), 1, tmp);
    sink += tmp[0];
  }
  if (sink == 12345.0f) std::puts("");  // keeps the loop alive
  return 2.0 * lanes * chains * iters / s;
}

__m256 fma256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
__m256 set256(float x) { return _mm256_set1_ps(x); }
#if LIGHTNING_HAVE_AVX512
__m512 fma512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m512 set512(float x) { return _mm512_set1_ps(x); }
#endif

double peak_of(Path p) {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
#if LIGHTNING_HAVE_AVX512
    if (p == Path::avx512) best = std::max(best, fma_peak<__m512, fma512, set512>(16));
#endif
    if (p == Path::avx2) best = std::max(best, fma_peak<__m256, fma256, set256>(8));
  }
  return best;
}

// The fastest run: on a machine shared with other jobs, other load only ever slows a run down.
double fastest(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 16384;
  const int64_t heads = argc > 2 ? std::atoll(argv[2]) : 8;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::printf("n = %lld, heads = %lld, batch 1, fp32, decay on, 1 thread, best of %d\n", (long long)n,
              (long long)heads, reps);
  std::printf("%-7s %4s %6s %12s %9s\n", "path", "d", "block", "tokens/s", "roofline");
  for (Path p : compiled_paths) {
    if (p == Path::scalar) continue;
    for (int64_t d : {64, 128}) {
      const double peak = peak_of(p);
      std::printf("# %s FMA peak %.1f GFLOP/s\n", path_name(p), peak * 1e-9);
      std::vector<float> q(heads * n * d), k(q.size()), v(q.size()), o(q.size()), slopes(heads);
      for (auto* x : {&q, &k, &v})
        for (float& e : *x) e = nd(rng) * 0.1f;
      for (int64_t h = 0; h < heads; ++h) slopes[h] = std::ldexp(1.0f, -static_cast<int>(h + 1));  // MiniMax's, as the bench
      for (int64_t block : {16, 24, 32, 48, 64, 96, 128}) {
        Options opt;
        opt.slopes = slopes.data();
        opt.block_size = block;
        opt.path = p;
        std::vector<double> rates;
        for (int r = 0; r < reps; ++r) {
          const auto t0 = Clock::now();
          forward(bhnd<const float>(q.data(), 1, heads, n, d), bhnd<const float>(k.data(), 1, heads, n, d),
                  bhnd<const float>(v.data(), 1, heads, n, d), bhnd(o.data(), 1, heads, n, d), opt);
          rates.push_back(static_cast<double>(heads * n) / seconds_since(t0));
        }
        const double rate = fastest(rates);
        std::printf("%-7s %4lld %6lld %12.0f %8.1f%%\n", path_name(p), (long long)d, (long long)block, rate,
                    100.0 * rate / (peak / (4.0 * d * d)));
        std::fflush(stdout);
      }
    }
  }
}
