// The sequence-parallel split (threads along the sequence) against one thread and the references.
#include <gtest/gtest.h>

#include <vector>

#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

const float kSlopes[] = {0.05f, 8.0f, 0.0f, 1e-6f, 0.3f};

struct Data : RandomProblem {
  Data(int64_t B_, int64_t H_, int64_t G_, int64_t n_, int64_t dk_, int64_t dv_)
      : RandomProblem(B_, H_, G_, n_, dk_, dv_, 31) {}
};

struct Out {
  std::vector<float> o, s;
};

Out run(const Data& d, Path path, int threads, bool initial_state, int64_t block = 0) {
  Out r{std::vector<float>(static_cast<size_t>(d.B * d.H * d.n * d.dv), -7.0f),
        std::vector<float>(static_cast<size_t>(d.B * d.G * d.dk * d.dv), -7.0f)};
  Options opt;
  opt.slopes = kSlopes;
  opt.path = path;
  opt.threads = threads;
  opt.block_size = block;
  forward(d.qv(), d.kv(), d.vv(), bhnd(r.o.data(), d.B, d.H, d.n, d.dv), opt,
          initial_state ? d.s0v() : View<const float>(), state_view(r.s.data(), d.B, d.G, d.dk, d.dv));
  return r;
}

class SequenceParallel : public ::testing::TestWithParam<Path> {
 protected:
  // Threaded against one thread and against the double reference, output and final state.
  void expect_close(const Data& d, int threads, bool initial_state, int64_t block = 0) {
    const Out one = run(d, GetParam(), 1, initial_state, block), many = run(d, GetParam(), threads, initial_state, block);
    const auto s0 = initial_state ? d.s0v() : View<const float>();
    const auto ref = d.n <= 1100 ? reference::quadratic(d.qv(), d.kv(), d.vv(), kSlopes, 1.0, s0)
                                 : reference::recurrence(d.qv(), d.kv(), d.vv(), kSlopes, 1.0, s0);
    const std::string what = "B=" + std::to_string(d.B) + " H=" + std::to_string(d.H) + "/" + std::to_string(d.G) +
                             " n=" + std::to_string(d.n) + " threads=" + std::to_string(threads);
    std::vector<double> one_o(one.o.begin(), one.o.end()), one_s(one.s.begin(), one.s.end());
    if (d.n > 0) {
      EXPECT_LE(rel_rms(many.o, one_o), kFp32Tolerance) << what;
      EXPECT_LE(rel_rms(many.o, ref.o), kFp32Tolerance) << what;
    }
    EXPECT_LE(rel_rms(many.s, one_s), kFp32Tolerance) << what;
    EXPECT_LE(rel_rms(many.s, ref.state), kFp32Tolerance) << what;
  }
};

TEST_P(SequenceParallel, OneHeadManyThreads) {
  const Data d(1, 1, 1, 2000, 16, 24);
  for (int threads : {2, 3, 4, 7}) expect_close(d, threads, true, 32);
}

TEST_P(SequenceParallel, ItemsNotAMultipleOfThreads) {
  expect_close(Data(3, 1, 1, 1500, 16, 16), 2, true, 32);  // 3 items, 2 threads: one item cut in two
  expect_close(Data(1, 5, 5, 700, 8, 8), 3, false, 16);
  expect_close(Data(2, 3, 3, 900, 16, 8), 4, true, 32);
}

TEST_P(SequenceParallel, GroupedHeadsAndDecay) {
  expect_close(Data(1, 4, 1, 1200, 16, 16), 3, true, 16);  // MQA, slope 0.05
  expect_close(Data(1, 6, 2, 1000, 8, 16), 5, true, 16);   // GQA, slopes 0.05 and 8
}

TEST_P(SequenceParallel, LongSequence) { expect_close(Data(1, 1, 1, 20000, 32, 32), 3, true); }

TEST_P(SequenceParallel, FewerTokensThanThreads) {
  for (int64_t n : {0, 1, 3}) expect_close(Data(1, 1, 1, n, 8, 8), 8, true, 0);
}

// Hand-made plans: uneven pieces, empty pieces, many pieces on one worker.
TEST_P(SequenceParallel, UnevenAndEmptyPieces) {
  const Data d(2, 2, 1, 301, 16, 8);
  const auto ref = reference::quadratic(d.qv(), d.kv(), d.vv(), kSlopes, 0.5, d.s0v());
  const std::vector<std::vector<detail::Piece>> plans = {
      {{0, 0, 1, 0}, {0, 1, 1, 1}, {0, 1, 300, 1}, {0, 300, 301, 0}, {1, 0, 301, 1}},
      {{0, 0, 0, 1}, {0, 0, 17, 2}, {0, 17, 200, 0}, {0, 200, 301, 2}, {1, 0, 150, 2}, {1, 150, 151, 0},
       {1, 151, 301, 1}},
  };
  for (const auto& plan : plans) {
    std::vector<float> o(static_cast<size_t>(d.B * d.H * d.n * d.dv), -7.0f), s(d.s0);  // state carried in place
    const detail::ForwardArgs<float> args{d.qv(), d.kv(), d.vv(), bhnd(o.data(), d.B, d.H, d.n, d.dv),
                                          state_view(static_cast<const float*>(s.data()), d.B, d.G, d.dk, d.dv),
                                          state_view(s.data(), d.B, d.G, d.dk, d.dv), kSlopes + 1, 0.5f, 16};
    detail::with_path(GetParam(), [&](auto p) { detail::forward_split<decltype(p)::value>(args, 3, plan); });
    const float* slopes = kSlopes + 1;
    const auto r = reference::quadratic(d.qv(), d.kv(), d.vv(), slopes, 0.5, d.s0v());
    EXPECT_LE(rel_rms(o, r.o), kFp32Tolerance);
    EXPECT_LE(rel_rms(s, r.state), kFp32Tolerance);
  }
  (void)ref;
}

LIGHTNING_INSTANTIATE_FOR_PATHS(SequenceParallel);

// The planner covers every item exactly once, in order, with each worker's pieces consecutive.
TEST(SplitLine, CoversEveryToken) {
  const std::vector<std::vector<int64_t>> cases = {{1000}, {5, 0, 7}, {100, 100, 100}, {3}, {0}, {64, 1, 640, 2}};
  for (const auto& lengths : cases)
    for (int workers : {1, 2, 3, 8})
      for (int64_t align : {1, 16}) {
        const auto pieces = detail::split_line(lengths, workers, align);
        size_t p = 0;
        int last_worker = 0;
        for (size_t i = 0; i < lengths.size(); ++i) {
          int64_t at = 0;
          ASSERT_LT(p, pieces.size());
          do {
            EXPECT_EQ(pieces[p].item, static_cast<int64_t>(i));
            EXPECT_EQ(pieces[p].begin, at);
            EXPECT_GE(pieces[p].worker, last_worker);
            EXPECT_LT(pieces[p].worker, workers);
            last_worker = pieces[p].worker;
            at = pieces[p].end;
            ++p;
          } while (at < lengths[i] && p < pieces.size());
          EXPECT_EQ(at, lengths[i]);
        }
        EXPECT_EQ(p, pieces.size());
      }
}

TEST(SplitLine, EqualShares) {
  const auto pieces = detail::split_line({1000}, 4, 1);
  ASSERT_EQ(pieces.size(), 4u);
  for (int w = 0; w < 4; ++w) EXPECT_EQ(pieces[static_cast<size_t>(w)].end - pieces[static_cast<size_t>(w)].begin, 250);
}

}  // namespace
}  // namespace lightning::test
