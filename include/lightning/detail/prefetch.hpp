// Software prefetch of the next blocks' rows, spread over the register tiles of the current block
// (the forward's and the backward's block loops).
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <type_traits>

#include "lightning/detail/buffer.hpp"
#include "lightning/types.hpp"

namespace lightning::detail {

/**
 * A hint to fetch p's cache line: for a write (prefetchw), or for a read into L1 (prefetcht0) or
 * only into L2 (prefetcht1). GCC 12 deletes loops of __builtin_prefetch, hence the asm.
 */
inline void prefetch_line(const char* p, bool write, bool into_l1 = false) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (write)
    asm volatile("prefetchw %0" : : "m"(*p));
  else if (into_l1)
    asm volatile("prefetcht0 %0" : : "m"(*p));
  else
    asm volatile("prefetcht1 %0" : : "m"(*p));
#else
  if (write)
    __builtin_prefetch(p, 1, 2);
  else if (into_l1)
    __builtin_prefetch(p, 0, 3);
  else
    __builtin_prefetch(p, 0, 2);
#endif
}

/**
 * Asks rows x cols floats from p (row stride ld) into L1, for a write with `write`: data about to be
 * touched whose lines an earlier Prefetcher request has probably seen evicted from L1 since.
 */
inline void prefetch_rows_into_l1(const float* p, int64_t rows, int64_t cols, int64_t ld, bool write) {
  if (cols <= 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    const auto first = reinterpret_cast<std::uintptr_t>(p + r * ld) & ~std::uintptr_t{63};
    const auto last = reinterpret_cast<std::uintptr_t>(p + r * ld + cols - 1);
    for (std::uintptr_t line = first; line <= last; line += 64)
      prefetch_line(reinterpret_cast<const char*>(line), write, true);
  }
}

/** prefetch_line as a callable: what Prefetcher::step asks each line with unless told otherwise. */
struct PrefetchLine {
  void operator()(const char* p, bool write, bool into_l1) const { prefetch_line(p, write, into_l1); }
};

/**
 * How many blocks ahead the block loops ask for rows (the forward, and both passes of the backward,
 * pass 2 towards lower addresses). Two until 2026-12-04; on Zen 4 (KVM, avx2, d = 128, n = 16384,
 * one head, old and new alternated, 300 pairs) one block ahead took 0.982x the forward's time, and
 * with pass 2's requests descending (Prefetcher::step) the backward took 0.979x; on avx512 0.994x
 * and 0.979x. A block at d = 128 runs for tens of microseconds, far longer than a memory access.
 */
inline constexpr int64_t kBlocksAhead = 1;

/**
 * How many dependent integer multiplies (3 cycles each) separate two of the Prefetcher's requests
 * (Prefetcher::pace): d_k d_v / 4096, from 1 to 4, so about 13 cycles between requests at d = 128
 * and 4 at d = 64, where a tight loop had issued one or two per cycle. The more arithmetic a block
 * does per line it asks for, the wider the requests can be spaced. On the Intel Xeon of family 6
 * model 167 (tools/ab, g++ 12, n = 16384, heads 8, 20-30 pairs, the same bits; backward and forward
 * new/old against no spacing), at d = 128: 1 multiply avx2 0.926 and 0.973, avx512 0.986 and 0.954;
 * 2 avx2 0.915 and 0.945, avx512 0.976 and 0.895; 3 avx2 0.924 and 0.940, avx512 0.960 and 0.876;
 * 4 avx2 0.916 and 0.932, avx512 0.955 and 0.881; 8 avx2 0.973 and 0.974, avx512 1.001 and 0.922.
 * At d = 64: 1 avx2 0.965 and 0.991, avx512 0.945 and 0.997; 2 avx2 0.959 and 1.019, avx512 0.973
 * and 1.015; 4 avx2 0.976 and 1.024, avx512 0.918 and 1.076. Spacing the requests with loads instead
 * (two volatile reads per request) gained as much on some code layouts and nothing on others; a
 * multiply's latency does not depend on the layout. The tiles after a step do not wait on its chain.
 * The scalar path's requests are not spaced (time_backward 16384 8 128 3 0 scalar, two runs: forward
 * 0.760-0.769 s and backward 2.13-2.14 s unspaced, 0.775-0.790 s and 2.16-2.17 s at 4 multiplies).
 * Nor are they on AMD's CPUs, where the spacing cost time: on the Zen 4 EPYC of family 25 model 17
 * (tools/ab, n = 16384, heads 8, 30 pairs, the same bits; backward and forward unspaced over spaced,
 * this rule against 4 multiplies at d = 128 and 1 at d = 64) avx2 0.9835 and 0.9930, 0.9834 and
 * 0.9957, avx512 0.9845 and 0.9790 at d = 128, avx512 0.9934 and 0.9889 at d = 64 (with the count
 * from an environment variable, at d = 128 on avx2: 3 multiplies 0.9899 and 1.0003, 2 0.9840 and
 * 0.9941, 1 0.9896 and 0.9888, none 0.9810 and 0.9867; at d = 64 none 0.9935 and 0.9977); on the
 * Zen 5 EPYC of family 26 model 2, d = 128: avx2 0.995 and 0.996, avx512 1.001 and 0.983.
 */
