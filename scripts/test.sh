#!/usr/bin/env bash
# Builds every test configuration in Release and runs them all with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh g++ cmake ninja-build libgtest-dev libbenchmark-dev libeigen3-dev libopenmpi-dev openmpi-bin
require_vectors=OFF
[ -d ../shared/vectors ] && require_vectors=ON
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGHTNING_REQUIRE_VECTORS=$require_vectors >/dev/null
cmake --build build/test
ctest --test-dir build/test --output-on-failure -j "$(nproc)"
