// Streaming (non-temporal) stores of the outputs (detail/stream.hpp): which views stream, and that a
// streamed forward and backward give the same bits as the ordinary stores, on every path, for one
// and for several q heads per k/v head, with threads (the fence before the join).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lightning/detail/buffer.hpp"
#include "lightning/detail/stream.hpp"
#include "lightning/lightning.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

/** `count` floats of -7 from a 64-byte line (detail::Floats starts each buffer on one). */
detail::Floats line_aligned(size_t count) { return detail::Floats(count, -7.0f); }

TEST(Streaming, OnlyLineAlignedLargeFp32OutputsOnAvx512Stream) {
  detail::Floats storage = line_aligned(2 * 3 * 40 * 64);
  float* x = storage.data();
  const ScopedSetting<int64_t> any(detail::stream_min_bytes, 0);
  EXPECT_TRUE((detail::streams<Path::avx512>(bhnd(x, 2, 3, 40, 64))));
  EXPECT_FALSE((detail::streams<Path::avx2>(bhnd(x, 2, 3, 40, 64))));
  EXPECT_FALSE((detail::streams<Path::scalar>(bhnd(x, 2, 3, 40, 64))));
  EXPECT_FALSE((detail::streams<Path::avx512>(bhnd(x + 1, 2, 3, 40, 63))));  // data off the line
  EXPECT_FALSE((detail::streams<Path::avx512>(bhnd(x, 2, 3, 40, 60))));      // rows off the line
  EXPECT_FALSE((detail::streams<Path::avx512>(bnhd(x, 2, 3, 40, 40))));      // heads 40 floats apart
  EXPECT_FALSE((detail::streams<Path::avx512>(View<float>{})));
  // One byte more than the view.
  const ScopedSetting<int64_t> large(detail::stream_min_bytes, int64_t{2} * 3 * 40 * 64 * 4 + 1);
  EXPECT_FALSE((detail::streams<Path::avx512>(bhnd(x, 2, 3, 40, 64))));
}

struct Outputs {
  detail::Floats o, dq, dk, dv;
  std::vector<float> ds_in;
};

class Streaming : public ::testing::TestWithParam<Path> {};

// The same call with and without streaming stores: every output bit for bit (o, dQ, dK, dV, dS_in).
TEST_P(Streaming, StreamedOutputsHaveTheSameBits) {
  for (const int64_t H : {2, 4})      // G = 2: one q head per k/v head (dV streams), then two
    for (const int64_t n : {1, 100})  // a single token; blocks and a rest
      for (const int threads : {1, 2}) {
        const int64_t B = 2, G = 2, dk = 64, dv = 80;
        const RandomProblem p(B, H, G, n, dk, dv, 31);
        const auto d_o = randn(static_cast<size_t>(B * H * n * dv), 1.0f, 32);
        const auto ds_out = randn(static_cast<size_t>(B * G * dk * dv), 0.5f, 33);
        std::vector<float> slopes = {0.3f, 0.01f};
        Options opt;
        opt.path = GetParam();
        opt.slopes = slopes.data();
        opt.threads = threads;
        const auto run = [&](int64_t min_bytes) {
          const ScopedSetting<int64_t> threshold(detail::stream_min_bytes, min_bytes);
          Outputs r{line_aligned(static_cast<size_t>(B * H * n * dv)), line_aligned(static_cast<size_t>(B * H * n * dk)),
                    line_aligned(static_cast<size_t>(B * G * n * dk)), line_aligned(static_cast<size_t>(B * G * n * dv)),
                    std::vector<float>(static_cast<size_t>(B * G * dk * dv), -7.0f)};
          forward(p.qv(), p.kv(), p.vv(), bhnd(r.o.data(), B, H, n, dv), opt, p.s0v());
          backward(p.qv(), p.kv(), p.vv(), bhnd<const float>(d_o.data(), B, H, n, dv), bhnd(r.dq.data(), B, H, n, dk),
                   bhnd(r.dk.data(), B, G, n, dk), bhnd(r.dv.data(), B, G, n, dv), opt, p.s0v(),
                   state_view(ds_out.data(), B, G, dk, dv), state_view(r.ds_in.data(), B, G, dk, dv));
          return r;
        };
        const Outputs plain = run(INT64_MAX), streamed = run(0);
        const auto same = [](const auto& a, const auto& b) {  // bit for bit (NaN and -0 included)
          return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
        };
        const std::string at = "H " + std::to_string(H) + ", n " + std::to_string(n) + ", threads " + std::to_string(threads);
        EXPECT_TRUE(same(plain.o, streamed.o)) << "o, " << at;
        EXPECT_TRUE(same(plain.dq, streamed.dq)) << "dQ, " << at;
        EXPECT_TRUE(same(plain.dk, streamed.dk)) << "dK, " << at;
        EXPECT_TRUE(same(plain.dv, streamed.dv)) << "dV, " << at;
        EXPECT_TRUE(same(plain.ds_in, streamed.ds_in)) << "dS_in, " << at;
        // And the outputs were written at all.
        EXPECT_NE(streamed.dv[0], -7.0f) << at;
      }
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Streaming);

}  // namespace
}  // namespace lightning::test
