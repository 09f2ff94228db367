// The packed transposes (detail/pack.hpp) against a plain loop, on every path: whole 16 x 16 and
// 8 x 8 register tiles, the L-shaped rests they leave and the edges no tile fits.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "lightning/detail/pack.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

class Pack : public ::testing::TestWithParam<Path> {};

TEST_P(Pack, TransposesMatchALoop) {
  const int64_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40};
  for (int64_t rows : sizes)
    for (int64_t cols : sizes) {
      const int64_t lds = cols + 3, ldd = rows + 5;
      const auto src = randn(static_cast<size_t>(rows * lds), 1.0f, static_cast<uint64_t>(rows * 100 + cols));
      const auto scale = randn(static_cast<size_t>(rows), 1.0f, 7);
      std::vector<float> plain(static_cast<size_t>(cols * ldd), -1.0f), scaled = plain, dual = plain,
                         dual_scaled = plain;
      detail::with_path(GetParam(), [&](auto path) {
        constexpr Path P = decltype(path)::value;
        detail::transpose<P>(rows, cols, src.data(), lds, plain.data(), ldd);
        detail::transpose<P>(rows, cols, src.data(), lds, scaled.data(), ldd, scale.data());
        detail::transpose_dual<P>(rows, cols, src.data(), lds, dual.data(), dual_scaled.data(), ldd, scale.data());
      });
      int64_t wrong = 0;
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < ldd; ++r) {
          const size_t at = static_cast<size_t>(c * ldd + r);
          // Inside: the transposed (and row-scaled) entry, bit for bit; the padding past `rows` untouched.
          const float x = r < rows ? src[static_cast<size_t>(r * lds + c)] : -1.0f;
          const float sx = r < rows ? scale[static_cast<size_t>(r)] * x : -1.0f;
          wrong += (plain[at] != x) + (scaled[at] != sx) + (dual[at] != x) + (dual_scaled[at] != sx);
        }
      EXPECT_EQ(wrong, 0) << rows << " x " << cols;
    }
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Pack);

}  // namespace
}  // namespace lightning::test
