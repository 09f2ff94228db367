// Where the forward's and the backward's block loops spend their time, call site by call site
// (detail/site_times.hpp), as shares of the forward's time per block:
//   site_times_avx2 [n] [heads] [d] [reps] [path]
// path: avx2 or avx512 (one the binary was built for). After a warm-up call of each, reps rounds of
// one forward and one backward call (time_backward's, tools::TimingCalls), one thread; each site's
// time-stamp counter ticks (wall time) over the forward's block loop's in the same round, the median
// over the rounds. The timers cost a little, and the pass 1 + pass 2 line reads a little above
// time_backward's ratio.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backward_timing.hpp"
#include "path_arg.hpp"
#include "lightning/detail/site_times.hpp"

int main(int argc, char** argv) {
  using namespace lightning;
  namespace sites = detail::sites;
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 16384;
  const int64_t heads = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t d = argc > 3 ? std::atoll(argv[3]) : 128;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 5;
  const char* name = argc > 5 ? argv[5] : path_name(compiled_paths.back());
  const Path path = tools::compiled_path_named(name);
  if (path == Path::automatic || n <= 0 || heads <= 0 || d <= 0 || reps <= 0) {
    std::fprintf(stderr, "usage: %s [n > 0] [heads > 0] [d > 0] [reps > 0] [compiled path]\n", argv[0]);
    return 2;
  }
  tools::TimingCalls calls(1, heads, n, d, d, path);
  const auto run = [&] {
    calls.run_forward();
    calls.run_backward();
  };
  run();
  // Per round, each site's ticks over the forward's block ticks of that round; the medians over rounds.
  std::vector<std::vector<double>> shares(sites::count);
  std::vector<double> totals, block_ticks;
  int64_t blocks = 0;
  for (int r = 0; r < reps; ++r) {
    sites::reset();
    run();
    blocks = static_cast<int64_t>(sites::calls[sites::forward_block]);
    const double forward = static_cast<double>(sites::ticks[sites::forward_block]);
    for (int s = 0; s < sites::count; ++s) shares[s].push_back(static_cast<double>(sites::ticks[s]) / forward);
    totals.push_back(shares[sites::pass1_block].back() + shares[sites::pass2_block].back());
    block_ticks.push_back(forward / static_cast<double>(blocks));
  }
  std::printf("path %s, n %lld, heads %lld, d %lld: medians over %d rounds of each site's ticks over the\n"
              "forward block loop's (%.1f k ticks per forward block)\n\n",
              path_name(path), static_cast<long long>(n), static_cast<long long>(heads), static_cast<long long>(d),
              reps, tools::median(block_ticks) / 1e3);
  std::printf("| site | calls per forward block | share |\n|---|---:|---:|\n");
  for (int s = 0; s < sites::count; ++s)
    if (sites::calls[s] > 0)
      std::printf("| %s | %.2f | %.4f |\n", sites::kNames[s],
                  static_cast<double>(sites::calls[s]) / static_cast<double>(blocks), tools::median(shares[s]));
  std::printf("\npass 1 + pass 2: %.4f of the forward (median over the rounds)\n", tools::median(totals));
}
