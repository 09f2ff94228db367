// The MiniMax-verified cases of ../shared/vectors, read at test time, on every compiled path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "util.hpp"

namespace lightning::test {
namespace {

const std::string kDir = LIGHTNING_VECTORS_DIR;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<float> load(const std::string& path, size_t count) {
  const std::string bytes = slurp(path);
  if (bytes.size() != count * sizeof(float))
    throw std::runtime_error(path + ": " + std::to_string(bytes.size()) + " bytes, expected " +
                             std::to_string(count * sizeof(float)));
  std::vector<float> x(count);
  std::copy_n(bytes.data(), bytes.size(), reinterpret_cast<char*>(x.data()));
  return x;
}

/** The value after "key": in meta.json (numbers and true/false only; enough for these files). */
double meta_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  if (at == std::string::npos) throw std::runtime_error("meta.json has no " + key);
  std::istringstream s(json.substr(at + key.size() + 3));
  std::string word;
  s >> word;
  if (word.rfind("true", 0) == 0) return 1;
  if (word.rfind("false", 0) == 0) return 0;
  return std::stod(word);
}

struct Vectors {
  std::string dir;
  int64_t B, H, n, dk, dv, steps;
  float scale;
  bool has_s0;
  std::vector<float> q, k, v, s0, slopes, o, state, o_scale;
  explicit Vectors(const std::string& name) : dir(kDir + "/" + name + "/") {
    const std::string meta = slurp(dir + "meta.json");
    B = static_cast<int64_t>(meta_number(meta, "batch"));
    H = static_cast<int64_t>(meta_number(meta, "heads"));
    n = static_cast<int64_t>(meta_number(meta, "n"));
    dk = static_cast<int64_t>(meta_number(meta, "d_k"));
    dv = static_cast<int64_t>(meta_number(meta, "d_v"));
    steps = static_cast<int64_t>(meta_number(meta, "decode_steps"));
    scale = static_cast<float>(meta_number(meta, "scale"));
    has_s0 = meta_number(meta, "has_initial_state") != 0;
    q = load(dir + "q.bin", B * H * n * dk);
    k = load(dir + "k.bin", B * H * n * dk);
    v = load(dir + "v.bin", B * H * n * dv);
    if (has_s0) s0 = load(dir + "s0.bin", B * H * dk * dv);
    slopes = load(dir + "slopes.bin", H);
    o = load(dir + "expected_o.bin", B * H * n * dv);
    state = load(dir + "expected_state.bin", B * H * dk * dv);
    o_scale = load(dir + "o_scale.bin", B * H * n);
  }
};

/** The README's checks: normalised max error, and the row-wise bound max_j |o - e| <= 1e-5 o_scale. */
double normalised_error(const std::vector<float>& x, const std::vector<float>& expected) {
  double err = 0, top = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    err = std::max(err, std::abs(static_cast<double>(x[i]) - expected[i]));
    top = std::max(top, std::abs(static_cast<double>(expected[i])));
  }
  return err / top;
}

double worst_row_ratio(const std::vector<float>& o, const std::vector<float>& expected,
                       const std::vector<float>& o_scale, int64_t dv) {
  double worst = 0;
  for (size_t r = 0; r < o_scale.size(); ++r)
    for (int64_t j = 0; j < dv; ++j) {
      const size_t i = r * static_cast<size_t>(dv) + static_cast<size_t>(j);
      if (!std::isfinite(o[i])) return INFINITY;
      worst = std::max(worst, std::abs(static_cast<double>(o[i]) - expected[i]) / (1e-5 * o_scale[r]));
    }
  return worst;  // <= 1 passes
}

class SharedVectors : public ::testing::TestWithParam<Path> {};

TEST_P(SharedVectors, ForwardMatchesMiniMax) {
  const char* names[] = {"n1", "n2", "n257_d64", "n1000_dk64_dv32", "d128_n300", "b3_h5", "initial_state",
                         "no_decay_s0", "strong_decay_s8_s30", "decode_prefill260_plus5"};
  for (const char* name : names)
    for (int64_t block : {0, 256, 37}) {
      SCOPED_TRACE(std::string(name) + " block " + std::to_string(block));
      const Vectors c(name);
      std::vector<float> o(c.o.size()), state(c.state.size());
      Options opt;
      opt.slopes = c.slopes.data();
      opt.scale = c.scale;
      opt.block_size = block;
      opt.path = GetParam();
      forward(bhnd(c.q.data(), c.B, c.H, c.n, c.dk), bhnd(c.k.data(), c.B, c.H, c.n, c.dk),
              bhnd(c.v.data(), c.B, c.H, c.n, c.dv), bhnd(o.data(), c.B, c.H, c.n, c.dv), opt,
              c.has_s0 ? state_view(c.s0.data(), c.B, c.H, c.dk, c.dv) : View<const float>(),
              state_view(state.data(), c.B, c.H, c.dk, c.dv));
      const double e_o = normalised_error(o, c.o), e_s = normalised_error(state, c.state);
      const double rows = worst_row_ratio(o, c.o, c.o_scale, c.dv);
      EXPECT_LE(e_o, 1e-4);
      EXPECT_LE(e_s, 1e-4);
      EXPECT_LE(rows, 1.0);
      std::printf("[vectors] %-8s %-24s block %3lld: normalised o %.2e state %.2e, row-wise %.2f of bound\n",
                  path_name(GetParam()), name, static_cast<long long>(block), e_o, e_s, rows);
    }
}

