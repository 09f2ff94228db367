// What a vector store costs beside FMAs: a loop of 24 independent FMAs on zmm0-23 (or ymm0-11 twice
// over for AVX2), then the same loop with N stores of those registers into 1.5 KB of L1 added, and
// the stores alone. Times are given per iteration and in FMA slots, the FMA-only loop's time over its
// 24 FMAs: if stores and FMAs overlapped, N stores would cost nothing until they outlast the FMAs.
// On the Zen 4 of docs/performance-history.md (2026-12-08 from 04:44 UTC) they add: each zmm store
// about 1.9 slots, which is what a state update's tile end costs at small blocks.
//
//   ./build/tools/tools/store_cost [iterations, default 50000000]
#include <cstdio>
#include <cstdlib>

#include "cpu_seconds.hpp"

#if !defined(__x86_64__)
int main() {
  std::puts("store_cost: x86-64 only");
  return 0;
}
#else

namespace {

#define LT_F(r, i) "vfmadd231ps %%" #r "30, %%" #r "31, %%" #r #i "\n\t"
#define LT_S(r, i, off) "vmovaps %%" #r #i ", " #off "(%[b])\n\t"
#define LT_FMAS(r)                                                                                          \
  LT_F(r, 0) LT_F(r, 1) LT_F(r, 2) LT_F(r, 3) LT_F(r, 4) LT_F(r, 5) LT_F(r, 6) LT_F(r, 7) LT_F(r, 8)       \
  LT_F(r, 9) LT_F(r, 10) LT_F(r, 11) LT_F(r, 12) LT_F(r, 13) LT_F(r, 14) LT_F(r, 15) LT_F(r, 16)           \
  LT_F(r, 17) LT_F(r, 18) LT_F(r, 19) LT_F(r, 20) LT_F(r, 21) LT_F(r, 22) LT_F(r, 23)
#define LT_S6(r, a, b, c, d, e, f, o) \
  LT_S(r, a, o) LT_S(r, b, o + 64) LT_S(r, c, o + 128) LT_S(r, d, o + 192) LT_S(r, e, o + 256) LT_S(r, f, o + 320)
#define LT_S12(r) LT_S6(r, 0, 1, 2, 3, 4, 5, 0) LT_S6(r, 6, 7, 8, 9, 10, 11, 384)
#define LT_S24(r) LT_S12(r) LT_S6(r, 12, 13, 14, 15, 16, 17, 768) LT_S6(r, 18, 19, 20, 21, 22, 23, 1152)

#define LT_CLOBBERS \
  "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
      "xmm12", "xmm13", "xmm14", "xmm15"
#define LT_Z(i) "vpxord %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define LT_YF(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
// 24 ymm FMAs are 12 chains twice (AVX2 has 16 registers).
#define LT_YFMAS LT_YF(0) LT_YF(1) LT_YF(2) LT_YF(3) LT_YF(4) LT_YF(5) LT_YF(6) LT_YF(7) LT_YF(8) LT_YF(9) LT_YF(10) LT_YF(11)

// Every register a loop uses starts at zero (operands and sums stay 0: no denormals). Registers
// 16-31 are not named as clobbered (that needs -mavx512f for the whole file); nothing the compiler
// keeps lives in them, as this file is not compiled for AVX-512.
void zero_zmm() {
  asm volatile(LT_Z(0) LT_Z(1) LT_Z(2) LT_Z(3) LT_Z(4) LT_Z(5) LT_Z(6) LT_Z(7) LT_Z(8) LT_Z(9) LT_Z(10) LT_Z(11)
                   LT_Z(12) LT_Z(13) LT_Z(14) LT_Z(15) LT_Z(16) LT_Z(17) LT_Z(18) LT_Z(19) LT_Z(20) LT_Z(21)
                       LT_Z(22) LT_Z(23) LT_Z(30) LT_Z(31)::
                           : LT_CLOBBERS);
}
void zero_ymm() { asm volatile("vzeroall" ::: LT_CLOBBERS); }

/** CPU seconds of `iterations` runs of body, the registers zeroed inside the timed call (no call between). */
template <class Zero, class Body>
double seconds(long iterations, Zero zero, Body body) {
  return lightning::tools::cpu_seconds([&] {
    zero();
    for (long i = 0; i < iterations; ++i) body();
  });
}

// A loop of the tables below: the asm `text` run `n` times against the buffer `b`.
#define LT_LOOP(zero, text) \
  [](long n, float* b) { return seconds(n, zero, [b] { asm volatile(text::[b] "r"(b) : LT_CLOBBERS); }); }

struct Loop {
  const char* name;
  double (*seconds)(long iterations, float* buf);
};

/** Two rounds of the loops, each row in FMA slots of the first loop (24 FMAs alone) of its round. */
template <int N>
void rows(const Loop (&loops)[N], long iterations, float* buf) {
  for (int round = 0; round < 2; ++round) {
    const double slot = loops[0].seconds(iterations, buf) / 24;
    for (const Loop& loop : loops) {
      const double t = &loop == loops ? 24 * slot : loop.seconds(iterations, buf);
      std::printf("| %-30s | %8.3f | %6.1f |\n", loop.name, t / iterations * 1e9, t / slot);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 50000000;
  if (iterations <= 0) {
    std::fprintf(stderr, "store_cost: iterations must be positive, got %s\n", argv[1]);
    return 1;
  }
  alignas(64) static float buf[24 * 16];
  std::printf("| loop, per iteration | ns | FMA slots |\n|---|---:|---:|\n");
  if (__builtin_cpu_supports("avx512f")) {
    const Loop zmm[] = {{"24 zmm FMAs", LT_LOOP(zero_zmm, LT_FMAS(zmm))},
                        {"24 zmm FMAs + 6 zmm stores", LT_LOOP(zero_zmm, LT_FMAS(zmm) LT_S6(zmm, 0, 1, 2, 3, 4, 5, 0))},
                        {"24 zmm FMAs + 12 zmm stores", LT_LOOP(zero_zmm, LT_FMAS(zmm) LT_S12(zmm))},
                        {"24 zmm FMAs + 24 zmm stores", LT_LOOP(zero_zmm, LT_FMAS(zmm) LT_S24(zmm))},
                        {"24 zmm stores", LT_LOOP(zero_zmm, LT_S24(zmm))}};
    rows(zmm, iterations, buf);
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    const Loop ymm[] = {{"24 ymm FMAs", LT_LOOP(zero_ymm, LT_YFMAS LT_YFMAS)},
                        {"24 ymm FMAs + 12 ymm stores", LT_LOOP(zero_ymm, LT_YFMAS LT_S12(ymm) LT_YFMAS)},
                        {"24 ymm FMAs + 24 ymm stores", LT_LOOP(zero_ymm, LT_YFMAS LT_S12(ymm) LT_YFMAS LT_S12(ymm))},
                        {"24 ymm stores", LT_LOOP(zero_ymm, LT_S12(ymm) LT_S12(ymm))}};
    rows(ymm, iterations, buf);
  }
}
#endif
