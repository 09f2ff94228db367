// Every compiled path against the double-precision references, over shapes at the edges.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

enum class Layout { bhnd, bnhd };

struct Case {
  int64_t batch, q_heads, kv_heads, n, dk, dv, block;
  Layout layout = Layout::bhnd;
  bool initial_state = true;
  float scale = 1.0f;
};

// The five slopes of the issue in one call: none, tiny, MiniMax-like, strong, extreme.
const float kSlopes[] = {0.0f, 1e-6f, 0.05f, 8.0f, 30.0f, 0.3f, 0.01f};

template <class T>
View<T> make_view(T* p, Layout l, int64_t b, int64_t h, int64_t n, int64_t d) {
  return l == Layout::bhnd ? bhnd(p, b, h, n, d) : bnhd(p, b, h, n, d);
}

/** Runs one case on `path`, compares o and the final state with a reference, returns the errors. */
std::pair<double, double> run_case(Path path, const Case& c) {
  const int64_t B = c.batch, H = c.q_heads, G = c.kv_heads;
  // Entries sized so that q . k is O(1) and outputs are O(1) for moderate n.
  const float sd = 1.0f / std::sqrt(std::sqrt(static_cast<float>(c.dk)));
  auto q = randn(static_cast<size_t>(B * H * c.n * c.dk), sd, 1 + c.n);
  auto k = randn(static_cast<size_t>(B * G * c.n * c.dk), sd, 2 + c.n);
  auto v = randn(static_cast<size_t>(B * G * c.n * c.dv), 1.0f, 3 + c.n);
  auto s0 = randn(static_cast<size_t>(B * G * c.dk * c.dv), 0.3f, 4);
  std::vector<float> o(static_cast<size_t>(B * H * c.n * c.dv), -7.0f), s1(s0.size(), -7.0f);
  const auto qv = make_view<const float>(q.data(), c.layout, B, H, c.n, c.dk);
  const auto kv = make_view<const float>(k.data(), c.layout, B, G, c.n, c.dk);
  const auto vv = make_view<const float>(v.data(), c.layout, B, G, c.n, c.dv);
  const auto ov = make_view<float>(o.data(), c.layout, B, H, c.n, c.dv);
  const View<const float> s0v = c.initial_state ? state_view(static_cast<const float*>(s0.data()), B, G, c.dk, c.dv)
                                                : View<const float>();
  Options opt;
  opt.slopes = kSlopes;
  opt.scale = c.scale;
  opt.block_size = c.block;
  opt.path = path;
  forward(qv, kv, vv, ov, opt, s0v, state_view(s1.data(), B, G, c.dk, c.dv));

  // The quadratic form is O(n^2): use the recurrence for long sequences (the two agree, see below).
  const auto ref = c.n <= 1100 ? reference::quadratic(qv, kv, vv, kSlopes, c.scale, s0v)
                               : reference::recurrence(qv, kv, vv, kSlopes, c.scale, s0v);
  std::vector<float> o_bhnd(o.size());  // the reference's layout
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < c.n; ++t)
        std::copy_n(ov.row(b, h, t), c.dv, &o_bhnd[static_cast<size_t>(((b * H + h) * c.n + t) * c.dv)]);
  return {rel_rms(o_bhnd, ref.o), rel_rms(s1, ref.state)};
}

class Forward : public ::testing::TestWithParam<Path> {
 protected:
  void expect_close(const Case& c) {
    const auto [err_o, err_s] = run_case(GetParam(), c);
    const std::string what = "n=" + std::to_string(c.n) + " dk=" + std::to_string(c.dk) + " dv=" +
                             std::to_string(c.dv) + " block=" + std::to_string(c.block) + " heads=" +
                             std::to_string(c.q_heads) + "/" + std::to_string(c.kv_heads);
    if (c.n > 0) {
      EXPECT_LE(err_o, kFp32Tolerance) << what;
    }
    EXPECT_LE(err_s, kFp32Tolerance) << what;
  }
};

TEST_P(Forward, SequenceLengthsAroundTheBlock) {
  for (int64_t block : {16, 64})
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{2}, block - 1, block, block + 1, 2 * block + 1, int64_t{997}})
      expect_close({2, 5, 5, n, 16, 24, block});
}

TEST_P(Forward, LongSequence) { expect_close({1, 5, 5, 4096, 32, 16, 0}); }

TEST_P(Forward, HeadDims) {
  const std::pair<int64_t, int64_t> dims[] = {{1, 1}, {3, 3}, {1, 128}, {128, 1}, {3, 16}, {16, 16},
                                             {64, 64}, {64, 32}, {128, 128}, {17, 33}};
  for (const auto& [dk, dv] : dims) expect_close({1, 2, 2, 129, dk, dv, 0});
}

TEST_P(Forward, BlockSizes) {
  for (int64_t block : {1, 2, 5, 63, 64, 65, 100, 256, 300, 512}) expect_close({1, 5, 5, 300, 16, 8, block});
}

