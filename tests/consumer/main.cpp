// Runs one small forward through the installed headers and checks one output against the recurrence.
#include <lightning/lightning.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // Two tokens, one head, d = 1: o_1 = q_1 (lambda k_0 v_0 + k_1 v_1).
  std::vector<float> q = {1, 2}, k = {3, 4}, v = {5, 6}, o(2);
  const float slope = 0.5f;
  lightning::Options opt;
  opt.slopes = &slope;
  lightning::forward(lightning::bhnd(q.data(), 1, 1, 2, 1), lightning::bhnd(k.data(), 1, 1, 2, 1),
                     lightning::bhnd(v.data(), 1, 1, 2, 1), lightning::bhnd(o.data(), 1, 1, 2, 1), opt);
  const double expected = 2 * (std::exp(-0.5) * 15 + 24);
  std::printf("o_1 = %.6f, expected %.6f\n", o[1], expected);
  return std::abs(o[1] - expected) <= 1e-5 * expected ? 0 : 1;
}
