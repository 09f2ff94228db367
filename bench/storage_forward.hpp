// The forward with bf16 (or fp16, or fp32) storage as a Google Benchmark function, for the bf16 rows.
//
// Register it next to the fp32 rows, e.g.
//   BENCHMARK(lightning::bench::forward_storage<lightning::bf16>)->Args({batch, heads, n, d})->UseRealTime();
//   BENCHMARK(lightning::bench::forward_storage<lightning::bf16, lightning::Path::scalar>)->Args(...);
// Arguments: batch, heads, n, d (d_k = d_v = d); the path is the template's second argument.
// Counters: tokens/s (batch * heads * n per second, SPEC.md) and FLOPS of the tiled form.
#pragma once

#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "lightning/lightning.hpp"

namespace lightning::bench {

template <class T, Path P = Path::automatic>
void forward_storage(benchmark::State& state) {
  const int64_t B = state.range(0), H = state.range(1), n = state.range(2), d = state.range(3);
  Options options;
  options.path = P;
  if (!path_compiled(P)) {
    state.SkipWithError("path not compiled in");
    return;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<T> q(static_cast<size_t>(B * H * n * d)), k(q.size()), v(q.size()), o(q.size());
  for (auto* x : {&q, &k, &v})
    for (auto& e : *x) e = detail::from_float<T>(normal(rng));
  const std::vector<float> slopes = minimax_slopes(H, 0, 2);
  options.slopes = slopes.data();
  std::vector<float> s(static_cast<size_t>(B * H * d * d));
  for (auto _ : state) {
    forward(bhnd(q.data(), B, H, n, d), bhnd(k.data(), B, H, n, d), bhnd(v.data(), B, H, n, d),
            bhnd(o.data(), B, H, n, d), options, {}, state_view(s.data(), B, H, d, d));
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  // SPEC.md: per head and block of m rows, 2 (m(m+1)/2 (d_k + d_v) + 2 m d_k d_v) FLOPs.
  const int64_t block = detail::block_for(options, d, d);
  double flops = 0;
  for (int64_t t0 = 0; t0 < n; t0 += block) {
    const double m = static_cast<double>(std::min(block, n - t0));
    flops += 2 * (m * (m + 1) / 2 * 2 * d + 2 * m * d * d);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * H * n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOPS"] = benchmark::Counter(flops * B * H, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace lightning::bench
