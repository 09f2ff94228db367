// 16 independent chains acc = a * b + acc on one ISA's vectors, so that only the FMA units'
// throughput limits the loop: the peak the benchmark's rooflines divide by, and the load
// thread_speedup runs on 1 thread and on N at once. The accumulator is the addend (a * b + acc):
// with it as a multiplicand Zen's FMA runs at half rate.
#pragma once

#include <cmath>
#include <cstdint>

#include "lightning/config.hpp"
#include "lightning/types.hpp"

#if LIGHTNING_HAVE_AVX2 || LIGHTNING_HAVE_AVX512
#include <immintrin.h>
#endif

namespace lightning::tools {

/** What the FMA loop needs of an ISA: its vector type and lanes, broadcast, fused multiply-add, first lane. */
template <Path P>
struct Simd;
template <>
struct Simd<Path::scalar> {
  using Vec = float;
  static constexpr int kLanes = 1;
  static float set1(float x) { return x; }
  static float fmadd(float a, float b, float c) { return std::fma(a, b, c); }
  static float first(float x) { return x; }
};
#if LIGHTNING_HAVE_AVX2
template <>
struct Simd<Path::avx2> {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static __m256 set1(float x) { return _mm256_set1_ps(x); }
  static __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  static float first(__m256 x) { return _mm256_cvtss_f32(x); }
};
#endif
#if LIGHTNING_HAVE_AVX512
template <>
struct Simd<Path::avx512> {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static __m512 set1(float x) { return _mm512_set1_ps(x); }
  static __m512 fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
  static float first(__m512 x) { return _mm512_cvtss_f32(x); }
};
#endif

constexpr int kFmaChains = 16;

/** FLOPs that fma_chains<P>(iters) does. */
template <Path P>
constexpr double fma_chain_flops(int64_t iters) {
  return 2.0 * Simd<P>::kLanes * kFmaChains * static_cast<double>(iters);
}

/** `iters` steps of the chains; returns the sum of their first lanes, for the caller to keep alive. */
template <Path P>
float fma_chains(int64_t iters) {
  using S = Simd<P>;
  typename S::Vec acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = S::set1(static_cast<float>(i));
  volatile float va = 0.9999f, vb = 1e-6f;  // not constants, so a * b is not folded away
  const auto a = S::set1(va), b = S::set1(vb);
  for (int64_t it = 0; it < iters; ++it)
    for (auto& x : acc) x = S::fmadd(a, b, x);
  float sum = 0;
  for (auto& x : acc) sum += S::first(x);
  return sum;
}

}  // namespace lightning::tools
