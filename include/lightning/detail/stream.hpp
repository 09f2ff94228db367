// Which outputs are written with non-temporal (streaming) stores, and the fence that ends them.
#pragma once

#include <cstdint>
#include <type_traits>

#include "lightning/config.hpp"
#include "lightning/types.hpp"
#if LIGHTNING_HAVE_AVX2
#include <immintrin.h>
#endif

namespace lightning::detail {

/**
 * Outputs smaller than this many bytes keep ordinary stores: a reader soon after finds them in
 * cache. A variable, so that the tests can stream small outputs.
 */
inline int64_t stream_min_bytes = int64_t{8} << 20;

/**
 * Whether the avx512 block loops write x's rows with non-temporal stores: fp32 rows that all start
 * 64-byte lines (the data and every stride), at least stream_min_bytes in all. Such an output is
 * written once, by whole lines, and not read back, so fetching its lines before the writes (the
 * read-for-ownership of an ordinary store, or the loops' prefetchw) is traffic for nothing: on Zen 4
 * (d = 128, n = 16384, heads 8, old/new alternated) the forward took 0.95-0.97x its time streaming
 * o, and the backward 0.97-1.00x streaming dQ, dK and dV. The avx2 tiles write rows of 96 bytes,
 * half lines that a streaming store would send out alone, and measured no gain (0.99-1.00x): only
 * avx512 streams.
 */
template <Path P, class T>
bool streams(const View<T>& x) {
  if constexpr (P != Path::avx512 || !std::is_same_v<T, float>) {
    return false;
  } else {
    const auto line = [](int64_t floats) { return floats % 16 == 0; };
    return !x.absent() && reinterpret_cast<std::uintptr_t>(x.data) % 64 == 0 && line(x.batch_stride) &&
           line(x.head_stride) && line(x.seq_stride) && x.elements() * int64_t{4} >= stream_min_bytes;
  }
}

/** Orders the streaming stores before whatever follows (another thread's read after the join). */
inline void end_streams() {
#if LIGHTNING_HAVE_AVX2
  _mm_sfence();
#endif
}

}  // namespace lightning::detail
