// MiniMax-Text-01's decay schedule: ALiBi base slopes per head, scaled per decoder layer.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lightning/detail/validate.hpp"

namespace lightning {

namespace detail {
// MiniMax's get_slopes in float64, operation for operation (start * ratio**i, not 2^(-8(i+1)/n)),
// so that the float32 rounding lands on the same bits.
inline void alibi_slopes(int64_t n, std::vector<double>& out) {
  const double log2n = std::log2(static_cast<double>(n));
  if (log2n == std::floor(log2n)) {
    const double start = std::pow(2.0, -std::pow(2.0, -(log2n - 3.0)));
    for (int64_t i = 0; i < n; ++i) out.push_back(start * std::pow(start, static_cast<double>(i)));
    return;
  }
  const int64_t p = int64_t{1} << static_cast<int>(std::floor(log2n));
  alibi_slopes(p, out);
  std::vector<double> twice;
  alibi_slopes(2 * p, twice);
  for (int64_t i = 0; i < n - p; ++i) out.push_back(twice[static_cast<size_t>(2 * i)]);
}
}  // namespace detail

/**
 * The ALiBi base slopes MiniMax-Text-01 stores for `heads` heads (float32): for a power of two H,
 * 2^(-8(i+1)/H); otherwise the slopes of the largest power of two P below H followed by every
 * other slope of 2P. Throws lightning::invalid_argument unless 1 <= heads <= 2^30.
 */
inline std::vector<float> minimax_base_slopes(int64_t heads) {
  if (heads < 1 || heads > (int64_t{1} << 30))
    detail::fail("lightning::minimax_base_slopes", "heads must be in [1, 2^30], got ", heads);
  std::vector<double> slopes;
  detail::alibi_slopes(heads, slopes);
  return std::vector<float>(slopes.begin(), slopes.end());
}

/**
 * The slopes of decoder layer `layer` (0-based, counting every layer) of `num_layers`, as
 * MiniMax-Text-01 computes them: float32(base) * float32(1 - layer / (num_layers - 1) + 1e-5),
 * a float32 multiply. Pass the result as Options::slopes. Throws lightning::invalid_argument
 * unless heads >= 1, num_layers >= 2 and 0 <= layer < num_layers.
 */
inline std::vector<float> minimax_slopes(int64_t heads, int64_t layer, int64_t num_layers) {
  constexpr const char* where = "lightning::minimax_slopes";
  if (num_layers < 2) detail::fail(where, "num_layers must be >= 2 (the factor divides by num_layers - 1), got ", num_layers);
  if (layer < 0 || layer >= num_layers) detail::fail(where, "layer = ", layer, " is outside [0, ", num_layers, ")");
  std::vector<float> slopes = minimax_base_slopes(heads);
  const double factor = 1.0 - static_cast<double>(layer) / static_cast<double>(num_layers - 1) + 1e-5;
  for (float& s : slopes) s *= static_cast<float>(factor);
  return slopes;
}

}  // namespace lightning
