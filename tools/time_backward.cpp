// Prints the backward/forward time ratio per compiled path:
//   time_backward [n] [heads] [d] [reps] [slope_gradient] [path] [passes]
// path: scalar, avx2, avx512 or all (the default). passes 1: also each pass alone against the forward, a
// backward asking for dq alone (pass 1) and one asking for dk, dv and dS_in alone (pass 2, which then
// computes what pass 1 would have left it), each alternated with the forward as the whole is.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backward_timing.hpp"

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 16384;
  const int64_t heads = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t d = argc > 3 ? std::atoll(argv[3]) : 128;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 7;
  const bool slope_gradient = argc > 5 && std::atoi(argv[5]) != 0;
  const char* only = argc > 6 && std::strcmp(argv[6], "all") != 0 ? argv[6] : nullptr;
  const bool passes = argc > 7 && std::atoi(argv[7]) != 0;
  for (lightning::Path path : lightning::compiled_paths) {
    if (only && std::strcmp(only, lightning::path_name(path)) != 0) continue;
    const auto t = lightning::tools::time_backward(1, heads, n, d, d, path, reps, 1, slope_gradient);
    std::printf("path %-7s n %lld heads %lld d %lld%s: forward %.4f s, backward %.4f s, median ratio %.2f (%d reps)\n",
                lightning::path_name(path), static_cast<long long>(n), static_cast<long long>(heads),
                static_cast<long long>(d), slope_gradient ? " +d_slopes" : "", t.forward_seconds, t.backward_seconds,
                t.ratio, reps);
    if (!passes) continue;
    using lightning::tools::Gradients;
    const auto alone = [&](Gradients which) {
      return lightning::tools::time_backward(1, heads, n, d, d, path, reps, 1, false, 0, which).ratio;
    };
    const double p1 = alone(Gradients::dq), p2 = alone(Gradients::dk_dv);
    std::printf("  alone: dq (pass 1) %.3f, dk dv dS_in (pass 2) %.3f, their sum %.3f (median ratios)\n", p1, p2,
                p1 + p2);
  }
}
