// eigen_blocked built with the avx2 path's instruction set (CMakeLists.txt adds -mno-avx512f to the
// bench's -march=native for this file): where -march=native has AVX-512, the eigen_blocked row uses
// it, and issue 8 compares each path with an Eigen built with that path's flags. Eigen's namespace
// and this copy's are renamed, so no inline function is shared with the AVX-512 translation unit.
#if defined(__AVX512F__)
#error "eigen_avx2.cpp must be built without AVX-512"
#endif
#define Eigen EigenAvx2
#define LIGHTNING_BENCH_EIGEN_NS bench_eigen_avx2
#include "eigen_blocked.hpp"

void eigen_blocked_head_avx2(const float* q, const float* k, const float* v, float* o, int64_t n, int64_t d,
                             float slope) {
  bench_eigen_avx2::eigen_blocked_head(q, k, v, o, n, d, slope);
}
