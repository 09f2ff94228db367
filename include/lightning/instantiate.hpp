// Build time for projects that include lightning in many translation units.
//
// Every translation unit that calls an entry point compiles that entry point's kernels for every
// compiled path (a few seconds to tens of seconds at -O3). To compile them once:
//   - define LIGHTNING_EXTERN_TEMPLATES in every translation unit (e.g. target_compile_definitions):
//     the headers then declare the entry points' instantiations for float, bf16 and fp16 extern;
//   - in one translation unit (or one per storage type, to compile them in parallel) write
//       #include <lightning/lightning.hpp>
//       LIGHTNING_INSTANTIATE(float)   // and/or lightning::bf16, lightning::fp16
//     at global scope. A storage type used but not instantiated fails at link time.
// All translation units must be compiled with the same instruction-set flags (the same compiled
// paths), as for any inline code. Without LIGHTNING_EXTERN_TEMPLATES nothing changes.
#pragma once

#include <cstdint>
#include <vector>

#include "lightning/attention.hpp"
#include "lightning/backward.hpp"
#include "lightning/config.hpp"
#include "lightning/storage.hpp"
#include "lightning/varlen.hpp"

// The entry points' instantiations for storage type T on path P, and forward_split's (the
// sequence-parallel forward, which the tests call directly), each preceded by `prefix` (`extern`
// for declarations, nothing for definitions).
#define LIGHTNING_DETAIL_ENTRY_POINTS(prefix, P, T)                                                                  \
  prefix template void lightning::detail::forward_all<lightning::Path::P, T>(                                       \
      const lightning::detail::ForwardArgs<T>&, int);                                                               \
  prefix template void lightning::detail::decode_all<lightning::Path::P, T>(                                        \
      const lightning::detail::DecodeArgs<T>&, int);                                                                \
  prefix template void lightning::detail::backward_all<lightning::Path::P, T>(                                      \
      const lightning::detail::BackwardArgs<T>&, int, const int64_t*, int64_t);                                     \
  prefix template void lightning::detail::forward_varlen_all<lightning::Path::P, T>(                                \
      const lightning::detail::ForwardArgs<T>&, const int64_t*, int64_t, int);                                      \
  prefix template void lightning::detail::forward_split<lightning::Path::P, T>(                                     \
      const lightning::detail::ForwardArgs<T>&, int, const std::vector<lightning::detail::Piece>&);

#if LIGHTNING_HAVE_AVX2
#define LIGHTNING_DETAIL_ENTRY_POINTS_AVX2(prefix, T) LIGHTNING_DETAIL_ENTRY_POINTS(prefix, avx2, T)
#else
#define LIGHTNING_DETAIL_ENTRY_POINTS_AVX2(prefix, T)
#endif
#if LIGHTNING_HAVE_AVX512
#define LIGHTNING_DETAIL_ENTRY_POINTS_AVX512(prefix, T) LIGHTNING_DETAIL_ENTRY_POINTS(prefix, avx512, T)
#else
#define LIGHTNING_DETAIL_ENTRY_POINTS_AVX512(prefix, T)
#endif

// Every compiled path's instantiations for storage type T.
#define LIGHTNING_DETAIL_ALL_PATHS(prefix, T)        \
  LIGHTNING_DETAIL_ENTRY_POINTS(prefix, scalar, T)   \
  LIGHTNING_DETAIL_ENTRY_POINTS_AVX2(prefix, T)      \
  LIGHTNING_DETAIL_ENTRY_POINTS_AVX512(prefix, T)

/** Compiles the kernels of every entry point for storage type T (float, lightning::bf16 or lightning::fp16). */
#define LIGHTNING_INSTANTIATE(T) LIGHTNING_DETAIL_ALL_PATHS(, T)

#ifdef LIGHTNING_EXTERN_TEMPLATES
LIGHTNING_DETAIL_ALL_PATHS(extern, float)
LIGHTNING_DETAIL_ALL_PATHS(extern, lightning::bf16)
LIGHTNING_DETAIL_ALL_PATHS(extern, lightning::fp16)
#endif
