#!/usr/bin/env bash
# Builds the libFuzzer harness (clang, ASan + UBSan, every path the CPU runs in one binary) and runs it
# from the committed seed corpus fuzz/corpus for a bounded time.
# Usage: scripts/fuzz.sh [seconds] [extra libFuzzer flags]   (default 60 s; e.g. scripts/fuzz.sh 3600 -jobs=2)
# LIGHTNING_FUZZ_ONLY=<index in kEntryPoints> (environment) spends the run on one entry point.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/per_core.sh
scripts/deps.sh clang
seconds=${1:-60}
shift || true
mkdir -p build/fuzz/corpus build/fuzz/artifacts
# Every path this CPU runs: scalar and AVX2 (+ F16C), and AVX-512 (+ BF16) where the CPU has it.
isa=(-mavx2 -mfma -mf16c)
if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo &&
   grep -qw avx512_bf16 /proc/cpuinfo; then
  isa+=(-mavx512f -mavx512bw -mavx512vl -mavx512bf16)
fi
# LIGHTNING_NO_UNROLL: the register tiles' loops as written (kernels/simd_tile.hpp), as in scripts/sanitize.sh;
# one translation unit on one core, it compiles in 76 s rather than 161 s (Zen 4).
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -DLIGHTNING_NO_UNROLL "${isa[@]}" -Wall -Wextra -Werror -Iinclude fuzz/fuzz_lightning.cpp -o build/fuzz/fuzz_lightning
# New inputs go to build/fuzz/corpus (git-ignored); fuzz/corpus is read too. Crashes land in build/fuzz/artifacts.
flags=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=256 -print_final_stats=1
       -artifact_prefix=build/fuzz/artifacts/)
quiet() { grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|NEW_FUNC|^"|dictionary'; }
jobs=$(nproc)
set +e
if (($# == 0 && jobs > 1)); then
  # Replaying the seed corpus takes longer than the fuzzing on a slow machine (3 min for 2,081 inputs
  # on one core), so without extra flags one process per core replays its share of it, then fuzzes.
  for ((i = 0; i < jobs; ++i)); do rm -rf "build/fuzz/seeds$i" && mkdir -p "build/fuzz/seeds$i"; done
  i=0
  for f in fuzz/corpus/*; do
    ln -s "$PWD/$f" "build/fuzz/seeds$((i % jobs))/"
    i=$((i + 1))
  done
  fuzz_job() { build/fuzz/fuzz_lightning "${flags[@]}" build/fuzz/corpus "build/fuzz/seeds$1"; }
  show_job() { echo "--- fuzzer process $1 of $jobs"; quiet <"build/fuzz/job$1.log"; }
  per_core build/fuzz/job fuzz_job show_job
  status=$?
else
  build/fuzz/fuzz_lightning "${flags[@]}" "$@" build/fuzz/corpus fuzz/corpus 2>&1 | quiet
  status=${PIPESTATUS[0]}
fi
set -e
exit "$status"