inline int pace_for(Path path, int64_t dk, int64_t dv) {
  static const bool amd = amd_cpu();
  return path == Path::scalar || amd ? 0 : static_cast<int>(std::clamp<int64_t>(dk * dv / 4096, 1, 4));
}

/**
 * Makes `offset`, the next request's offset, wait Multiplies dependent multiplies (x86-64 GCC and
 * clang), written out: as a loop over a run-time count (a compare and a branch per multiply) the
 * avx512 backward took longer than with no spacing at all (time_backward, d = 128, heads 8, three
 * runs: 0.226-0.232 s against 0.204-0.212 s; written out 0.189-0.206 s).
 */
template <int Multiplies>
[[gnu::always_inline]] inline void pace_request(int64_t& offset) {
#if defined(__GNUC__) && defined(__x86_64__)
  if constexpr (Multiplies > 0) {
    asm volatile("imul $1, %0, %0" : "+r"(offset));
    pace_request<Multiplies - 1>(offset);
  }
#else
  (void)offset;
#endif
}

/**
 * A later block's rows of the inputs and outputs, asked into cache a few lines at a time between
 * register tiles: a block's inputs are touched once per block, so the hardware prefetcher, seeing each stream
 * pause for the whole block's arithmetic, leaves every block's first touch waiting on memory; asked
 * all at once, the requests queue behind each other and stall the loop that issues them, and even a
 * tile's share of them back to back cost time (pace_for): they leave spaced by `pace`.
 */
