// Test helpers: random tensors, the relative RMS error of SPEC.md, and each compiled path's name.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "lightning/lightning.hpp"

namespace lightning::test {

/** Normal entries with standard deviation `sd`, reproducible from `seed`. */
inline std::vector<float> randn(size_t count, float sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> x(count);
  for (auto& e : x) e = dist(rng);
  return x;
}

/** sqrt(sum (x - ref)^2 / sum ref^2); infinite when x has a NaN or Inf, so it can never pass. */
template <class X, class R>
double rel_rms(const X& x, const R& ref) {
  EXPECT_EQ(x.size(), ref.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < x.size() && i < ref.size(); ++i) {
    const double xi = static_cast<double>(x[i]);
    if (!std::isfinite(xi)) return INFINITY;
    err += (xi - ref[i]) * (xi - ref[i]);
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  if (norm == 0) return err == 0 ? 0 : INFINITY;
  return std::sqrt(err / norm);
}

/** SPEC.md's bound for fp32 paths with outputs of order 1 and n <= 64K. */
inline constexpr double kFp32Tolerance = 1e-5;

/** Runs `call`, expects lightning::invalid_argument with every fragment in its message. */
template <class Call>
void expect_invalid_argument(Call call, std::initializer_list<const char*> fragments) {
  try {
    call();
    ADD_FAILURE() << "no exception";
  } catch (const lightning::invalid_argument& e) {
    const std::string msg = e.what();
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

/** Value-parameterised suites run once per compiled path. */
inline std::string path_param_name(const ::testing::TestParamInfo<Path>& info) { return path_name(info.param); }

}  // namespace lightning::test

#define LIGHTNING_INSTANTIATE_FOR_PATHS(suite) \
  INSTANTIATE_TEST_SUITE_P(Paths, suite, ::testing::ValuesIn(::lightning::compiled_paths), \
                           ::lightning::test::path_param_name)
