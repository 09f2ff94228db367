// The one place that reads the compiler's instruction-set macros and picks the paths.
#pragma once

#include <array>
#include <cstddef>

// LIGHTNING_FORCE_SCALAR compiles only the portable path, whatever the compiler targets.
#if !defined(LIGHTNING_FORCE_SCALAR) && defined(__AVX2__) && defined(__FMA__)
#define LIGHTNING_HAVE_AVX2 1
#else
#define LIGHTNING_HAVE_AVX2 0
#endif

// The AVX-512 path needs F/BW/VL and, since it is compiled only alongside the AVX2 one, AVX2 + FMA too.
#if LIGHTNING_HAVE_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LIGHTNING_HAVE_AVX512 1
#else
#define LIGHTNING_HAVE_AVX512 0
#endif

// Half-precision storage conversions: F16C (fp16 <-> fp32, 8 lanes) used by the AVX2 path, and
// AVX-512 BF16 (fp32 -> bf16 with round-to-nearest-even) used by the AVX-512 path.
#if !defined(LIGHTNING_FORCE_SCALAR) && defined(__F16C__) && LIGHTNING_HAVE_AVX2
#define LIGHTNING_HAVE_F16C 1
#else
#define LIGHTNING_HAVE_F16C 0
#endif
#if !defined(LIGHTNING_FORCE_SCALAR) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512BF16__)
#define LIGHTNING_HAVE_AVX512BF16 1
#else
#define LIGHTNING_HAVE_AVX512BF16 0
#endif

namespace lightning {

/** An implementation of the kernels. `scalar` is the one path that is always compiled. */
enum class Path {
  automatic,  ///< the best path compiled into this translation unit
  scalar,     ///< portable C++
  avx2,       ///< AVX2 + FMA intrinsics
  avx512,     ///< AVX-512 F/BW/VL intrinsics
};

/** The path `Path::automatic` resolves to. */
inline constexpr Path best_path =
#if LIGHTNING_HAVE_AVX512
    Path::avx512;
#elif LIGHTNING_HAVE_AVX2
    Path::avx2;
#else
    Path::scalar;
#endif

/** True when `p` is compiled into this translation unit (so a call with it will not throw). */
constexpr bool path_compiled(Path p) {
  switch (p) {
    case Path::automatic:
    case Path::scalar: return true;
    case Path::avx2: return LIGHTNING_HAVE_AVX2;
    case Path::avx512: return LIGHTNING_HAVE_AVX512;
  }
  return false;
}

/** A printable name for `p`. */
constexpr const char* path_name(Path p) {
  switch (p) {
    case Path::automatic: return "automatic";
    case Path::scalar: return "scalar";
    case Path::avx2: return "avx2";
    case Path::avx512: return "avx512";
  }
  return "unknown";
}

/** Every concrete path compiled into this translation unit, best last. */
inline constexpr std::array<Path, 1 + LIGHTNING_HAVE_AVX2 + LIGHTNING_HAVE_AVX512> compiled_paths = {
    Path::scalar,
#if LIGHTNING_HAVE_AVX2
    Path::avx2,
#endif
#if LIGHTNING_HAVE_AVX512
    Path::avx512,
#endif
};

}  // namespace lightning
