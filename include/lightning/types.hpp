// Public types: strided tensor views, options and the library's exception.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "lightning/config.hpp"
#include "lightning/storage.hpp"

namespace lightning {

/** The exception every entry point throws for bad input; the message names the argument and values. */
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/**
 * A strided view of a 4-D tensor of logical shape [batch, heads, seq, dim].
 *
 * The last dimension is contiguous; the other three strides are in elements and free, so
 * [B, H, N, D] and [B, N, H, D] memory are both views (see `bhnd` and `bnhd`). States use the
 * same type with shape [batch, heads, d_k, d_v]. A default-constructed view is "absent".
 */
template <class T>
struct View {
  T* data = nullptr;
  int64_t batch = 0, heads = 0, seq = 0, dim = 0;
  int64_t batch_stride = 0, head_stride = 0, seq_stride = 0;

  View() = default;
  View(T* data_, int64_t batch_, int64_t heads_, int64_t seq_, int64_t dim_, int64_t batch_stride_,
       int64_t head_stride_, int64_t seq_stride_)
      : data(data_), batch(batch_), heads(heads_), seq(seq_), dim(dim_), batch_stride(batch_stride_),
        head_stride(head_stride_), seq_stride(seq_stride_) {}
  /** A view of mutable data converts to a view of const data. */
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  View(const View<U>& o)  // NOLINT(google-explicit-constructor)
      : View(o.data, o.batch, o.heads, o.seq, o.dim, o.batch_stride, o.head_stride, o.seq_stride) {}

  /** True for a default-constructed view: an optional argument that was not given. */
  bool absent() const { return data == nullptr && batch == 0 && heads == 0 && seq == 0 && dim == 0; }
  int64_t elements() const { return batch * heads * seq * dim; }
  T* row(int64_t b, int64_t h, int64_t t) const { return data + b * batch_stride + h * head_stride + t * seq_stride; }
};

/** A view of contiguous [batch, heads, seq, dim] memory. */
template <class T>
View<T> bhnd(T* data, int64_t batch, int64_t heads, int64_t seq, int64_t dim) {
  return View<T>(data, batch, heads, seq, dim, heads * seq * dim, seq * dim, dim);
}

/** A view of contiguous [batch, seq, heads, dim] memory (the layout of a fused projection output). */
template <class T>
View<T> bnhd(T* data, int64_t batch, int64_t heads, int64_t seq, int64_t dim) {
  return View<T>(data, batch, heads, seq, dim, seq * heads * dim, dim, heads * dim);
}

/** A view of contiguous [batch, heads, d_k, d_v] fp32 states. */
inline View<float> state_view(float* data, int64_t batch, int64_t heads, int64_t d_k, int64_t d_v) {
  return bhnd(data, batch, heads, d_k, d_v);
}
inline View<const float> state_view(const float* data, int64_t batch, int64_t heads, int64_t d_k, int64_t d_v) {
  return bhnd(data, batch, heads, d_k, d_v);
}

/** What every entry point takes besides its tensors. */
struct Options {
  /**
   * Per-head decay rates, one per k/v head: lambda_h = exp(-slopes[h]), each finite and >= 0.
   * nullptr means no decay (every slope 0). MiniMax's schedule is `minimax_slopes`.
   */
  const float* slopes = nullptr;
  /** Multiplies every output (o = scale * q S). MiniMax uses 1; fla's default is 1/sqrt(d_k). */
  float scale = 1.0f;
  /** Tokens per block of the tiled form; 0 picks the library's choice for the shape and path. */
  int64_t block_size = 0;
  /** Worker threads: 1 runs on the calling thread, 0 uses every core. */
  int threads = 1;
  /** Which kernels run; `automatic` is the best compiled path. A path not compiled in throws. */
  Path path = Path::automatic;
};

}  // namespace lightning
