// Chunked prefill equals one forward; forward then decode steps equals one forward; slot caches.
#include <gtest/gtest.h>

#include <vector>

#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

const float kSlopes[] = {0.05f, 1e-6f, 8.0f};
constexpr int64_t B = 2, H = 3, DK = 16, DV = 12;

/** A [B, H, n, d] tensor and views of its token range [t0, t0 + len). */
struct Seq {
  int64_t n, d;
  std::vector<float> x;
  Seq(int64_t n_, int64_t d_, float sd, uint64_t seed) : n(n_), d(d_), x(randn(B * H * n_ * d_, sd, seed)) {}
  View<float> part(int64_t t0, int64_t len) { return View<float>(x.data() + t0 * d, B, H, len, d, H * n * d, n * d, d); }
};

class Consistency : public ::testing::TestWithParam<Path> {
 protected:
  Options opt() const {
    Options o;
    o.slopes = kSlopes;
    o.path = GetParam();
    o.block_size = 32;
    return o;
  }
};

TEST_P(Consistency, ChunkedPrefillEqualsOneForward) {
  const int64_t n = 1000;
  Seq q(n, DK, 0.5f, 1), k(n, DK, 0.5f, 2), v(n, DV, 1, 3), whole(n, DV, 0, 4), pieces(n, DV, 0, 5);
  std::vector<float> s_whole(B * H * DK * DV), s(s_whole.size());
  forward(q.part(0, n), k.part(0, n), v.part(0, n), whole.part(0, n), opt(), {},
          state_view(s_whole.data(), B, H, DK, DV));
  // Pieces of uneven length, the state carried in place through one buffer.
  int64_t t0 = 0;
  for (int64_t len : {0, 300, 1, 31, 32, 33, 603}) {
    const View<const float> s_in = t0 == 0 ? View<const float>() : state_view(static_cast<const float*>(s.data()), B, H, DK, DV);
    forward(q.part(t0, len), k.part(t0, len), v.part(t0, len), pieces.part(t0, len), opt(), s_in,
            state_view(s.data(), B, H, DK, DV));
    t0 += len;
  }
  ASSERT_EQ(t0, n);
  EXPECT_LE(rel_rms(pieces.x, std::vector<double>(whole.x.begin(), whole.x.end())), kFp32Tolerance);
  EXPECT_LE(rel_rms(s, std::vector<double>(s_whole.begin(), s_whole.end())), kFp32Tolerance);
}

TEST_P(Consistency, DecodeContinuesAForward) {
  const int64_t n = 100, prefill = 90;
  Seq q(n, DK, 0.5f, 11), k(n, DK, 0.5f, 12), v(n, DV, 1, 13), whole(n, DV, 0, 14), stepped(n, DV, 0, 15);
  std::vector<float> s_whole(B * H * DK * DV), s(s_whole.size());
  forward(q.part(0, n), k.part(0, n), v.part(0, n), whole.part(0, n), opt(), {}, state_view(s_whole.data(), B, H, DK, DV));
  forward(q.part(0, prefill), k.part(0, prefill), v.part(0, prefill), stepped.part(0, prefill), opt(), {},
          state_view(s.data(), B, H, DK, DV));
  for (int64_t t = prefill; t < n; ++t)
    decode(q.part(t, 1), k.part(t, 1), v.part(t, 1), stepped.part(t, 1), state_view(s.data(), B, H, DK, DV), opt());
  EXPECT_LE(rel_rms(stepped.x, std::vector<double>(whole.x.begin(), whole.x.end())), kFp32Tolerance);
  EXPECT_LE(rel_rms(s, std::vector<double>(s_whole.begin(), s_whole.end())), kFp32Tolerance);
}

