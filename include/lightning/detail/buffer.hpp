// The workspace's float buffers, aligned to the cache line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>
#if defined(__has_include)
#if __has_include(<unistd.h>)
#include <unistd.h>
#endif
#endif

namespace lightning::detail {

/**
 * An allocator whose blocks start on a 64-byte line. Every row of a workspace buffer whose stride is
 * a multiple of 16 floats then starts a line too, so no vector load or store of the register tiles
 * splits a line, whatever malloc returned: with the buffers put 16 bytes past a line the forward
 * measured 5% slower at d = 128, and the avx2 backward/forward ratio went from 2.60-2.63 to
 * 2.51-2.54 with this allocator (alternated runs of tools/time_backward).
 */
template <class T>
struct LineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  LineAllocator() noexcept = default;
  template <class U>
  LineAllocator(const LineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const LineAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const LineAllocator<U>&) const noexcept { return false; }
};

/** A float buffer of the workspace: a std::vector whose data() starts a cache line. */
using Floats = std::vector<float, LineAllocator<float>>;

/**
 * The row stride, in floats, of a workspace matrix that register tiles walk down column strip by
 * column strip (the running states S and R): whole cache lines, and an odd number of them. With an
 * even number (d = 128: 8 lines) the rows of a strip fall into a fraction of L1's 64 sets and evict
 * each other before the next row tile reads them again; avx512's fused read-out tile measured 14%
 * faster at d = 128 with the odd stride (hot data, rdtsc, Xeon of family 6 model 207).
 */
inline int64_t walk_stride(int64_t cols) {
  const int64_t lines = (cols + 15) / 16;
  return (lines % 2 == 0 ? lines + 1 : lines) * 16;
}

/**
 * A cache's size in bytes as the C library reports it (glibc: sysconf from CPUID): the L1 data cache
 * (level 1) or the L3 (level 3); 0 for any other level and where it reports none.
 */
inline int64_t reported_cache_bytes([[maybe_unused]] int level) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  if (level != 1 && level != 3) return 0;
  const long n = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
  if (n > 0) return static_cast<int64_t>(n);
#endif
  return 0;
}

/**
 * The L1 data cache's size in bytes (reported_cache_bytes), read once; 32 KiB, the smaller L1 the
 * loops were tuned on, where none is reported.
 */
inline int64_t l1_data_bytes() {
  static const int64_t bytes = [] {
    const int64_t n = reported_cache_bytes(1);
    return n > 0 ? n : int64_t{32768};
  }();
  return bytes;
}

/**
 * Whether the CPU is AMD's (CPUID's vendor, by the compiler's builtin, as tests/main.cpp asks for
 * the ISA extensions); false where that cannot be read. Initialises the builtin's CPU model first,
 * since it may run during static initialisation (avx512_decode_in_256_bits).
 */
inline bool amd_cpu() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
#else
  return false;
#endif
}

}  // namespace lightning::detail
