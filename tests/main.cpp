// Test main: skips the whole binary (exit 77, which ctest reports as skipped) when the CPU cannot
// run the instruction set it was compiled for, instead of dying on an illegal instruction.
#include <gtest/gtest.h>

#include <cstdio>

#include "lightning/config.hpp"

int main(int argc, char** argv) {
#if LIGHTNING_HAVE_AVX512
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl")) {
    std::puts("SKIPPED: this CPU has no AVX-512 F/BW/VL; the avx512 build cannot run here.");
    return 77;
  }
#elif LIGHTNING_HAVE_AVX2
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::puts("SKIPPED: this CPU has no AVX2/FMA; the avx2 build cannot run here.");
    return 77;
  }
#endif
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
