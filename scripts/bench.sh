#!/usr/bin/env bash
# The benchmark: builds in Release with every path this machine runs, runs the sweep, prints the
# summary and plots time against n. Usage: scripts/bench.sh [--full] [--all-cores] [--time-limit=S]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh g++ cmake ninja-build libbenchmark-dev libeigen3-dev gnuplot-nox
out=build/bench-out
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGHTNING_BUILD_TESTS=OFF \
      -DLIGHTNING_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/bench --target lightning_bench
build/bench/bench/lightning_bench --out="$out" "$@"
gnuplot "$out/plot.gp" && echo "plot: $out/scaling.png"