struct Prefetcher {
  struct Stream {
    const char* row;
    int64_t stride, lines;
    bool write;
  };
  Stream streams[4 * 64] = {};
  int count = 0, at = 0, per_tile = 1;
  int64_t row = 0, line = 0, rows = 0;
  /**
   * Reads asked into L1 rather than L2: on Zen 4 the SIMD paths' forward took 0.94-0.98x its time
   * that way and the backward 0.98-1.00x (d = 128; the forward at d = 64 0.96-0.97x), where the
   * scalar path, whose blocks of 64 rows are two to four times the L1's 32 KiB ahead of slow tiles,
   * took 1.3-1.7x as long in the backward. The block loops set it per path.
   */
  bool into_l1 = false;
  /** The multiplies each request waits before the next one leaves (pace_for; 0: none). The block loops set it. */
  int pace = 0;
  /**
   * Adds x's rows from (b, h, t), for the rows given to start() (none when that was 0, nor when x
   * has no columns: step() could not finish a stream of no lines).
   */
  template <class T>
  void add(const View<T>& x, int64_t b, int64_t h, int64_t t, bool write) {
    if (rows > 0) add_rows(x.row(b, h, t), x.seq_stride, x.dim, write);  // no row of a block that is not there
  }
  /** Adds rows of `cols` elements from `first`, row stride `ld` elements, as add (none when cols <= 0). */
  template <class T>
  void add_rows(const T* first, int64_t ld, int64_t cols, bool write) {
    if (rows > 0 && cols > 0 && count < static_cast<int>(std::size(streams)))
      streams[count++] = {reinterpret_cast<const char*>(first), ld * static_cast<int64_t>(sizeof(T)),
                          (cols * static_cast<int64_t>(sizeof(T)) + 63) / 64, write};
  }
  /** Forgets the streams; those added next start at their row t and run for m rows (m <= 0: none). */
  void start(int64_t m) { count = 0, at = 0, row = 0, line = 0, rows = m > 0 ? m : 0; }
  /** Spreads the added streams' lines over about `tiles` calls of tile(). */
  void spread(int64_t tiles) {
    int64_t lines = 0;
    for (int i = 0; i < count; ++i) lines += streams[i].lines * rows;
    per_tile = static_cast<int>(lines / (tiles > 0 ? tiles : 1) + 1);
  }
  /** The share of one register tile; `Down` as for step(). */
  template <bool Down = false>
  void tile() { step<Down>(per_tile); }
  /**
   * Asks for the next n lines, if any are left: a row's lines in one loop per call (the prefetch,
   * a pointer add, the pace, a compare), the stream's fields read once per row. The cursor lives in
   * locals for the loop: kept in the members, every line paid a store and a reload of them, a chain
   * through memory (this loop held 11.5% of a cpu-clock profile of the avx512 forward at d = 64,
   * half of it off the prefetches).
   *
   * `Down`: each stream's lines from its last to its first, for a loop whose blocks run to lower
   * addresses (the backward's pass 2), so that the requests descend as the blocks do and the hardware
   * prefetchers, which follow them, run on into the next block rather than back into the last. On
   * Zen 4 (avx2, d = 128, n = 16384, one head) pass 2 so took 0.986x the backward's time. `ask`
   * receives each line (a test records them).
   *
   * Not inlined: with its five paces inlined into the block loops, g++ 12 laid out the scalar
   * path's forward so that it took 1.2x its time (time_backward 16384 8 128 3 0 scalar: 0.87-0.91 s
   * against 0.72-0.75 s); out of line, the SIMD paths' times are unchanged (tools/ab, 24 pairs,
   * d = 128, new/old: backward avx2 0.996, avx512 0.974; forward 1.012 and 1.002).
   */
  template <bool Down = false, class Ask = PrefetchLine>
  [[gnu::noinline]] void step(int n, Ask&& ask = {}) {
    int s_at = at;
    int64_t s_row = row, s_line = line, left = n;
    while (left > 0 && s_at < count) {
      const Stream& s = streams[s_at];
      const int64_t take = std::min(left, s.lines - s_line);
      constexpr int64_t next = Down ? -64 : 64;
      const int64_t r = Down ? rows - 1 - s_row : s_row, first = Down ? s.lines - 1 - s_line : s_line;
      const char* p = s.row + r * s.stride + first * 64;
      const auto issue = [&](auto multiplies) {
        for (int64_t l = 0, offset = 0; l < take; ++l) {
          ask(p + offset, s.write, into_l1);
          offset += next;
          pace_request<decltype(multiplies)::value>(offset);  // the next request waits on the chain
        }
      };
      switch (pace) {
        case 0: issue(std::integral_constant<int, 0>{}); break;
        case 1: issue(std::integral_constant<int, 1>{}); break;
        case 2: issue(std::integral_constant<int, 2>{}); break;
        case 3: issue(std::integral_constant<int, 3>{}); break;
        default: issue(std::integral_constant<int, 4>{}); break;
      }
      left -= take;
      if ((s_line += take) == s.lines) {
        s_line = 0;
        if (++s_row == rows) s_row = 0, ++s_at;
      }
    }
    at = s_at, row = s_row, line = s_line;
  }
};

}  // namespace lightning::detail
