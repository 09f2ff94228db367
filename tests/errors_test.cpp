// Every bad input throws lightning::invalid_argument naming the argument and values, writing nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "util.hpp"

namespace lightning::test {
namespace {

constexpr int64_t B = 2, H = 2, N = 10, DK = 4, DV = 3;

struct Buffers {
  std::vector<float> q = randn(B * H * N * DK, 1, 1), k = randn(B * H * N * DK, 1, 2), v = randn(B * H * N * DV, 1, 3);
  std::vector<float> s0 = randn(B * H * DK * DV, 1, 4);
  std::vector<float> o = std::vector<float>(B * H * N * DV, 42.0f), s1 = std::vector<float>(B * H * DK * DV, 42.0f);
  View<const float> qv() const { return bhnd<const float>(q.data(), B, H, N, DK); }
  View<const float> kv() const { return bhnd<const float>(k.data(), B, H, N, DK); }
  View<const float> vv() const { return bhnd<const float>(v.data(), B, H, N, DV); }
  View<float> ov() { return bhnd(o.data(), B, H, N, DV); }
  View<const float> s0v() const { return state_view(s0.data(), B, H, DK, DV); }
  View<float> s1v() { return state_view(s1.data(), B, H, DK, DV); }
  bool outputs_untouched() const {
    for (float x : o)
      if (x != 42.0f) return false;
    for (float x : s1)
      if (x != 42.0f) return false;
    return true;
  }
};

/** Runs `call`, expects lightning::invalid_argument with every fragment in its message. */
template <class Call>
void expect_rejected(Buffers& buf, Call call, std::initializer_list<const char*> fragments) {
  expect_invalid_argument(call, fragments);
  EXPECT_TRUE(buf.outputs_untouched());
}

TEST(Errors, IsAnInvalidArgument) {
  Buffers b;
  auto q = b.qv();
  q.seq = N + 1;
  EXPECT_THROW(forward(q, b.kv(), b.vv(), b.ov()), std::invalid_argument);
}

TEST(Errors, MismatchedShapes) {
  Buffers b;
  auto k = b.kv();
  k.seq = N - 1;
  expect_rejected(b, [&] { forward(b.qv(), k, b.vv(), b.ov(), {}, b.s0v(), b.s1v()); }, {"k [", "seq=9"});
  auto v = b.vv();
  v.batch = 1;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), v, b.ov(), {}, b.s0v(), b.s1v()); }, {"v [", "batch=1"});
  auto o = b.ov();
  o.dim = DV - 1;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), o, {}, b.s0v(), b.s1v()); }, {"o [", "dim=2"});
  auto k3 = b.kv();
  k3.dim = DK + 1;
  expect_rejected(b, [&] { forward(b.qv(), k3, b.vv(), b.ov()); }, {"k [", "dim=5"});
  auto s0 = b.s0v();
  s0.seq = DK + 1;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), {}, s0, b.s1v()); }, {"state_in", "seq=5"});
  auto s1 = b.s1v();
  s1.heads = 1;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), {}, b.s0v(), s1); }, {"state_out", "heads=1"});
  auto kg = b.kv();
  kg.heads = 3;  // 2 q heads are not a multiple of 3 k/v heads
  expect_rejected(b, [&] { forward(b.qv(), kg, b.vv(), b.ov()); }, {"q.heads (2)", "k.heads (3)"});
}

TEST(Errors, NullDataWithExtent) {
  Buffers b;
  auto q = b.qv();
  q.data = nullptr;
  expect_rejected(b, [&] { forward(q, b.kv(), b.vv(), b.ov(), {}, b.s0v(), b.s1v()); }, {"q [", "null data"});
  auto s0 = b.s0v();
  s0.data = nullptr;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), {}, s0, b.s1v()); }, {"state_in", "null data"});
}

TEST(Errors, NullDataWithNoExtentIsFine) {
  std::vector<float> s(B * H * DK * DV, 42.0f);
  const View<const float> q(nullptr, B, H, 0, DK, 0, 0, 0), v(nullptr, B, H, 0, DV, 0, 0, 0);
  forward(q, q, v, View<float>(nullptr, B, H, 0, DV, 0, 0, 0), {}, {}, state_view(s.data(), B, H, DK, DV));
  for (float x : s) EXPECT_EQ(x, 0.0f);  // n = 0 without a state: S_out = 0
}

TEST(Errors, BadSlopes) {
  Buffers b;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const auto& [slopes, text] : {std::pair<std::vector<float>, const char*>{{0.1f, -0.5f}, "slopes[1] must be finite and >= 0, got -0.5"},
                                     {{nan, 0.1f}, "slopes[0]"},
                                     {{0.1f, inf}, "got inf"}}) {
    Options opt;
    opt.slopes = slopes.data();
    expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), opt, b.s0v(), b.s1v()); }, {text});
  }
}