TEST_P(Forward, BatchSeqHeadsMemoryOrder) {
  expect_close({3, 7, 7, 200, 16, 16, 64, Layout::bnhd});
  expect_close({2, 5, 5, 65, 3, 5, 16, Layout::bnhd, false});
}

TEST_P(Forward, NoInitialState) { expect_close({2, 5, 5, 150, 16, 16, 32, Layout::bhnd, false}); }

TEST_P(Forward, Scale) {
  expect_close({1, 3, 3, 100, 16, 16, 32, Layout::bhnd, true, 0.125f});
  expect_close({1, 3, 3, 100, 16, 16, 32, Layout::bhnd, true, -2.0f});
}

TEST_P(Forward, GroupedHeads) {
  expect_close({2, 6, 2, 150, 16, 8, 32});   // GQA: 3 q heads per k/v head
  expect_close({1, 4, 1, 150, 8, 16, 64});   // MQA
}

TEST_P(Forward, ThreadsGiveTheSameBits) {
  const int64_t B = 2, H = 5, n = 333, dk = 16, dv = 8;
  auto q = randn(B * H * n * dk, 0.5f, 11), k = randn(B * H * n * dk, 0.5f, 12), v = randn(B * H * n * dv, 1, 13);
  std::vector<float> o1(B * H * n * dv), o2(o1.size()), s1(B * H * dk * dv), s2(s1.size());
  Options opt;
  opt.slopes = kSlopes;
  opt.path = GetParam();
  forward(bhnd(q.data(), B, H, n, dk), bhnd(k.data(), B, H, n, dk), bhnd(v.data(), B, H, n, dv),
          bhnd(o1.data(), B, H, n, dv), opt, {}, state_view(s1.data(), B, H, dk, dv));
  opt.threads = 5;  // divides batch x heads: threads over items only, the same arithmetic
  forward(bhnd(q.data(), B, H, n, dk), bhnd(k.data(), B, H, n, dk), bhnd(v.data(), B, H, n, dv),
          bhnd(o2.data(), B, H, n, dv), opt, {}, state_view(s2.data(), B, H, dk, dv));
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(s1, s2);
}

// A call with nothing to write (no element of o, no state_out) returns at once, however many batch
// entries and heads it names: zero strides let one row stand for 2^61 batch entries or 2^31 heads, and
// every (batch, k/v head) item used to make its decay tables (found by the fuzzer: no token, no q head
// and 2^31 k/v heads ran for more than ten minutes). Each call here ran past a 60 s timeout so.
TEST_P(Forward, NothingToWriteReturnsAtOnce) {
  const float x[8] = {};
  float out[1] = {7.0f};
  Options opt;
  opt.path = GetParam();
  opt.block_size = 4096;
  const int64_t batch = int64_t{1} << 61, heads = int64_t{1} << 31;
  const View<const float> no_token(x, batch, 2, 0, 8, 0, 0, 0);
  forward(no_token, no_token, no_token, View<float>(out, batch, 2, 0, 8, 0, 0, 0), opt);
  const View<const float> no_q_head(x, 1, 0, 5, 8, 0, 0, 0), kv(x, 1, heads, 5, 8, 0, 0, 0);
  const View<float> no_o(out, 1, 0, 5, 8, 0, 0, 0);
  forward(no_q_head, kv, kv, no_o, opt);
  const int64_t offsets[] = {0, 2, 5};
  forward_varlen(no_q_head, kv, kv, no_o, offsets, 2, opt);
  EXPECT_EQ(out[0], 7.0f);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Forward);

// The two references are independent ways to the same numbers; the long-sequence tests rely on it.
TEST(Reference, QuadraticAgreesWithRecurrence) {
  const int64_t B = 2, H = 4, G = 2, n = 77, dk = 5, dv = 6;
  auto q = randn(B * H * n * dk, 1, 21), k = randn(B * G * n * dk, 1, 22), v = randn(B * G * n * dv, 1, 23);
  auto s0 = randn(B * G * dk * dv, 1, 24);
  const float slopes[] = {0.1f, 8.0f};
  const auto qv = bhnd<const float>(q.data(), B, H, n, dk), kv = bhnd<const float>(k.data(), B, G, n, dk),
             vv = bhnd<const float>(v.data(), B, G, n, dv);
  const auto s0v = state_view(static_cast<const float*>(s0.data()), B, G, dk, dv);
  const auto a = reference::quadratic(qv, kv, vv, slopes, 0.5, s0v);
  const auto b = reference::recurrence(qv, kv, vv, slopes, 0.5, s0v);
  EXPECT_LE(rel_rms(a.o, b.o), 1e-13);
  EXPECT_LE(rel_rms(a.state, b.state), 1e-13);
}

}  // namespace
}  // namespace lightning::test