TEST_P(Consistency, DecodeWithSlotCacheSkipsPadding) {
  // Sequence 0 uses slot 2, sequence 1 is padding: slot contents and its output stay as they were.
  Seq q(1, DK, 1, 21), k(1, DK, 1, 22), v(1, DV, 1, 23), o(1, DV, 0, 24), o_ref(1, DV, 0, 25);
  std::vector<float> cache = randn(4 * H * DK * DV, 1, 26), states(B * H * DK * DV);
  const std::vector<float> before = cache;
  std::copy_n(cache.begin() + 2 * H * DK * DV, H * DK * DV, states.begin());  // states[0] = cache slot 2
  std::fill(o.x.begin(), o.x.end(), 42.0f);
  const int64_t slots[B] = {2, -1};
  decode(q.part(0, 1), k.part(0, 1), v.part(0, 1), o.part(0, 1), state_view(cache.data(), 4, H, DK, DV), opt(), slots);
  decode(q.part(0, 1), k.part(0, 1), v.part(0, 1), o_ref.part(0, 1), state_view(states.data(), B, H, DK, DV), opt());
  for (int64_t i = 0; i < H * DV; ++i) {
    EXPECT_EQ(o.x[i], o_ref.x[i]);              // sequence 0 as without the cache
    EXPECT_EQ(o.x[H * DV + i], 42.0f);          // padding output untouched
  }
  for (int64_t slot : {0, 1, 3})
    for (int64_t i = 0; i < H * DK * DV; ++i) EXPECT_EQ(cache[slot * H * DK * DV + i], before[slot * H * DK * DV + i]);
  for (int64_t i = 0; i < H * DK * DV; ++i) EXPECT_EQ(cache[2 * H * DK * DV + i], states[i]);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Consistency);

#if LIGHTNING_HAVE_AVX512
// The avx512 decode's two row kernels, its own 512-bit one and avx2's 256-bit one (which it takes on
// AMD cores): decode steps from a random state, two q heads per k/v head (the group's second head
// reads the updated row) and a slow decay (the lambda S = S - mu S form), against the double
// recurrence, vector tails of every kind; where d_v is a multiple of 8 the two give the same bits.
TEST(Avx512DecodeRows, BothRowKernelsMatchTheRecurrence) {
  const float slopes[] = {0.3f, 1e-6f};
  for (int64_t dv : {1, 7, 8, 12, 24, 40, 133}) {
    const RandomProblem p(2, 4, 2, 5, 16, dv, 90);
    const auto ref = reference::recurrence(p.qv(), p.kv(), p.vv(), slopes, 0.5, p.s0v());
    std::vector<float> o[2], s[2];
    for (const bool narrow : {false, true}) {
      const ScopedSetting<bool> kernel(detail::avx512_decode_in_256_bits, narrow);
      Options opt;
      opt.slopes = slopes;
      opt.scale = 0.5f;
      opt.path = Path::avx512;
      o[narrow].assign(p.q.size() / p.dk * dv, 0.0f);
      s[narrow] = p.s0;
      for (int64_t t = 0; t < p.n; ++t)
        decode(p.piece(p.q.data(), p.H, p.dk, t, 1), p.piece(p.k.data(), p.G, p.dk, t, 1),
               p.piece(p.v.data(), p.G, dv, t, 1), p.piece(o[narrow].data(), p.H, dv, t, 1),
               state_view(s[narrow].data(), p.B, p.G, p.dk, dv), opt);
      EXPECT_LE(rel_rms(o[narrow], ref.o), kFp32Tolerance) << "d_v " << dv << (narrow ? ", 256-bit rows" : "");
      EXPECT_LE(rel_rms(s[narrow], ref.state), kFp32Tolerance) << "d_v " << dv << (narrow ? ", 256-bit rows" : "");
    }
    if (dv % 8 == 0) {
      EXPECT_EQ(o[0], o[1]) << "d_v " << dv;
      EXPECT_EQ(s[0], s[1]) << "d_v " << dv;
    }
  }
}
#endif

}  // namespace
}  // namespace lightning::test
