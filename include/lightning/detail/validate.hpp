// Argument checks shared by every entry point: all run before anything is written.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "lightning/types.hpp"

namespace lightning::detail {

/** Builds "<where>: <what>" and throws lightning::invalid_argument. */
template <class... Parts>
[[noreturn]] void fail(const char* where, const Parts&... parts) {
  std::ostringstream s;
  s << where << ": ";
  (s << ... << parts);
  throw invalid_argument(s.str());
}

template <class T>
std::string describe(const char* name, const View<T>& x) {
  std::ostringstream s;
  s << name << " [batch=" << x.batch << ", heads=" << x.heads << ", seq=" << x.seq << ", dim=" << x.dim << "]";
  return s.str();
}

/** Memory a view spans, in bytes: [lo, hi). Empty views span nothing. */
struct Span {
  uintptr_t lo = 0, hi = 0;
  bool empty() const { return lo == hi; }
  bool overlaps(const Span& o) const { return !empty() && !o.empty() && lo < o.hi && o.lo < hi; }
};

/**
 * Checks extents, null data and that the addressed range is representable, and returns it.
 * Every size computed later from this view then fits in int64_t.
 */
template <class T>
Span checked_span(const char* where, const char* name, const View<T>& x) {
  if (x.batch < 0 || x.heads < 0 || x.seq < 0 || x.dim < 0) fail(where, describe(name, x), " has a negative extent");
  if (x.batch == 0 || x.heads == 0 || x.seq == 0 || x.dim == 0) return {};
  if (x.data == nullptr) fail(where, describe(name, x), " has null data but ", "a non-zero extent");
  const int64_t ext[3] = {x.batch, x.heads, x.seq}, str[3] = {x.batch_stride, x.head_stride, x.seq_stride};
  int64_t lo = 0, hi = x.dim - 1;
  for (int i = 0; i < 3; ++i) {
    int64_t reach = 0;
    if (__builtin_mul_overflow(ext[i] - 1, str[i], &reach) ||
        __builtin_add_overflow(reach < 0 ? lo : hi, reach, reach < 0 ? &lo : &hi))
      fail(where, describe(name, x), ": strides (", x.batch_stride, ", ", x.head_stride, ", ", x.seq_stride,
           ") address more memory than int64 can count");
  }
  int64_t lo_bytes = 0, end = 0, hi_bytes = 0;
  if (__builtin_mul_overflow(lo, static_cast<int64_t>(sizeof(T)), &lo_bytes) || __builtin_add_overflow(hi, 1, &end) ||
      __builtin_mul_overflow(end, static_cast<int64_t>(sizeof(T)), &hi_bytes))
    fail(where, describe(name, x), " addresses more bytes than int64 can count");
  const auto base = reinterpret_cast<uintptr_t>(x.data);
  return {base + static_cast<uintptr_t>(lo_bytes), base + static_cast<uintptr_t>(hi_bytes)};
}

/** Outputs must not write one element twice: sorted by stride, each dimension clears the ones inside it. */
template <class T>
void check_no_self_overlap(const char* where, const char* name, const View<T>& x) {
  if (x.batch == 0 || x.heads == 0 || x.seq == 0 || x.dim == 0) return;  // elements() may overflow: zero strides
  std::pair<int64_t, int64_t> dims[3] = {{std::abs(x.batch_stride), x.batch},
                                         {std::abs(x.head_stride), x.heads},
                                         {std::abs(x.seq_stride), x.seq}};
  std::sort(dims, dims + 3);
  int64_t span = x.dim;
  for (const auto& [stride, extent] : dims) {
    if (extent <= 1) continue;
    if (stride < span)
      fail(where, "output ", describe(name, x), " has strides (", x.batch_stride, ", ", x.head_stride, ", ",
           x.seq_stride, ") that write some elements twice");
    span = stride * (extent - 1) + span;
  }
}

template <class T>
void require_shape(const char* where, const char* name, const View<T>& x, int64_t batch, int64_t heads, int64_t seq,
                   int64_t dim) {
  if (x.batch != batch || x.heads != heads || x.seq != seq || x.dim != dim)
    fail(where, describe(name, x), " does not match the expected [batch=", batch, ", heads=", heads, ", seq=", seq,
         ", dim=", dim, "]");
}

inline void check_options(const char* where, const Options& opt, int64_t kv_heads) {
  if (!std::isfinite(opt.scale)) fail(where, "options.scale must be finite, got ", opt.scale);
  if (opt.block_size < 0 || opt.block_size > 4096)
    fail(where, "options.block_size must be in [0, 4096] (0 = the library's choice), got ", opt.block_size);
  if (opt.threads < 0) fail(where, "options.threads must be >= 0 (0 = every core), got ", opt.threads);
  if (!path_compiled(opt.path))
    fail(where, "options.path = ", path_name(opt.path), " is not compiled into this binary (best: ",
         path_name(best_path), ")");
  if (opt.slopes)
    for (int64_t h = 0; h < kv_heads; ++h)
      if (!(opt.slopes[h] >= 0.0f) || !std::isfinite(opt.slopes[h]))
        fail(where, "options.slopes[", h, "] must be finite and >= 0, got ", opt.slopes[h]);
}

/** An output may not share memory with anything else the call reads or writes. */
inline void check_disjoint(const char* where, const char* out_name, const Span& out, const char* other_name,
                           const Span& other) {
  if (out.overlaps(other)) fail(where, "output ", out_name, " overlaps ", other_name);
}

}  // namespace lightning::detail