// The prefill in one forward, then again in pieces with the state carried in place (chunked
// prefill); decode steps continue either.
TEST_P(SharedVectors, DecodeContinuesThePrefill) {
  for (const std::vector<int64_t>& pieces : {std::vector<int64_t>{260}, std::vector<int64_t>{1, 100, 0, 64, 95}}) {
  SCOPED_TRACE(pieces.size() == 1 ? "one forward" : "chunked prefill");
  const Vectors c("decode_prefill260_plus5");
  const int64_t B = c.B, H = c.H, dk = c.dk, dv = c.dv, steps = c.steps;
  ASSERT_EQ(steps, 5);
  const auto qd = load(c.dir + "q_decode.bin", B * H * steps * dk), kd = load(c.dir + "k_decode.bin", B * H * steps * dk);
  const auto vd = load(c.dir + "v_decode.bin", B * H * steps * dv);
  const auto od = load(c.dir + "expected_o_decode.bin", B * H * steps * dv);
  const auto sd = load(c.dir + "expected_state_decode_steps.bin", steps * B * H * dk * dv);
  std::vector<float> o(c.o.size()), state(c.state.size());
  Options opt;
  opt.slopes = c.slopes.data();
  opt.path = GetParam();
  const auto piece = [&](auto* x, int64_t t0, int64_t len, int64_t d) {  // tokens [t0, t0 + len) of [B, H, n, d]
    return View<std::remove_pointer_t<decltype(x)>>(x + t0 * d, B, H, len, d, H * c.n * d, c.n * d, d);
  };
  int64_t t0 = 0;
  for (int64_t len : pieces) {
    const auto s = state_view(state.data(), B, H, dk, dv);
    forward(piece(c.q.data(), t0, len, dk), piece(c.k.data(), t0, len, dk), piece(c.v.data(), t0, len, dv),
            piece(o.data(), t0, len, dv), opt, t0 == 0 ? View<const float>() : View<const float>(s), s);
    t0 += len;
  }
  ASSERT_EQ(t0, c.n);
  EXPECT_LE(normalised_error(o, c.o), 1e-4);
  EXPECT_LE(worst_row_ratio(o, c.o, c.o_scale, dv), 1.0);
  std::vector<float> o_step(static_cast<size_t>(B * H * steps * dv));
  const auto step_view = [&](const float* p, int64_t t, int64_t d) {  // token t of [B, H, steps, d]
    return View<const float>(p + t * d, B, H, 1, d, H * steps * d, steps * d, d);
  };
  for (int64_t t = 0; t < steps; ++t) {
    decode(step_view(qd.data(), t, dk), step_view(kd.data(), t, dk), step_view(vd.data(), t, dv),
           View<float>(o_step.data() + t * dv, B, H, 1, dv, H * steps * dv, steps * dv, dv),
           state_view(state.data(), B, H, dk, dv), opt);
    const std::vector<float> expected(sd.begin() + t * B * H * dk * dv, sd.begin() + (t + 1) * B * H * dk * dv);
    EXPECT_LE(normalised_error(state, expected), 1e-4) << "step " << t;
  }
  EXPECT_LE(normalised_error(o_step, od), 1e-4);
  std::printf("[vectors] %-8s decode after %zu prefill piece(s): normalised o %.2e, decode o %.2e state %.2e\n",
              path_name(GetParam()), pieces.size(), normalised_error(o, c.o), normalised_error(o_step, od),
              normalised_error(state, std::vector<float>(sd.end() - B * H * dk * dv, sd.end())));
  }
}

LIGHTNING_INSTANTIATE_FOR_PATHS(SharedVectors);

/** The float32 base slopes meta.json lists for `heads` heads. */
std::vector<float> listed_base_slopes(const std::string& meta, int64_t heads) {
  const auto table = meta.find("\"base_slopes_float32\"");
  const auto at = meta.find("\"" + std::to_string(heads) + "\": [", table);
  if (table == std::string::npos || at == std::string::npos) throw std::runtime_error("no base slopes listed");
  std::istringstream s(meta.substr(meta.find('[', at) + 1));
  std::vector<float> slopes;
  for (double x; slopes.size() < static_cast<size_t>(heads) && s >> x; s.ignore(1)) slopes.push_back(static_cast<float>(x));
  return slopes;
}

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// Bit for bit: MiniMax's stored base slopes for every listed head count (powers of two and not),
// and the effective slopes of all 80 layers of MiniMax-Text-01's 64 heads.
TEST(SlopesTable, MatchesMiniMaxBitForBit) {
  const std::string meta = slurp(kDir + "/slopes_table/meta.json");
  for (int64_t heads : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 24, 32, 40, 48, 56, 64, 96, 128}) {
    const auto expected = listed_base_slopes(meta, heads), got = minimax_base_slopes(heads);
    ASSERT_EQ(expected.size(), static_cast<size_t>(heads));
    ASSERT_EQ(got.size(), expected.size());
    for (int64_t h = 0; h < heads; ++h) EXPECT_EQ(bits(got[h]), bits(expected[h])) << heads << " heads, head " << h;
  }
  const int64_t L = 80, H = 64;
  const auto table = load(kDir + "/slopes_table/minimax_text01_slopes_80x64.bin", L * H);
  int64_t mismatches = 0;
  for (int64_t l = 0; l < L; ++l) {
    const auto got = minimax_slopes(H, l, L);
    for (int64_t h = 0; h < H; ++h) mismatches += bits(got[h]) != bits(table[l * H + h]);
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace lightning::test