TEST(Errors, BadScaleBlockThreadsPath) {
  Buffers b;
  Options opt;
  opt.scale = std::numeric_limits<float>::infinity();
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), opt, b.s0v(), b.s1v()); }, {"options.scale", "inf"});
  opt = {};
  opt.block_size = -3;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), opt, b.s0v(), b.s1v()); },
                  {"options.block_size", "-3"});
  opt = {};
  opt.threads = -1;
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), opt, b.s0v(), b.s1v()); }, {"options.threads", "-1"});
  for (Path p : {Path::avx2, Path::avx512})
    if (!path_compiled(p)) {
      opt = {};
      opt.path = p;
      expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), opt, b.s0v(), b.s1v()); },
                      {"options.path", path_name(p), "not compiled"});
    }
}

TEST(Errors, OutputOverlapsInput) {
  Buffers b;
  std::vector<float> qv_shared(B * H * N * DK, 1.0f);  // o written over q's memory
  expect_rejected(
      b, [&] { forward(bhnd<const float>(qv_shared.data(), B, H, N, DK), b.kv(), b.vv(), bhnd(qv_shared.data(), B, H, N, DV)); },
      {"output o overlaps q"});
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), b.ov(), {}, b.s0v(), bhnd(b.o.data(), B, H, DK, DV)); },
                  {"output state_out overlaps o"});
  auto o = b.ov();
  o.seq_stride = 0;  // every token written to one row
  expect_rejected(b, [&] { forward(b.qv(), b.kv(), b.vv(), o); }, {"output o", "write some elements twice"});
  // A state carried in place (state_in and state_out the very same view) is allowed.
  std::vector<float> s = b.s0;
  forward(b.qv(), b.kv(), b.vv(), b.ov(), {}, state_view(static_cast<const float*>(s.data()), B, H, DK, DV),
          state_view(s.data(), B, H, DK, DV));
  EXPECT_NE(s, b.s0);
}

// Found by the fuzzer (fuzz/corpus/regress-*): under -fsanitize=undefined these overflowed int64 inside
// the checks before the fix; the release build happened to throw anyway.
TEST(Errors, SpanEndingAtInt64Max) {
  Buffers b;
  auto q = b.qv();
  q.batch = q.heads = 1, b.q.resize(2 * DK);
  q.seq = 2, q.seq_stride = std::numeric_limits<int64_t>::max() - (DK - 1);  // the last element is at INT64_MAX
  expect_rejected(b, [&] { forward(q, b.kv(), b.vv(), b.ov()); }, {"q [", "int64"});
}

TEST(Errors, ElementCountOverflowsInt64) {
  Buffers b;
  const int64_t huge = int64_t{1} << 62;  // batch * heads * seq * dim overflows; zero strides address one row
  const View<const float> q(b.q.data(), huge, 4, 1, DK, 0, 0, 0), v(b.v.data(), huge, 4, 1, DV, 0, 0, 0);
  const View<float> o(b.o.data(), huge, 4, 1, DV, 0, 0, 0);
  expect_rejected(b, [&] { forward(q, q, v, o); }, {"output o", "write some elements twice"});
  expect_rejected(b, [&] { decode(q, q, v, o, b.s1v()); }, {"output o", "write some elements twice"});
}

TEST(Errors, Decode) {
  Buffers b;
  std::vector<float> cache(3 * H * DK * DV, 42.0f);
  const auto one = [&](const std::vector<float>& x, int64_t d) { return bhnd<const float>(x.data(), B, H, 1, d); };
  auto o1 = bhnd(b.o.data(), B, H, 1, DV);
  expect_rejected(b, [&] { decode(b.qv(), b.kv(), b.vv(), b.ov(), b.s1v()); }, {"one token", "q.seq = 10"});
  const int64_t out_of_range[B] = {0, 3}, shared[B] = {1, 1};
  expect_rejected(
      b, [&] { decode(one(b.q, DK), one(b.k, DK), one(b.v, DV), o1, state_view(cache.data(), 3, H, DK, DV), {}, out_of_range); },
      {"slots[1] = 3", "3 slots"});
  expect_rejected(
      b, [&] { decode(one(b.q, DK), one(b.k, DK), one(b.v, DV), o1, state_view(cache.data(), 3, H, DK, DV), {}, shared); },
      {"slots[0] and slots[1]", "share cache slot 1"});
  for (float x : cache) EXPECT_EQ(x, 42.0f);
}

}  // namespace
}  // namespace lightning::test
