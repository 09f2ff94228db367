#!/bin/sh
# Builds tools/ab for two source trees and runs it: old and new forward and backward in one process,
# alternated pair by pair.
#   tools/ab/ab.sh OLD_TREE NEW_TREE avx2|avx512 [pairs] [n] [heads] [d]
# A tree is a directory with include/lightning, e.g. `git worktree add /tmp/old HEAD~1`.
# The two sides are two translation units whose code layouts differ: an unchanged forward has shown
# new/old medians of 0.993-1.007, so a difference below about 0.7% is not resolved. On a noisy host
# (per-pair quartiles +-2-3%) one head and 300-400 pairs, and the fastest tenth of each side's calls
# (the last line), resolved about 0.5%: `tools/ab/ab.sh OLD NEW avx2 400 16384 1`.
# On the Zen 5 EPYC (family 26 model 2) the first-linked side's forward ran about 7% slow for a whole
# process in some runs (forward new/old about 0.93, with one tree on both sides too; never with
# `setarch -R`): rerun such a run rather than read it (docs/performance-history.md, 2026-12-07).
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OLD_TREE NEW_TREE avx2|avx512 [pairs] [n] [heads] [d]" >&2; exit 2; }
old=$1 new=$2 isa=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
out=${AB_BUILD:-/tmp/lightning-ab}
mkdir -p "$out"
case $isa in
  avx2) flags="-mavx2 -mfma -mf16c" ;;
  avx512) flags="-mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma -mf16c" ;;
  *) echo "isa: avx2 or avx512" >&2; exit 2 ;;
esac
cxx="${CXX:-g++} -O3 -std=c++17 -DNDEBUG $flags"
$cxx -DLIGHTNING_AB_NS=lightning_old -I"$old/include" -I"$here" -c "$here/ab_side.cpp" -o "$out/old.o" & a=$!
$cxx -DLIGHTNING_AB_NS=lightning_new -I"$new/include" -I"$here" -c "$here/ab_side.cpp" -o "$out/new.o" & b=$!
$cxx -I"$new/include" -I"$here" -I"$here/.." -c "$here/ab_main.cpp" -o "$out/main.o"
wait $a
wait $b
$cxx "$out/main.o" "$out/old.o" "$out/new.o" -o "$out/ab" -lpthread
"$out/ab" "$isa" "$@"
