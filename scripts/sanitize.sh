#!/usr/bin/env bash
# Builds the test suite with clang under AddressSanitizer + UndefinedBehaviorSanitizer (the widest ISA
# configuration the CPU runs, whose binary tests the scalar and every SIMD path) and a small ThreadSanitizer configuration, and
# runs them; any sanitizer report fails the run (-fno-sanitize-recover, halt_on_error).
# Usage: scripts/sanitize.sh [asan|tsan]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/per_core.sh
scripts/deps.sh clang cmake ninja-build libgtest-dev
steps=("$@")
((${#steps[@]})) || steps=(asan tsan)
# Only the test suite: no benchmarks, examples, timing tools or install rules. Line tables are all a
# sanitizer report needs for file:line stacks (full -g costs about a fifth more compile time).
common=(-G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo
        "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -gline-tables-only -DNDEBUG" -DLIGHTNING_BUILD_BENCHMARKS=OFF
        -DLIGHTNING_BUILD_EXAMPLES=OFF -DLIGHTNING_BUILD_TOOLS=OFF -DLIGHTNING_BUILD_TUNE=OFF -DLIGHTNING_INSTALL=OFF
        -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)  # the MPI tests run in scripts/test.sh; not here
# The register tiles' loops as written, not unrolled by pragma (kernels/simd_tile.hpp): the same
# accesses, checked, in about half the compile time; the Release suite of scripts/test.sh runs the
# unrolled tiles.
no_unroll=-DLIGHTNING_NO_UNROLL
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
for step in "${steps[@]}"; do
  case $step in
    asan)
      # The whole suite, sanitised, in the widest configuration this CPU runs: its binary tests every
      # compiled path (scalar, avx2 and avx512 in the avx512 build), so one build covers every kernel.
      widest=avx2
      if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo &&
         grep -qw avx512_bf16 /proc/cpuinfo; then
        widest=avx512
      fi
      cmake -S . -B build/asan "${common[@]}" -DLIGHTNING_TEST_CONFIGS=$widest \
        -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer $no_unroll" >/dev/null
      cmake --build build/asan --parallel "$(nproc)"
      # One binary holds the suite: its tests run in one gtest shard per core, each shard's output
      # printed when it fails (exit 77: the CPU lacks the configuration, which the choice above rules out).
      shard() { GTEST_TOTAL_SHARDS=$(nproc) GTEST_SHARD_INDEX=$1 "build/asan/tests/lightning_tests_$widest"; }
      show_shard() { if (($2 == 0)); then tail -n 1 "build/asan/shard$1.log"; else cat "build/asan/shard$1.log"; fi; }
      per_core build/asan/shard shard show_shard
      ;;
    tsan)
      # The concurrency tests (many callers, with and without the library's own threads) and the
      # splits along the sequence (forward and backward, each thread its pieces) on the best path.
      cmake -S . -B build/tsan "${common[@]}" -DLIGHTNING_TEST_CONFIGS=avx2 \
        -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer $no_unroll" >/dev/null
      cmake --build build/tsan --parallel "$(nproc)" --target lightning_tests_avx2
      build/tsan/tests/lightning_tests_avx2 --gtest_filter='*Concurrent*:*Threads*:*SequenceParallel*'
      ;;
    *) echo "unknown step: $step (asan or tsan)" >&2; exit 2 ;;
  esac
done
