// Concurrent use: many threads calling the library at once on different data, with and without the
// library's own threads, give the same bits as serial calls (also run under ThreadSanitizer in CI).
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "util.hpp"

namespace lightning::test {
namespace {

/** One caller's own problem: a forward over a prompt, then decode steps into a slot cache. */
struct Problem {
  int64_t B, H, G, n, dk, dv;
  std::vector<float> q, k, v, slopes;
  std::vector<int64_t> slots;

  Problem(int64_t b, int64_t h, int64_t g, int64_t n_, int64_t dk_, int64_t dv_, uint64_t seed)
      : B(b), H(h), G(g), n(n_), dk(dk_), dv(dv_), q(randn(B * H * n * dk, 0.5f, seed)),
        k(randn(B * G * n * dk, 0.5f, seed + 1)), v(randn(B * G * n * dv, 1, seed + 2)) {
    for (int64_t g2 = 0; g2 < G; ++g2) slopes.push_back(0.02f * static_cast<float>(g2 + 1));
    for (int64_t b2 = 0; b2 < B; ++b2) slots.push_back(b2 % 3 == 1 ? -1 : B - 1 - b2);  // some padding
  }

  /** Everything the calls write: the prompt's outputs and states, then decode outputs and the cache. */
  std::vector<float> run(Path path, int threads) const {
    Options opt;
    opt.slopes = slopes.data();
    opt.path = path;
    opt.threads = threads;
    opt.block_size = 32;
    std::vector<float> o(static_cast<size_t>(B * H * n * dv)), cache(static_cast<size_t>(B * G * dk * dv));
    forward(bhnd(q.data(), B, H, n, dk), bhnd(k.data(), B, G, n, dk), bhnd(v.data(), B, G, n, dv),
            bhnd(o.data(), B, H, n, dv), opt, {}, state_view(cache.data(), B, G, dk, dv));
    std::vector<float> out = o;
    std::vector<float> o1(static_cast<size_t>(B * H * dv));
    for (int64_t t = 0; t < 4; ++t) {  // decode the prompt's first tokens again as new ones
      decode(View<const float>(q.data() + t * dk, B, H, 1, dk, H * n * dk, n * dk, dk),
             View<const float>(k.data() + t * dk, B, G, 1, dk, G * n * dk, n * dk, dk),
             View<const float>(v.data() + t * dv, B, G, 1, dv, G * n * dv, n * dv, dv), bhnd(o1.data(), B, H, 1, dv),
             state_view(cache.data(), B, G, dk, dv), opt, slots.data());
      out.insert(out.end(), o1.begin(), o1.end());
    }
    out.insert(out.end(), cache.begin(), cache.end());
    return out;
  }
};

class Concurrent : public ::testing::TestWithParam<Path> {};

TEST_P(Concurrent, CallersGetTheSerialBits) {
  std::vector<Problem> problems;
  for (int i = 0; i < 6; ++i) problems.emplace_back(1 + i % 3, 4, i % 2 ? 2 : 4, 70 + 13 * i, 8 + i, 16 - i, 100 * i);
  // Every caller runs every problem (so callers share inputs, which are read-only) with its own
  // thread count, into its own outputs, and must get the bits of the same call made alone
  // (a split along the sequence makes the bits depend on the thread count, never on timing).
  const int callers = 4, library_threads[callers] = {1, 2, 0, 3};
  std::vector<std::vector<std::vector<float>>> serial(callers);
  for (int c = 0; c < callers; ++c)
    for (const auto& p : problems) serial[static_cast<size_t>(c)].push_back(p.run(GetParam(), library_threads[c]));
  std::vector<std::vector<std::vector<float>>> got(callers);
  std::vector<std::thread> pool;
  for (int c = 0; c < callers; ++c)
    pool.emplace_back([&, c] {
      for (size_t i = 0; i < problems.size(); ++i) {
        const auto& p = problems[(i + static_cast<size_t>(c)) % problems.size()];
        got[static_cast<size_t>(c)].push_back(p.run(GetParam(), library_threads[c]));
      }
    });
  for (auto& t : pool) t.join();
  for (int c = 0; c < callers; ++c)
    for (size_t i = 0; i < problems.size(); ++i)
      EXPECT_EQ(got[static_cast<size_t>(c)][i], serial[static_cast<size_t>(c)][(i + static_cast<size_t>(c)) % problems.size()])
          << "caller " << c << " (threads " << library_threads[c] << "), problem " << (i + static_cast<size_t>(c)) % problems.size();
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Concurrent);

}  // namespace
}  // namespace lightning::test
