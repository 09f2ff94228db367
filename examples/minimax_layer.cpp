// A MiniMax-Text-01 lightning-attention layer on a random small model: prefill, then decode token by token.
//
// The layer (MiniMaxText01LightningAttention): qkv = SiLU(x W_qkv) split per head into q, k, v;
// o = lightning attention with the layer's slopes; RMSNorm over all heads together; times
// sigmoid(x W_gate); then W_out. Projections go through Eigen; lightning reads q, k, v straight out
// of the fused projection through strided views. The program checks that decoding the last tokens
// one at a time gives what a prefill over all of them gives, and exits 1 if not.
#include <lightning/lightning.hpp>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <vector>

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Layer {
  int64_t hidden, heads, d;
  Matrix w_qkv, w_gate, w_out;  // [hidden, 3 H d], [hidden, H d], [H d, hidden]
  Eigen::RowVectorXf norm_weight;
  std::vector<float> slopes;
  float eps = 1e-5f;

  Layer(int64_t hidden_, int64_t heads_, int64_t d_, int64_t layer, int64_t num_layers)
      : hidden(hidden_), heads(heads_), d(d_), slopes(lightning::minimax_slopes(heads_, layer, num_layers)) {
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(hidden)), hd = static_cast<float>(heads * d);
    w_qkv = Matrix::Random(hidden, 3 * heads * d) * in_scale;
    w_gate = Matrix::Random(hidden, heads * d) * in_scale;
    w_out = Matrix::Random(heads * d, hidden) * (1.0f / std::sqrt(hd));
    norm_weight = Eigen::RowVectorXf::Ones(heads * d) + 0.1f * Eigen::RowVectorXf::Random(heads * d);
  }

  /**
   * The layer over n = x.rows() tokens of one sequence. With decode, n must be 1 and the state is
   * advanced by one decode step; otherwise a forward (prefill) runs from `state` and leaves its
   * final state there. state: fp32 [heads, d, d].
   */
  Matrix run(const Matrix& x, std::vector<float>& state, bool decode) const {
    const int64_t n = x.rows(), H = heads;
    // SiLU on the fused projection: per token, per head [q | k | v] (MiniMax's view(..., H, 3d) then split).
    Matrix qkv = x * w_qkv;
    qkv = qkv.unaryExpr([](float a) { return a / (1.0f + std::exp(-a)); });
    const float* p = qkv.data();
    const auto part = [&](int64_t which) {  // q, k or v of every head: [1, H, n, d] with token stride 3 H d
      return lightning::View<const float>(p + which * d, 1, H, n, d, n * 3 * H * d, 3 * d, 3 * H * d);
    };
    Matrix o(n, H * d);  // [n, H d]: the "b h n d -> b n (h d)" rearrangement is the view's strides
    const auto ov = lightning::bnhd(o.data(), 1, H, n, d);
    const auto states = lightning::state_view(state.data(), 1, H, d, d);
    lightning::Options options;
    options.slopes = slopes.data();
    if (decode)
      lightning::decode(part(0), part(1), part(2), ov, states, options);
    else
      lightning::forward(part(0), part(1), part(2), ov, options, lightning::View<const float>(states), states);
    // RMSNorm over all heads together, the sigmoid output gate, the output projection.
    const Eigen::VectorXf inv_rms = ((o.array().square().rowwise().sum() / static_cast<float>(H * d)) + eps).rsqrt();
    Matrix normed = (o.array().colwise() * inv_rms.array()).rowwise() * norm_weight.array();
    const Matrix gate = (x * w_gate).unaryExpr([](float a) { return 1.0f / (1.0f + std::exp(-a)); });
    return (normed.array() * gate.array()).matrix() * w_out;
  }
};

}  // namespace

int main() {
  const int64_t hidden = 128, heads = 4, d = 32, layer = 2, num_layers = 8, prompt = 300, steps = 20;
  std::srand(1);
  const Layer attn(hidden, heads, d, layer, num_layers);
  const Matrix x = Matrix::Random(prompt + steps, hidden);

  // Reference: one prefill over every token.
  std::vector<float> state_all(static_cast<size_t>(heads * d * d), 0.0f);
  const Matrix y_all = attn.run(x, state_all, false);

  // Prefill the prompt, then decode the rest one token at a time.
  std::vector<float> state(static_cast<size_t>(heads * d * d), 0.0f);
  Matrix y(prompt + steps, hidden);
  y.topRows(prompt) = attn.run(x.topRows(prompt), state, false);
  for (int64_t t = prompt; t < prompt + steps; ++t) y.row(t) = attn.run(x.row(t), state, true);

  const auto rel = [](const auto& a, const auto& b) { return std::sqrt((a - b).squaredNorm() / b.squaredNorm()); };
  const double err_y = rel(y.bottomRows(steps), y_all.bottomRows(steps));
  const double err_s = rel(Eigen::Map<const Eigen::VectorXf>(state.data(), heads * d * d),
                           Eigen::Map<const Eigen::VectorXf>(state_all.data(), heads * d * d));
  std::printf("MiniMax lightning-attention layer %lld of %lld: hidden %lld, %lld heads of %lld, slopes %.4g .. %.4g\n",
              static_cast<long long>(layer), static_cast<long long>(num_layers), static_cast<long long>(hidden),
              static_cast<long long>(heads), static_cast<long long>(d), attn.slopes.front(), attn.slopes.back());
  std::printf("prefill %lld + decode %lld tokens vs prefill of all %lld: rel RMS of decoded outputs %.2e, state %.2e\n",
              static_cast<long long>(prompt), static_cast<long long>(steps), static_cast<long long>(prompt + steps),
              err_y, err_s);
  std::printf("last output row: %.5f %.5f %.5f %.5f ...\n", y(prompt + steps - 1, 0), y(prompt + steps - 1, 1),
              y(prompt + steps - 1, 2), y(prompt + steps - 1, 3));
  return err_y <= 1e-5 && err_s <= 1e-5 ? 0 : 1;
}
