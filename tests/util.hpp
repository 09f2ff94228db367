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

/** x rounded to the storage type T (nearest even), and a T tensor widened back to floats. */
template <class T>
std::vector<T> to_storage(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = detail::from_float<T>(x[i]);
  return y;
}
template <class T>
std::vector<float> to_floats(const std::vector<T>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = detail::to_float(x[i]);
  return y;
}

/** Normal entries with standard deviation `sd`, reproducible from `seed`. */
inline std::vector<float> randn(size_t count, float sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> x(count);
  for (auto& e : x) e = dist(rng);
  return x;
}

/**
 * q [B, H, n, d_k], k [B, G, n, d_k], v [B, G, n, d_v] and an initial state [B, G, d_k, d_v], random
 * and reproducible from `seed` and n; q and k scaled so that q . k is O(1).
 */
struct RandomProblem {
  int64_t B, H, G, n, dk, dv;
  std::vector<float> q, k, v, s0;
  RandomProblem(int64_t B_, int64_t H_, int64_t G_, int64_t n_, int64_t dk_, int64_t dv_, uint64_t seed)
      : B(B_), H(H_), G(G_), n(n_), dk(dk_), dv(dv_) {
    const float sd = 1.0f / std::sqrt(std::sqrt(static_cast<float>(dk)));
    q = randn(static_cast<size_t>(B * H * n * dk), sd, seed + n);
    k = randn(static_cast<size_t>(B * G * n * dk), sd, seed + 1 + n);
    v = randn(static_cast<size_t>(B * G * n * dv), 1.0f, seed + 2 + n);
    s0 = randn(static_cast<size_t>(B * G * dk * dv), 0.3f, seed + 3);
  }
  View<const float> qv() const { return bhnd<const float>(q.data(), B, H, n, dk); }
  View<const float> kv() const { return bhnd<const float>(k.data(), B, G, n, dk); }
  View<const float> vv() const { return bhnd<const float>(v.data(), B, G, n, dv); }
  View<const float> s0v() const { return state_view(static_cast<const float*>(s0.data()), B, G, dk, dv); }
  /** Tokens [t0, t0 + len) of a [B, heads, n, d] tensor, as a view into the whole. */
  template <class T>
  View<T> piece(T* x, int64_t heads, int64_t d, int64_t t0, int64_t len) const {
    return View<T>(x + t0 * d, B, heads, len, d, heads * n * d, n * d, d);
  }
};

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

/** Sets one of the library's tunable variables (detail::stream_min_bytes, ...) for a scope. */
template <class T>
class ScopedSetting {
 public:
  ScopedSetting(T& setting, T value) : setting_(setting), saved_(setting) { setting_ = value; }
  ~ScopedSetting() { setting_ = saved_; }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;

 private:
  T& setting_;
  T saved_;
};

/** Value-parameterised suites run once per compiled path. */
inline std::string path_param_name(const ::testing::TestParamInfo<Path>& info) { return path_name(info.param); }

}  // namespace lightning::test

#define LIGHTNING_INSTANTIATE_FOR_PATHS(suite) \
  INSTANTIATE_TEST_SUITE_P(Paths, suite, ::testing::ValuesIn(::lightning::compiled_paths), \
                           ::lightning::test::path_param_name)
