#!/usr/bin/env bash
# Builds the libFuzzer harness (clang, ASan + UBSan, scalar and AVX2 paths in one binary) and runs it
# from the committed seed corpus fuzz/corpus for a bounded time.
# Usage: scripts/fuzz.sh [seconds] [extra libFuzzer flags]   (default 60 s; e.g. scripts/fuzz.sh 3600 -jobs=2)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh clang
seconds=${1:-60}
shift || true
mkdir -p build/fuzz/corpus build/fuzz/artifacts
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -mavx2 -mfma -Wall -Wextra -Werror -Iinclude fuzz/fuzz_lightning.cpp -o build/fuzz/fuzz_lightning
# New inputs go to build/fuzz/corpus (git-ignored); fuzz/corpus is read too. Crashes land in build/fuzz/artifacts.
set +e
build/fuzz/fuzz_lightning -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=256 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/artifacts/ "$@" build/fuzz/corpus fuzz/corpus 2>&1 |
  grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|NEW_FUNC|^"|dictionary'
status=${PIPESTATUS[0]}
set -e
exit "$status"
