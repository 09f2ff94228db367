// The backward on every compiled path against the double closed-form gradients, finite differences,
// chunked consistency, optional outputs and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "lightning/detail/prefetch.hpp"
#include "lightning/reference/backward.hpp"
#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

enum class Layout { bhnd, bnhd };

// None, tiny, MiniMax-like, strong, extreme, and two more: per k/v head, cycled.
const float kSlopes[] = {0.0f, 1e-6f, 0.05f, 8.0f, 30.0f, 0.3f, 0.01f};

struct Case {
  int64_t batch, q_heads, kv_heads, n, dk, dv, block;
  Layout layout = Layout::bhnd;
  bool state_in = true, d_state_out = true;
  float scale = 1.0f;
};

template <class T>
View<T> make_view(T* p, Layout l, int64_t b, int64_t h, int64_t n, int64_t d) {
  return l == Layout::bhnd ? bhnd(p, b, h, n, d) : bnhd(p, b, h, n, d);
}

/** A view's rows copied into contiguous [batch, heads, seq, dim] order, the reference's layout. */
std::vector<float> contiguous(const View<float>& x) {
  std::vector<float> out(static_cast<size_t>(x.elements()));
  for (int64_t b = 0; b < x.batch; ++b)
    for (int64_t h = 0; h < x.heads; ++h)
      for (int64_t t = 0; t < x.seq; ++t)
        std::copy_n(x.row(b, h, t), x.dim, &out[static_cast<size_t>(((b * x.heads + h) * x.seq + t) * x.dim)]);
  return out;
}

/** The inputs of one case and the gradients a backward call wrote. */
struct Problem {
  Case c;
  std::vector<float> q, k, v, d_o, s0, ds1, dq, dk, dv, ds0, dsl;
  explicit Problem(const Case& c_) : c(c_) {
    const int64_t B = c.batch, H = c.q_heads, G = c.kv_heads;
    const float sd = 1.0f / std::sqrt(std::sqrt(static_cast<float>(c.dk)));  // q . k of order 1
    q = randn(static_cast<size_t>(B * H * c.n * c.dk), sd, 1 + c.n);
    k = randn(static_cast<size_t>(B * G * c.n * c.dk), sd, 2 + c.n);
    v = randn(static_cast<size_t>(B * G * c.n * c.dv), 1.0f, 3 + c.n);
    d_o = randn(static_cast<size_t>(B * H * c.n * c.dv), 1.0f, 4 + c.n);
    s0 = randn(static_cast<size_t>(B * G * c.dk * c.dv), 0.3f, 5);
    ds1 = randn(static_cast<size_t>(B * G * c.dk * c.dv), 0.3f, 6);
    dq.assign(q.size(), -7.0f);
    dk.assign(k.size(), -7.0f);
    dv.assign(v.size(), -7.0f);
    ds0.assign(s0.size(), -7.0f);
    dsl.assign(static_cast<size_t>(G), -7.0f);
  }
  View<const float> in(const std::vector<float>& x, int64_t heads, int64_t d) const {
    return make_view<const float>(x.data(), c.layout, c.batch, heads, c.n, d);
  }
  View<float> out(std::vector<float>& x, int64_t heads, int64_t d) {
    return make_view<float>(x.data(), c.layout, c.batch, heads, c.n, d);
  }
  View<const float> qv() const { return in(q, c.q_heads, c.dk); }
  View<const float> kv() const { return in(k, c.kv_heads, c.dk); }
  View<const float> vv() const { return in(v, c.kv_heads, c.dv); }
  View<const float> dov() const { return in(d_o, c.q_heads, c.dv); }
  View<const float> s0v() const {
    return c.state_in ? state_view(s0.data(), c.batch, c.kv_heads, c.dk, c.dv) : View<const float>();
  }
  View<const float> ds1v() const {
    return c.d_state_out ? state_view(ds1.data(), c.batch, c.kv_heads, c.dk, c.dv) : View<const float>();
  }
  Options options(Path path) const {
    Options opt;
    opt.slopes = kSlopes;
    opt.scale = c.scale;
    opt.block_size = c.block;
    opt.path = path;
    return opt;
  }
  void run(Path path, int threads = 1) {
    Options opt = options(path);
    opt.threads = threads;
    backward(qv(), kv(), vv(), dov(), out(dq, c.q_heads, c.dk), out(dk, c.kv_heads, c.dk), out(dv, c.kv_heads, c.dv),
             opt, s0v(), ds1v(), state_view(ds0.data(), c.batch, c.kv_heads, c.dk, c.dv), dsl.data());
  }
};

std::string format_error(double e) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", e);
  return buf;
}

/** The worst relative RMS error over dq, dk, dv, dS_in and d_slopes of one case on `path`. */
struct Errors {
  double dq, dk, dv, ds0, dsl;
};

Errors run_case(Path path, const Case& c) {
  Problem p(c);
  p.run(path);
  const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
  return {rel_rms(contiguous(p.out(p.dq, c.q_heads, c.dk)), ref.dq),
          rel_rms(contiguous(p.out(p.dk, c.kv_heads, c.dk)), ref.dk),
          rel_rms(contiguous(p.out(p.dv, c.kv_heads, c.dv)), ref.dv), rel_rms(p.ds0, ref.d_state_in),
          rel_rms(p.dsl, ref.d_slopes)};
}

class Backward : public ::testing::TestWithParam<Path> {
 protected:
  void expect_close(const Case& c) {
    const Errors e = run_case(GetParam(), c);
    const std::string what = "n=" + std::to_string(c.n) + " dk=" + std::to_string(c.dk) + " dv=" +
                             std::to_string(c.dv) + " block=" + std::to_string(c.block) + " heads=" +
                             std::to_string(c.q_heads) + "/" + std::to_string(c.kv_heads) +
                             " state_in=" + std::to_string(c.state_in) + " d_state_out=" + std::to_string(c.d_state_out);
    // What each case determines: no token gradients at n = 0; no slope gradient without a path through lambda.
    const bool has_slope_path = c.n > 1 || (c.state_in && (c.n == 1 || c.d_state_out));
    check(c.n > 0, e.dq, "dq", what);
    check(c.n > 0, e.dk, "dk", what);
    check(c.n > 0, e.dv, "dv", what);
    check(c.n > 0 || c.d_state_out, e.ds0, "d_state_in", what);
    check(has_slope_path, e.dsl, "d_slopes", what);
  }
  void check(bool applies, double err, const char* name, const std::string& what) {
    if (!applies) return;
    EXPECT_LE(err, kFp32Tolerance) << name << " " << what;
    worst_[name] = std::max(worst_[name], err);
  }
  // The worst error of each gradient is printed, for the record of what each path achieves.
  void TearDown() override {
    if (worst_.empty()) return;
    std::string line;
    for (const auto& [name, err] : worst_) line += " " + name + " " + format_error(err);
    std::printf("[ worst    ] %s:%s\n", path_name(GetParam()), line.c_str());
  }
  std::map<std::string, double> worst_;
};

TEST_P(Backward, SequenceLengthsAroundTheBlock) {
  for (int64_t block : {16, 64})
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{2}, block - 1, block, block + 1, 2 * block + 1})
      expect_close({2, 7, 7, n, 16, 24, block});
  expect_close({1, 7, 7, 997, 16, 8, 64});
}

// Slopes 0 and 1e-6, where every token reaches every later one: the longest reach of the adjoint state.
TEST_P(Backward, LongSequence) { expect_close({1, 2, 2, 4096, 16, 8, 0}); }

// Slow decay at small blocks: the states S, H and R decay once per block, and by float(lambda^m)
// alone the rounding error would add up over the blocks they remember (so these cases gave dq
// 1.7e-5, dS_in 2.3e-5 and d_slopes 3.5e-5 on every path): detail::DecayFactors.
TEST_P(Backward, SlowDecayAtSmallBlocks) {
  expect_close({1, 2, 2, 4096, 8, 8, 1});
  expect_close({1, 7, 7, 2048, 8, 8, 1});
}

TEST_P(Backward, StatesPresentOrAbsent) {
  for (bool s_in : {false, true})
    for (bool ds_out : {false, true}) {
      Case c{1, 7, 7, 150, 16, 12, 32};
      c.state_in = s_in;
      c.d_state_out = ds_out;
      expect_close(c);
    }
  Case c{1, 7, 7, 0, 8, 4, 16};  // n = 0: dS_in = dS_out, every slope gradient 0
  expect_close(c);
}

TEST_P(Backward, HeadDims) {
  const std::pair<int64_t, int64_t> dims[] = {{1, 1}, {3, 3}, {1, 40}, {40, 1}, {3, 16}, {64, 32}, {128, 128}, {17, 33}};
  for (const auto& [dk, dv] : dims) expect_close({1, 2, 2, 129, dk, dv, 0});
}

TEST_P(Backward, BlockSizes) {
  for (int64_t block : {1, 2, 5, 63, 65, 100, 256, 300}) expect_close({1, 7, 7, 300, 16, 8, block});
}

// Whole blocks as wide as register tiles (0: the path's default, then 48 and 96), where the avx2 path
// stores dK straight from the last q head's dK^T tiles transposed (kernels::TransposedTiles), the
// group's earlier heads' sum added: one, two and three q heads per k/v head; with pass 1's P~ stash
// (in dK's rows, copied out first) and without it (dK alone, the same bits); d_k a multiple of the
// tile's rows and not; dS_out present and absent; a last block of 5 rows.
TEST_P(Backward, BlocksOfWholeTiles) {
  for (const auto& [q_heads, kv_heads] : {std::pair<int64_t, int64_t>{2, 2}, {4, 2}, {3, 1}})
    for (int64_t block : {0, 48, 96})
      for (int64_t dk : {16, 18, 128})
        for (bool ds_out : {true, false}) {
          Case c{1, q_heads, kv_heads, 2 * 96 + 5, dk, 24, block};
          c.d_state_out = ds_out;
          expect_close(c);
          Problem full(c), alone(c);
          full.run(GetParam());
          backward(alone.qv(), alone.kv(), alone.vv(), alone.dov(), View<float>(),
                   alone.out(alone.dk, c.kv_heads, c.dk), View<float>(), alone.options(GetParam()), alone.s0v(),
                   alone.ds1v());
          EXPECT_EQ(alone.dk, full.dk) << "heads " << q_heads << "/" << kv_heads << ", block " << block << ", dk " << dk
                                       << ", dS_out " << ds_out;
        }
}

TEST_P(Backward, BatchSeqHeadsMemoryOrder) {
  expect_close({2, 7, 7, 200, 16, 16, 64, Layout::bnhd});
  expect_close({2, 5, 5, 65, 3, 5, 16, Layout::bnhd, false, true});
}

TEST_P(Backward, Scale) {
  expect_close({1, 3, 3, 100, 16, 16, 32, Layout::bhnd, true, true, 0.125f});
  expect_close({1, 3, 3, 100, 16, 16, 32, Layout::bhnd, true, true, -2.0f});
}

TEST_P(Backward, GroupedHeads) {
  expect_close({2, 6, 2, 150, 16, 8, 32});  // GQA: 3 q heads per k/v head
  expect_close({1, 4, 1, 150, 8, 16, 64});  // MQA
  // d_k = 3 q heads x block 16: each head's P~ kept side by side in dK's rows between the passes
  // (stash_p_in_dk), heads interleaved in memory, then apart, where dV's rows also keep each block's
  // decayed V^T (stash_v_in_dv) until the first q head's dV tiles overwrite it.
  expect_close({2, 6, 2, 150, 48, 8, 16, Layout::bnhd});
  expect_close({2, 6, 2, 150, 48, 24, 16});
  // d_k = 64 > 3 x 12: where a block's dK rows are contiguous the stash is packed at their start, rows
  // of 36 floats (p_stash_ld), the last block's 6 rows too; token-major, it keeps dK's row stride.
  expect_close({2, 6, 2, 150, 64, 24, 12});
  expect_close({2, 6, 2, 150, 64, 24, 12, Layout::bnhd});
}

TEST_P(Backward, ThreadsGiveTheSameBits) {
  Problem a({3, 7, 7, 200, 16, 8, 32}), b({3, 7, 7, 200, 16, 8, 32});
  a.run(GetParam(), 1);
  b.run(GetParam(), 7);  // 21 items: whole items on 7 threads (not cut along the sequence)
  EXPECT_EQ(a.dq, b.dq);
  EXPECT_EQ(a.dk, b.dk);
  EXPECT_EQ(a.dv, b.dv);
  EXPECT_EQ(a.ds0, b.ds0);
  EXPECT_EQ(a.dsl, b.dsl);
}

// Each output asked for alone is the same bits as in the full call, and nothing else is written.
// 16-bit storage: the gradients are those of the fp32 backward on the same (rounded) inputs, each
// rounded once to T (the block loops widen the inputs exactly and compute in fp32); dS_in and
// d_slopes, fp32 in both, have the same bits. Grouped heads, token-major layout, tails of vectors.
template <class T>
void expect_fp32_rounded_once(Path path) {
  for (const Case& c : {Case{2, 4, 2, 53, 16, 24, 16, Layout::bnhd}, Case{1, 3, 3, 40, 9, 7, 8}}) {
    Problem p(c);
    for (auto* x : {&p.q, &p.k, &p.v, &p.d_o}) *x = to_floats(to_storage<T>(*x));
    p.run(path);
    const auto q = to_storage<T>(p.q), k = to_storage<T>(p.k), v = to_storage<T>(p.v), d_o = to_storage<T>(p.d_o);
    std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
    std::vector<float> ds0(p.ds0.size()), dsl(p.dsl.size());
    const auto in = [&](const std::vector<T>& x, int64_t heads, int64_t d) {
      return make_view<const T>(x.data(), c.layout, c.batch, heads, c.n, d);
    };
    const auto out = [&](std::vector<T>& x, int64_t heads, int64_t d) {
      return make_view<T>(x.data(), c.layout, c.batch, heads, c.n, d);
    };
    backward(in(q, c.q_heads, c.dk), in(k, c.kv_heads, c.dk), in(v, c.kv_heads, c.dv), in(d_o, c.q_heads, c.dv),
             out(dq, c.q_heads, c.dk), out(dk, c.kv_heads, c.dk), out(dv, c.kv_heads, c.dv), p.options(path), p.s0v(),
             p.ds1v(), state_view(ds0.data(), c.batch, c.kv_heads, c.dk, c.dv), dsl.data());
    EXPECT_EQ(to_floats(dq), to_floats(to_storage<T>(p.dq))) << path_name(path) << " n=" << c.n;
    EXPECT_EQ(to_floats(dk), to_floats(to_storage<T>(p.dk))) << path_name(path) << " n=" << c.n;
    EXPECT_EQ(to_floats(dv), to_floats(to_storage<T>(p.dv))) << path_name(path) << " n=" << c.n;
    EXPECT_EQ(ds0, p.ds0);
    EXPECT_EQ(dsl, p.dsl);
  }
}

TEST_P(Backward, HalfStorageIsTheFp32GradientRoundedOnce) {
  expect_fp32_rounded_once<bf16>(GetParam());
  expect_fp32_rounded_once<fp16>(GetParam());
}

// A call with no token and no state is valid whatever its batch, even one whose product with the
// heads overflows int64 (found by the fuzzer: the slope gradient's per-(batch, head) sums were
// sized batch x heads). The slope gradient over no terms is 0.
TEST_P(Backward, NoTokensHugeBatch) {
  const float x[1] = {0.0f};
  const int64_t B = int64_t{1} << 62;
  const View<const float> q(x, B, 4, 0, 8, 0, 0, 0), k(x, B, 2, 0, 8, 0, 0, 0), v(x, B, 2, 0, 3, 0, 0, 0),
      d_o(x, B, 4, 0, 3, 0, 0, 0);
  float d_slopes[2] = {7.0f, 7.0f};
  Options opt;
  opt.path = GetParam();
  backward(q, k, v, d_o, View<float>(), View<float>(), View<float>(), opt, {}, {}, {}, d_slopes);
  EXPECT_EQ(d_slopes[0], 0.0f);
  EXPECT_EQ(d_slopes[1], 0.0f);
}

TEST_P(Backward, OptionalOutputsAlone) {
  const Case c{2, 6, 3, 100, 16, 8, 32};
  Problem full(c);
  full.run(GetParam());
  for (int which = 0; which < 5; ++which) {
    Problem p(c);
    View<float> dq, dk, dv, ds0;
    float* dsl = nullptr;
    if (which == 0) dq = p.out(p.dq, c.q_heads, c.dk);
    if (which == 1) dk = p.out(p.dk, c.kv_heads, c.dk);
    if (which == 2) dv = p.out(p.dv, c.kv_heads, c.dv);
    if (which == 3) ds0 = state_view(p.ds0.data(), c.batch, c.kv_heads, c.dk, c.dv);
    if (which == 4) dsl = p.dsl.data();
    backward(p.qv(), p.kv(), p.vv(), p.dov(), dq, dk, dv, p.options(GetParam()), p.s0v(), p.ds1v(), ds0, dsl);
    const auto untouched = [](const std::vector<float>& x) {
      return std::all_of(x.begin(), x.end(), [](float e) { return e == -7.0f; });
    };
    EXPECT_TRUE(which == 0 ? p.dq == full.dq : untouched(p.dq)) << which;
    EXPECT_TRUE(which == 1 ? p.dk == full.dk : untouched(p.dk)) << which;
    EXPECT_TRUE(which == 2 ? p.dv == full.dv : untouched(p.dv)) << which;
    EXPECT_TRUE(which == 3 ? p.ds0 == full.ds0 : untouched(p.ds0)) << which;
    EXPECT_TRUE(which == 4 ? p.dsl == full.dsl : untouched(p.dsl)) << which;
  }
}

// A NaN or Inf in an input makes a gradient non-finite exactly where the double reference's is:
// through a masked zero of a causal block (gemm's lower_k and upper_k) it must not reach a token
// it does not depend on, and a power flushed to 0 still multiplies it (0 * NaN stays NaN).
TEST_P(Backward, NonFiniteInputsReachOnlyWhatDependsOnThem) {
  const int64_t B = 2, G = 3, H = 6, n = 150, dk = 9, dv = 7;
  const float slopes[] = {0.0f, 0.3f, 30.0f};  // the last: lambda^2 underflows even in double at long lags
  const auto q0 = randn(B * H * n * dk, 0.5f, 71), k0 = randn(B * G * n * dk, 0.5f, 72), v0 = randn(B * G * n * dv, 1, 73);
  const auto do0 = randn(B * H * n * dv, 1, 74), s00 = randn(B * G * dk * dv, 1, 75), ds10 = randn(B * G * dk * dv, 1, 76);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Poke {
    char tensor;  // q, k, v, o (d_o), s (state_in) or d (d_state_out)
    int64_t index;
    float value;
  };
  // Tokens inside a register tile (so a masked entry of the tile meets them), at block starts and
  // ends, the first and last token; every kind of head.
  const std::vector<Poke> pokes = {
      {'q', ((1 * H + 4) * n + 70) * dk + 3, nan},  {'q', ((0 * H + 1) * n + 0) * dk + 0, inf},
      {'q', ((0 * H + 5) * n + 149) * dk + 2, nan}, {'k', ((0 * G + 2) * n + 66) * dk + 0, nan},
      {'k', ((1 * G + 1) * n + 5) * dk + 8, inf},   {'v', ((0 * G + 0) * n + 63) * dv + 6, nan},
      {'v', ((1 * G + 2) * n + 3) * dv + 2, -inf},  {'v', ((0 * G + 1) * n + 129) * dv + 0, nan},
      {'o', ((0 * H + 2) * n + 20) * dv + 1, nan},  {'o', ((1 * H + 5) * n + 65) * dv + 4, -inf},
      {'o', ((1 * H + 0) * n + 0) * dv + 0, nan},   {'s', ((1 * G + 2) * dk + 4) * dv + 1, nan},
      {'s', ((0 * G + 0) * dk + 0) * dv + 0, inf},  {'d', ((0 * G + 2) * dk + 8) * dv + 6, nan},
      {'d', ((1 * G + 1) * dk + 3) * dv + 2, -inf}};
  for (const Poke& p : pokes) {
    auto q = q0, k = k0, v = v0, d_o = do0, s0 = s00, ds1 = ds10;
    auto& target = p.tensor == 'q' ? q : p.tensor == 'k' ? k : p.tensor == 'v' ? v : p.tensor == 'o' ? d_o
                 : p.tensor == 's' ? s0 : ds1;
    target[static_cast<size_t>(p.index)] = p.value;
    const auto qv = bhnd<const float>(q.data(), B, H, n, dk), kv = bhnd<const float>(k.data(), B, G, n, dk),
               vv = bhnd<const float>(v.data(), B, G, n, dv), dov = bhnd<const float>(d_o.data(), B, H, n, dv);
    const auto s0v = state_view(static_cast<const float*>(s0.data()), B, G, dk, dv);
    const auto ds1v = state_view(static_cast<const float*>(ds1.data()), B, G, dk, dv);
    const auto ref = reference::backward_quadratic(qv, kv, vv, dov, slopes, 1.0, s0v, ds1v);
    for (const int64_t block : {64, 16}) {
      std::vector<float> dq(q.size()), dk_(k.size()), dv_(v.size()), ds0(s0.size()), dsl(G);
      Options opt;
      opt.slopes = slopes;
      opt.block_size = block;
      opt.path = GetParam();
      opt.threads = block == 64 ? 1 : 2;
      backward(qv, kv, vv, dov, bhnd(dq.data(), B, H, n, dk), bhnd(dk_.data(), B, G, n, dk),
               bhnd(dv_.data(), B, G, n, dv), opt, s0v, ds1v, state_view(ds0.data(), B, G, dk, dv), dsl.data());
      const auto compare = [&](const char* name, const std::vector<float>& got, const std::vector<double>& want) {
        int affected = 0, mismatched = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          affected += !std::isfinite(want[i]);
          mismatched += std::isfinite(got[i]) != std::isfinite(want[i]);
        }
        EXPECT_EQ(mismatched, 0) << p.tensor << "[" << p.index << "] = " << p.value << ", block " << block << ": "
                                 << name << ", " << affected << " entries depend on it";
        return affected;
      };
      const int affected = compare("dq", dq, ref.dq) + compare("dk", dk_, ref.dk) + compare("dv", dv_, ref.dv) +
                           compare("d_state_in", ds0, ref.d_state_in) + compare("d_slopes", dsl, ref.d_slopes);
      EXPECT_GT(affected, 0) << p.tensor << "[" << p.index << "]";
      if (p.tensor == 'q') {  // without dV, whose A~^T gives the test of Q's finiteness, dK tests Q itself
        std::fill(dk_.begin(), dk_.end(), 0.0f);
        backward(qv, kv, vv, dov, View<float>{}, bhnd(dk_.data(), B, G, n, dk), View<float>{}, opt, s0v, ds1v);
        EXPECT_GT(compare("dk without dv", dk_, ref.dk), 0) << p.tensor << "[" << p.index << "]";
      }
    }
  }
}

// A sequence split in two, the state carried forward and dS passed back in place, gives the
// gradients of the whole; the slope gradients of the pieces add up.
TEST_P(Backward, ChunkedEqualsWhole) {
  const int64_t B = 2, H = 3, n = 300, dk = 16, dv = 12, cut = 113;
  const float slopes[] = {0.05f, 1e-6f, 8.0f};
  auto q = randn(B * H * n * dk, 0.5f, 31), k = randn(B * H * n * dk, 0.5f, 32), v = randn(B * H * n * dv, 1, 33);
  auto d_o = randn(B * H * n * dv, 1, 34), s0 = randn(B * H * dk * dv, 0.3f, 35), ds1 = randn(B * H * dk * dv, 0.3f, 36);
  const auto part = [&](std::vector<float>& x, int64_t d, int64_t t0, int64_t len) {
    return View<float>(x.data() + t0 * d, B, H, len, d, H * n * d, n * d, d);
  };
  const auto state = [&](std::vector<float>& s) { return state_view(s.data(), B, H, dk, dv); };
  const auto cstate = [&](const std::vector<float>& s) { return state_view(s.data(), B, H, dk, dv); };
  Options opt;
  opt.slopes = slopes;
  opt.path = GetParam();
  opt.block_size = 32;
  std::vector<float> dq(q.size()), dk_(k.size()), dv_(v.size()), ds0(s0.size()), dsl(H);
  backward(part(q, dk, 0, n), part(k, dk, 0, n), part(v, dv, 0, n), part(d_o, dv, 0, n), part(dq, dk, 0, n),
           part(dk_, dk, 0, n), part(dv_, dv, 0, n), opt, cstate(s0), cstate(ds1), state(ds0), dsl.data());

  std::vector<float> o(B * H * n * dv), s_mid(s0.size()), pq(q.size()), pk(k.size()), pv(v.size()), ds = ds1;
  std::vector<float> dsl1(H), dsl2(H);
  forward(part(q, dk, 0, cut), part(k, dk, 0, cut), part(v, dv, 0, cut), part(o, dv, 0, cut), opt, cstate(s0),
          state(s_mid));
  // The second piece from the carried state; its dS_in overwrites dS in place, then the first piece.
  backward(part(q, dk, cut, n - cut), part(k, dk, cut, n - cut), part(v, dv, cut, n - cut), part(d_o, dv, cut, n - cut),
           part(pq, dk, cut, n - cut), part(pk, dk, cut, n - cut), part(pv, dv, cut, n - cut), opt, cstate(s_mid),
           cstate(ds), state(ds), dsl2.data());
  backward(part(q, dk, 0, cut), part(k, dk, 0, cut), part(v, dv, 0, cut), part(d_o, dv, 0, cut), part(pq, dk, 0, cut),
           part(pk, dk, 0, cut), part(pv, dv, 0, cut), opt, cstate(s0), cstate(ds), state(ds), dsl1.data());
  const auto d = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
  EXPECT_LE(rel_rms(pq, d(dq)), kFp32Tolerance);
  EXPECT_LE(rel_rms(pk, d(dk_)), kFp32Tolerance);
  EXPECT_LE(rel_rms(pv, d(dv_)), kFp32Tolerance);
  EXPECT_LE(rel_rms(ds, d(ds0)), kFp32Tolerance);
  for (int64_t h = 0; h < H; ++h) dsl1[h] += dsl2[h];
  EXPECT_LE(rel_rms(dsl1, d(dsl)), kFp32Tolerance);
}

// A NaN or Inf in one input reaches exactly the gradients the double reference has non-finite,
// as the forward's policy (README, Reliability): the masked zeros of the intra-block products must
// not carry it to other tokens (0 * NaN is NaN), in particular not through the transposed, upper
// triangular P~^T Q and A~^T dO of dK and dV, where an earlier row of the same register tile
// reached a later one. d_slopes sums a term for every token (weight 0 at lag 0 and without an
// initial state), so any NaN or Inf of the head reaches it: at token 0 without a state, at the
// last token without dS_out, and with n = 0. (The first found by the fuzzer, the second by reading
// the reference while adding the fuzzer's backward entry point.)
TEST_P(Backward, NonFiniteAtTileAndSequenceEdges) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Poke {
    char tensor;  // q, k, v, o (d_o), s (state_in) or d (d_state_out)
    int64_t index;
    float value;
  };
  const auto check = [&](const Case& c, const std::vector<Poke>& pokes) {
    for (const Poke& poke : pokes) {
      Problem p(c);
      auto& x = poke.tensor == 'q' ? p.q : poke.tensor == 'k' ? p.k : poke.tensor == 'v' ? p.v
              : poke.tensor == 'o' ? p.d_o : poke.tensor == 's' ? p.s0 : p.ds1;
      x[static_cast<size_t>(poke.index)] = poke.value;
      p.run(GetParam());
      const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
      const auto mismatches = [](const std::vector<float>& got, const std::vector<double>& want) {
        int bad = 0;
        for (size_t i = 0; i < got.size(); ++i) bad += std::isfinite(got[i]) != std::isfinite(want[i]);
        return bad;
      };
      const std::string what = std::string(1, poke.tensor) + "[" + std::to_string(poke.index) + "], n = " + std::to_string(c.n);
      // The entries that stay finite keep their values (the row-exact fallbacks compute them).
      const auto finite_error = [](const std::vector<float>& got, const std::vector<double>& want) {
        std::vector<float> x;
        std::vector<double> y;
        for (size_t i = 0; i < got.size(); ++i)
          if (std::isfinite(want[i]) && std::isfinite(got[i])) x.push_back(got[i]), y.push_back(want[i]);
        return rel_rms(x, y);
      };
      EXPECT_EQ(mismatches(p.dq, ref.dq), 0) << "dq, " << what;
      EXPECT_EQ(mismatches(p.dk, ref.dk), 0) << "dk, " << what;
      EXPECT_EQ(mismatches(p.dv, ref.dv), 0) << "dv, " << what;
      EXPECT_EQ(mismatches(p.ds0, ref.d_state_in), 0) << "d_state_in, " << what;
      EXPECT_LE(finite_error(p.dq, ref.dq), kFp32Tolerance) << "dq, " << what;
      EXPECT_LE(finite_error(p.dk, ref.dk), kFp32Tolerance) << "dk, " << what;
      EXPECT_LE(finite_error(p.dv, ref.dv), kFp32Tolerance) << "dv, " << what;
      EXPECT_LE(finite_error(p.ds0, ref.d_state_in), kFp32Tolerance) << "d_state_in, " << what;
      EXPECT_EQ(mismatches(p.dsl, ref.d_slopes), 0) << "d_slopes, " << what;
    }
  };
  // Tokens at the start, inside and at the end of a register tile and of a block; q has 2 heads, k and v 1.
  check({1, 2, 1, 40, 5, 3, 16}, {{'q', (0 * 40 + 0) * 5 + 0, nan}, {'q', (1 * 40 + 17) * 5 + 2, inf},
                                  {'d', 1 * 3 + 2, nan}, {'o', (0 * 40 + 1) * 3 + 1, nan},
                                  {'o', (1 * 40 + 22) * 3 + 0, -inf}, {'k', 9 * 5 + 4, nan},
                                  {'v', 31 * 3 + 1, inf}, {'s', 2 * 3 + 0, nan}});
  Case stateless{1, 2, 1, 40, 5, 3, 16};
  stateless.state_in = stateless.d_state_out = false;
  check(stateless, {{'q', 0, nan}, {'o', (1 * 40 + 0) * 3 + 2, inf}, {'k', 39 * 5 + 1, nan}, {'v', 39 * 3 + 2, -inf}});
  Case empty{1, 2, 1, 0, 5, 3, 16};
  check(empty, {{'s', 4, nan}, {'d', 7, inf}});
  // d_k = 2 q heads x block 16: P~ read back from dK's rows, Q's NaN taking the row-exact dK^T.
  check({1, 2, 1, 40, 32, 3, 16}, {{'q', (1 * 40 + 17) * 32 + 2, inf}, {'o', (0 * 40 + 1) * 3 + 1, nan},
                                   {'k', 9 * 32 + 4, nan}, {'v', 31 * 3 + 1, inf}});
}

// Inputs of magnitude 1e15 with scale 1e-30, whose exact gradients are finite (|dq| about 1e15):
// the scale multiplies d_o before the product with the state, as the forward's c q S, so dO S^T
// (1e45) never forms (it did, and overflowed; seen while adding the fuzzer's backward entry point).
TEST_P(Backward, Magnitude1e15WithSmallScale) {
  Case c{1, 2, 1, 40, 4, 4, 16};
  c.scale = 1e-30f;
  c.state_in = false;
  Problem p(c);
  // k_3 and v_3 of 1e15 give S of 1e30 from token 3 on; do of 1e15 in a later block reads it.
  p.k[3 * 4 + 1] = 1e15f;
  p.v[3 * 4 + 2] = 1e15f;
  p.d_o[(0 * 40 + 30) * 4 + 2] = 1e15f;
  p.d_o[(1 * 40 + 20) * 4 + 2] = -1e15f;
  p.run(GetParam());
  const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
  for (const auto& [got, want, name] : {std::tuple{&p.dq, &ref.dq, "dq"}, std::tuple{&p.dk, &ref.dk, "dk"},
                                        std::tuple{&p.dv, &ref.dv, "dv"}, std::tuple{&p.ds0, &ref.d_state_in, "d_state_in"}}) {
    EXPECT_TRUE(std::all_of(got->begin(), got->end(), [](float x) { return std::isfinite(x); })) << name;
    EXPECT_LE(rel_rms(*got, *want), kFp32Tolerance) << name;
  }
}

// At scale 0 every gradient is 0, d_slopes included, however large the inputs: with q_5 . k_3 and
// do_5 . v_3 of 1e30 the slope gradient's intra-block term A_53 P_53 (1e60) and, a block later, dO W^T
// (1e45) leave fp32 unscaled; taken with the scale first they are 0. Before, d_slopes was 0 * Inf =
// NaN (the fuzzer's backward entry point found it, 2026-12-04).
TEST_P(Backward, SlopeGradientAtScaleZeroWithMagnitude1e15) {
  Case c{1, 2, 1, 40, 4, 4, 16};
  c.scale = 0.0f;
  c.state_in = false;
  c.d_state_out = false;
  Problem p(c);
  for (int64_t h = 0; h < 2; ++h) {
    p.q[static_cast<size_t>((h * 40 + 5) * 4 + 0)] = 1e15f;
    p.d_o[static_cast<size_t>((h * 40 + 5) * 4 + 1)] = 1e15f;
    p.d_o[static_cast<size_t>((h * 40 + 20) * 4 + 1)] = -1e15f;
  }
  p.k[3 * 4 + 0] = 1e15f;
  p.v[3 * 4 + 1] = 1e15f;
  p.run(GetParam());
  EXPECT_EQ(p.dsl[0], 0.0f);
  for (const auto* x : {&p.dq, &p.dk, &p.dv, &p.ds0})
    EXPECT_TRUE(std::all_of(x->begin(), x->end(), [](float e) { return e == 0.0f; }));
  const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
  EXPECT_EQ(ref.d_slopes[0], 0.0);
}

// The last token's key and value, 1e20 each: the last row of a block, whose term of the slope
// gradient, (m - 1 - j) v_j . (k_j R), has weight 0. v_j . (k_j R) leaves fp32, and 0 times it was
// NaN where the reference is finite (found by the fuzzer, 2026-12-07). As the last token, k_j v_j
// meets no later token nor a decay before dS_out; d_o is 0 there, so that no gradient of the case
// leaves fp32 (dq_j would hold (do_j . v_j) k_j).
TEST_P(Backward, SlopeGradientSkipsTermsOfWeightZero) {
  for (const int64_t n : {int64_t{1}, int64_t{8}, int64_t{20}}) {
    Case c{1, 1, 1, n, 4, 4, 8};
    Problem p(c);
    const int64_t j = n - 1;
    p.k[static_cast<size_t>(j * 4)] = 1e20f;
    p.v[static_cast<size_t>(j * 4 + 1)] = 1e20f;
    std::fill_n(p.d_o.begin() + j * 4, 4, 0.0f);
    p.run(GetParam());
    const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
    ASSERT_TRUE(std::isfinite(ref.d_slopes[0])) << "n=" << n;
    EXPECT_LE(rel_rms(p.dsl, ref.d_slopes), kFp32Tolerance) << "n=" << n << ": " << p.dsl[0] << " against " << ref.d_slopes[0];
    EXPECT_LE(rel_rms(contiguous(p.out(p.dk, 1, 4)), ref.dk), kFp32Tolerance) << "n=" << n;
    EXPECT_LE(rel_rms(contiguous(p.out(p.dv, 1, 4)), ref.dv), kFp32Tolerance) << "n=" << n;
  }
}

// At scale 0 the slope gradient is 0 (without dS_out) even where q . k itself leaves fp32: the
// weights c (i-j) lambda^(i-j) of the pairs within a block are 0, and a term of weight 0 is skipped,
// where 0 * Inf had made it NaN. (The other gradients need |q . k| below FLT_MAX: README
// ## Reliability, Overflow.)
TEST_P(Backward, SlopeGradientAtScaleZeroWithQKPastFltMax) {
  Case c{1, 1, 1, 24, 4, 4, 8};
  c.scale = 0.0f;
  c.d_state_out = false;
  Problem p(c);
  p.q[5 * 4 + 0] = 1e20f;
  p.k[3 * 4 + 0] = 1e20f;
  p.run(GetParam());
  EXPECT_EQ(p.dsl[0], 0.0f);
  const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
  EXPECT_EQ(ref.d_slopes[0], 0.0);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Backward);

// The sequence-parallel backward (detail::backward_split): threads along the sequence when the
// (batch, k/v head) items do not share out evenly over them. Against the double reference and one
// thread; then hand-made plans given to backward_split itself, in both of its ways (rows corrected,
// pieces rerun), so that the split runs whatever the rules for taking it say.
struct Gradients {
  std::vector<float> dq, dk, dv, ds0, dsl;
  /** Buffers for p's gradients, every entry -7 (no backward writes that): what was not written shows. */
  static Gradients unwritten(const Problem& p) {
    return {std::vector<float>(p.q.size(), -7.0f), std::vector<float>(p.k.size(), -7.0f),
            std::vector<float>(p.v.size(), -7.0f), std::vector<float>(p.s0.size(), -7.0f),
            std::vector<float>(static_cast<size_t>(p.c.kv_heads), -7.0f)};
  }
};

/**
 * p's backward (with d_slopes when `slope_gradient`), on `threads` threads, or by backward_split
 * with `plan` on 3 workers, rerunning its pieces or correcting rows as `rerun` says. `carried`:
 * d_state_in is the very same view as d_state_out (README ### Backward), which then holds p's dS_out.
 */
Gradients run_threads(Problem& p, Path path, int threads, bool slope_gradient,
                      const std::vector<detail::Piece>* plan = nullptr, bool rerun = false, bool carried = false) {
  const Case& c = p.c;
  Options opt = p.options(path);
  opt.threads = threads;
  Gradients g = Gradients::unwritten(p);
  const View<float> dq = p.out(g.dq, c.q_heads, c.dk), dk = p.out(g.dk, c.kv_heads, c.dk),
                    dv = p.out(g.dv, c.kv_heads, c.dv);
  const View<float> ds0 = state_view(g.ds0.data(), c.batch, c.kv_heads, c.dk, c.dv);
  if (carried) g.ds0 = p.ds1;
  const View<const float> ds1 = carried ? View<const float>(ds0) : p.ds1v();
  if (!plan) {
    backward(p.qv(), p.kv(), p.vv(), p.dov(), dq, dk, dv, opt, p.s0v(), ds1, ds0,
             slope_gradient ? g.dsl.data() : nullptr);
  } else {
    std::vector<double> parts(static_cast<size_t>(c.batch * c.kv_heads));
    const detail::BackwardArgs<float> args{p.qv(), p.kv(), p.vv(), p.dov(), dq, dk, dv, p.s0v(), ds1, ds0,
                                           slope_gradient ? parts.data() : nullptr, kSlopes, c.scale, c.block};
    detail::with_path(path, [&](auto q) { detail::backward_split<decltype(q)::value>(args, 3, *plan, true, true, rerun); });
    if (slope_gradient)
      for (int64_t h = 0; h < c.kv_heads; ++h) {
        double sum = 0;
        for (int64_t b = 0; b < c.batch; ++b) sum += parts[static_cast<size_t>(b * c.kv_heads + h)];
        g.dsl[static_cast<size_t>(h)] = static_cast<float>(sum);
      }
  }
  return g;
}

class BackwardSequenceParallel : public ::testing::TestWithParam<Path> {
 protected:
  void expect_close(const Case& c, int threads, const std::vector<detail::Piece>* plan = nullptr, bool rerun = false,
                    bool slope_gradient = false, bool carried = false) {
    Problem p(c);
    const Gradients one = run_threads(p, GetParam(), 1, slope_gradient),
                    many = run_threads(p, GetParam(), threads, slope_gradient, plan, rerun, carried);
    const auto ref = reference::backward_quadratic(p.qv(), p.kv(), p.vv(), p.dov(), kSlopes, c.scale, p.s0v(), p.ds1v());
    const std::string what = "B=" + std::to_string(c.batch) + " H=" + std::to_string(c.q_heads) + "/" +
                             std::to_string(c.kv_heads) + " n=" + std::to_string(c.n) + " threads=" +
                             std::to_string(threads) + (plan ? rerun ? " (plan, rerun)" : " (plan, corrected)" : "") +
                             " state_in=" + std::to_string(c.state_in) + " d_state_out=" + std::to_string(c.d_state_out) +
                             (slope_gradient ? " with d_slopes" : "") + (carried ? " carried" : "");
    const auto both = [&](const char* name, const std::vector<float>& got, const std::vector<float>& alone,
                          const std::vector<double>& want, const View<float>& layout) {
      const std::vector<float> g = layout.data ? contiguous(layout) : got;
      const std::vector<double> a(alone.begin(), alone.end());
      EXPECT_LE(rel_rms(got, a), kFp32Tolerance) << what << ": " << name << " against one thread";
      EXPECT_LE(rel_rms(g, want), kFp32Tolerance) << what << ": " << name << " against the reference";
    };
    Gradients m = many;
    both("dq", m.dq, one.dq, ref.dq, p.out(m.dq, c.q_heads, c.dk));
    both("dk", m.dk, one.dk, ref.dk, p.out(m.dk, c.kv_heads, c.dk));
    both("dv", m.dv, one.dv, ref.dv, p.out(m.dv, c.kv_heads, c.dv));
    both("d_state_in", m.ds0, one.ds0, ref.d_state_in, View<float>());
    if (slope_gradient)
      both("d_slopes", m.dsl, one.dsl, ref.d_slopes, View<float>());
    else
      EXPECT_EQ(m.dsl, std::vector<float>(m.dsl.size(), -7.0f)) << what;
  }
};

TEST_P(BackwardSequenceParallel, OneItemManyThreads) {
  // One k/v head (slope 0: every correction would reach every row of its piece, so the pieces
  // rerun), MQA, d_k != d_v; with and without d_slopes.
  for (bool slope_gradient : {false, true}) {
    for (int threads : {2, 3, 5}) expect_close({1, 3, 1, 700, 16, 24, 16}, threads, nullptr, false, slope_gradient);
    expect_close({1, 1, 1, 1000, 8, 8, 16, Layout::bnhd, false, false}, 2, nullptr, false, slope_gradient);
  }
}

TEST_P(BackwardSequenceParallel, ItemsNotAMultipleOfThreads) {
  // Slopes 0, 1e-6, 0.05, 8 and 30 on the k/v heads: strong decays end the corrections early.
  for (bool slope_gradient : {false, true}) {
    expect_close({3, 2, 2, 400, 8, 8, 16}, 4, nullptr, false, slope_gradient);
    expect_close({1, 10, 5, 500, 16, 8, 16, Layout::bhnd, true, false}, 3, nullptr, false, slope_gradient);
    expect_close({2, 6, 3, 300, 8, 16, 16, Layout::bnhd, false, true, 0.5f}, 4, nullptr, false, slope_gradient);
  }
}

TEST_P(BackwardSequenceParallel, HandMadePlans) {
  // Uneven, empty and one-token pieces, several pieces of an item on one worker; both ways, and the
  // rerun also with d_slopes (summed over an item's pieces).
  const std::vector<std::vector<detail::Piece>> plans = {
      {{0, 0, 1, 0}, {0, 1, 1, 1}, {0, 1, 300, 1}, {0, 300, 301, 0}, {1, 0, 301, 2}},
      {{0, 0, 0, 1}, {0, 0, 17, 2}, {0, 17, 200, 0}, {0, 200, 301, 2}, {1, 0, 150, 2}, {1, 150, 151, 0},
       {1, 151, 301, 1}},
  };
  for (const auto& plan : plans)
    for (auto [rerun, slope_gradient] : {std::pair{false, false}, {true, false}, {true, true}}) {
      expect_close({1, 4, 2, 301, 16, 8, 16}, 3, &plan, rerun, slope_gradient);
      expect_close({2, 1, 1, 301, 8, 16, 24, Layout::bhnd, false, true}, 3, &plan, rerun, slope_gradient);
    }
}

TEST_P(BackwardSequenceParallel, AdjointCarriedInPlace) {
  // d_state_in the very same view as d_state_out: an item's first piece must not write dS_in before
  // its last piece has read dS_out (found by scripts/fuzz.sh on the rerun's first version; the slope
  // 0 of the first k/v head makes the API rerun).
  const std::vector<detail::Piece> plan = {{0, 0, 100, 0}, {0, 100, 200, 1}, {0, 200, 301, 2}};
  for (bool slope_gradient : {false, true}) {
    expect_close({1, 2, 1, 301, 8, 8, 16}, 3, nullptr, false, slope_gradient, true);
    expect_close({1, 2, 1, 301, 8, 8, 16}, 3, &plan, true, slope_gradient, true);
  }
  expect_close({1, 2, 1, 301, 8, 8, 16}, 3, &plan, false, false, true);
}

TEST(BackwardSequenceParallelWay, RerunWhenCorrectionsWouldReachMostRows) {
  // One item of 16384 tokens on 2 workers, one q head: rerunning costs the busier worker one
  // product per row of its piece (8192); correcting costs 3 per row before the weight underflows
  // (dQ of the second piece, dK and dV of the first), shared by both workers.
  const std::vector<float> none;
  const auto args = [&](const float* slopes) {
    const auto x = bhnd<const float>(none.data(), 1, 1, 16384, 8);
    const auto y = bhnd<float>(nullptr, 1, 1, 16384, 8);
    return detail::BackwardArgs<float>{x, x, x, x, y, y, y, {}, {}, {}, nullptr, slopes, 1.0f, 16};
  };
  const std::vector<detail::Piece> halves = {{0, 0, 8192, 0}, {0, 8192, 16384, 1}};
  const float none_decay[] = {0.0f}, slow[] = {87.4f / 6000}, fast[] = {87.4f / 5000};
  EXPECT_TRUE(detail::rerun_cheaper(args(none_decay), 2, halves, true, true));
  EXPECT_TRUE(detail::rerun_cheaper(args(nullptr), 2, halves, true, true));
  EXPECT_TRUE(detail::rerun_cheaper(args(slow), 2, halves, true, true));    // 3 x 5997 / 2 > 8192
  EXPECT_FALSE(detail::rerun_cheaper(args(fast), 2, halves, true, true));   // 3 x 4997 / 2 < 8192
  EXPECT_FALSE(detail::rerun_cheaper(args(none_decay), 2, halves, false, true));  // no dQ: 2 per row
}

// 16-bit storage on threads along the sequence: a corrected row is rounded after its piece's passes
// and again after the correction, so each gradient is within two roundings (relative RMS 2u) of the
// fp32 gradients of one thread on the same rounded inputs; measured 0.47u on every path, where a
// missing correction is off by far more.
template <class T>
void expect_half_split_close(Path path, double unit_roundoff) {
  const Case c{1, 2, 1, 600, 16, 8, 16};
  Problem p(c);
  for (auto* x : {&p.q, &p.k, &p.v, &p.d_o}) *x = to_floats(to_storage<T>(*x));
  const Gradients want = run_threads(p, path, 1, false);
  const auto q = to_storage<T>(p.q), k = to_storage<T>(p.k), v = to_storage<T>(p.v), d_o = to_storage<T>(p.d_o);
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<float> ds0(p.s0.size());
  Options opt = p.options(path);
  opt.threads = 2;
  backward(bhnd(q.data(), 1, 2, c.n, c.dk), bhnd(k.data(), 1, 1, c.n, c.dk), bhnd(v.data(), 1, 1, c.n, c.dv),
           bhnd(d_o.data(), 1, 2, c.n, c.dv), bhnd(dq.data(), 1, 2, c.n, c.dk), bhnd(dk.data(), 1, 1, c.n, c.dk),
           bhnd(dv.data(), 1, 1, c.n, c.dv), opt, p.s0v(), p.ds1v(), state_view(ds0.data(), 1, 1, c.dk, c.dv));
  const auto close = [&](const std::vector<T>& got, const std::vector<float>& fp32) {
    return rel_rms(to_floats(got), std::vector<double>(fp32.begin(), fp32.end()));
  };
  EXPECT_LE(close(dq, want.dq), 2 * unit_roundoff);
  EXPECT_LE(close(dk, want.dk), 2 * unit_roundoff);
  EXPECT_LE(close(dv, want.dv), 2 * unit_roundoff);
  EXPECT_LE(rel_rms(ds0, std::vector<double>(want.ds0.begin(), want.ds0.end())), kFp32Tolerance);
}

TEST_P(BackwardSequenceParallel, HalfStorageCloseToTheFp32Gradients) {
  expect_half_split_close<bf16>(GetParam(), std::ldexp(1.0, -8));
  expect_half_split_close<fp16>(GetParam(), std::ldexp(1.0, -11));
}

LIGHTNING_INSTANTIATE_FOR_PATHS(BackwardSequenceParallel);

/** Tokens [t0, t0 + len) of token-major [tokens, heads, d] memory (batch 1), the packed layout. */
template <class X>
View<X> packed(X* p, int64_t heads, int64_t t0, int64_t len, int64_t d) {
  return View<X>(p + t0 * heads * d, 1, heads, len, d, len * heads * d, d, heads * d);
}

/**
 * backward_varlen over sequences of `lengths` packed in token-major memory with 3 tokens after them,
 * against backward() on each sequence alone (the same bits for dq, dk, dv and d_state_in; d_slopes
 * the sum of theirs) and, for fp32, against the double reference of each sequence; the tokens
 * after the last sequence keep their values.
 */
template <class T>
void expect_varlen_equals_each_sequence(Path path, int64_t H, int64_t G, int64_t dk, int64_t dv,
                                        const std::vector<int64_t>& lengths, int64_t block, int threads = 1,
                                        bool states = true) {
  std::vector<int64_t> offsets = {0};
  for (int64_t len : lengths) offsets.push_back(offsets.back() + len);
  const int64_t S = static_cast<int64_t>(lengths.size()), N = offsets.back() + 3, st = G * dk * dv;
  const auto q = to_storage<T>(randn(N * H * dk, 0.5f, 81)), k = to_storage<T>(randn(N * G * dk, 0.5f, 82));
  const auto v = to_storage<T>(randn(N * G * dv, 1.0f, 83)), d_o = to_storage<T>(randn(N * H * dv, 1.0f, 84));
  const auto s0 = randn(S * st, 0.3f, 85), ds1 = randn(S * st, 0.3f, 86);
  const T sentinel = detail::from_float<T>(-7.0f);
  std::vector<T> dq(q.size(), sentinel), dk_(k.size(), sentinel), dv_(v.size(), sentinel);
  std::vector<T> dq1(dq), dk1(dk_), dv1(dv_);
  std::vector<float> ds0(s0.size(), -7.0f), ds01(ds0), dsl(G, -7.0f);
  std::vector<double> dsl_sum(G, 0.0), dsl_ref(G, 0.0);
  Options opt;
  opt.slopes = kSlopes;
  opt.block_size = block;
  opt.path = path;
  const auto state = [&](const std::vector<float>& x, int64_t rows, int64_t i) {
    return states ? state_view(x.data() + i * st, rows, G, dk, dv) : View<const float>();
  };
  opt.threads = threads;
  backward_varlen(packed(q.data(), H, 0, N, dk), packed(k.data(), G, 0, N, dk), packed(v.data(), G, 0, N, dv),
                  packed(d_o.data(), H, 0, N, dv), packed(dq.data(), H, 0, N, dk), packed(dk_.data(), G, 0, N, dk),
                  packed(dv_.data(), G, 0, N, dv), offsets.data(), S, opt, state(s0, S, 0), state(ds1, S, 0),
                  state_view(ds0.data(), S, G, dk, dv), dsl.data());
  opt.threads = 1;
  const std::vector<float> qf = to_floats(q), kf = to_floats(k), vf = to_floats(v), dof = to_floats(d_o);
  double worst = 0;
  for (int64_t i = 0; i < S; ++i) {
    const int64_t t0 = offsets[i], len = lengths[i];
    std::vector<float> dsl1(G);
    backward(packed(q.data(), H, t0, len, dk), packed(k.data(), G, t0, len, dk), packed(v.data(), G, t0, len, dv),
             packed(d_o.data(), H, t0, len, dv), packed(dq1.data(), H, t0, len, dk),
             packed(dk1.data(), G, t0, len, dk), packed(dv1.data(), G, t0, len, dv), opt, state(s0, 1, i),
             state(ds1, 1, i), state_view(ds01.data() + i * st, 1, G, dk, dv), dsl1.data());
    for (int64_t g = 0; g < G; ++g) dsl_sum[g] += dsl1[g];
    const auto ref = reference::backward_quadratic(
        packed(qf.data(), H, t0, len, dk), packed(kf.data(), G, t0, len, dk), packed(vf.data(), G, t0, len, dv),
        packed(dof.data(), H, t0, len, dv), kSlopes, 1.0, state(s0, 1, i), state(ds1, 1, i));
    for (int64_t g = 0; g < G; ++g) dsl_ref[g] += ref.d_slopes[g];
    if constexpr (std::is_same_v<T, float>) {
      if (len == 0) continue;
      const auto got = [&](std::vector<float>& x, int64_t heads, int64_t d) {
        return contiguous(packed(x.data(), heads, t0, len, d));
      };
      worst = std::max({worst, rel_rms(got(dq, H, dk), ref.dq), rel_rms(got(dk_, G, dk), ref.dk),
                        rel_rms(got(dv_, G, dv), ref.dv)});
    }
  }
  const std::string what = std::string(path_name(path)) + " block " + std::to_string(block);
  EXPECT_LE(worst, kFp32Tolerance) << what;
  EXPECT_EQ(to_floats(dq), to_floats(dq1)) << what;  // tokens after the last sequence: -7 in both
  EXPECT_EQ(to_floats(dk_), to_floats(dk1)) << what;
  EXPECT_EQ(to_floats(dv_), to_floats(dv1)) << what;
  EXPECT_EQ(ds0, ds01) << what;
  EXPECT_LE(rel_rms(dsl, dsl_sum), 1e-6) << what;  // one rounding of the sum against one per sequence
  EXPECT_LE(rel_rms(dsl, dsl_ref), kFp32Tolerance) << what;
}

class BackwardVarlen : public ::testing::TestWithParam<Path> {};

TEST_P(BackwardVarlen, EqualsEachSequenceAlone) {
  // Lengths 0 and 1, around the blocks, at both ends of the batch.
  const std::vector<int64_t> lengths = {0, 1, 15, 16, 17, 0, 33, 1, 100, 2, 0};
  for (int64_t block : {16, 0}) expect_varlen_equals_each_sequence<float>(GetParam(), 3, 3, 16, 8, lengths, block);
}

TEST_P(BackwardVarlen, GroupedHeadsOddDimsStatesAbsentAndThreads) {
  expect_varlen_equals_each_sequence<float>(GetParam(), 6, 2, 5, 7, {7, 0, 40, 1, 19}, 8);
  expect_varlen_equals_each_sequence<float>(GetParam(), 4, 1, 16, 16, {64, 65, 1, 0, 3}, 32, 0);
  expect_varlen_equals_each_sequence<float>(GetParam(), 2, 2, 8, 8, {0, 30, 1, 9}, 8, 1, /*states=*/false);
}

TEST_P(BackwardVarlen, HalfStorage) {
  expect_varlen_equals_each_sequence<bf16>(GetParam(), 4, 2, 16, 24, {5, 0, 53, 17}, 16);
  expect_varlen_equals_each_sequence<fp16>(GetParam(), 3, 3, 9, 7, {40, 1, 0, 12}, 0);
}

TEST_P(BackwardVarlen, NoSequences) {
  const std::vector<float> x(12, 1.0f);
  std::vector<float> dq(12, -7.0f);
  float dsl = -7.0f;
  const int64_t offsets[] = {0};
  const auto view = [](auto* p) { return packed(p, 1, 0, 3, 4); };
  Options opt;
  opt.path = GetParam();
  backward_varlen(view(x.data()), view(x.data()), view(x.data()), view(x.data()), view(dq.data()), View<float>(),
                  View<float>(), offsets, 0, opt, {}, {}, {}, &dsl);
  for (float e : dq) EXPECT_EQ(e, -7.0f);
  EXPECT_EQ(dsl, 0.0f);  // a sum over no sequences
}

// A backward that writes nothing (every output absent; or no token, and neither dS_in nor d_slopes)
// returns at once, however many batch entries and heads it names (Forward.NothingToWriteReturnsAtOnce).
TEST_P(BackwardVarlen, NothingToWriteReturnsAtOnce) {
  const float x[8] = {};
  float out[1] = {7.0f};
  Options opt;
  opt.path = GetParam();
  opt.block_size = 4096;
  const View<const float> in(x, int64_t{1} << 61, 2, 3, 8, 0, 0, 0);  // 3 tokens of 2^61 batch entries
  backward(in, in, in, in, View<float>(), View<float>(), View<float>(), opt);
  const View<const float> no_q_head(x, 1, 0, 5, 8, 0, 0, 0), kv(x, 1, int64_t{1} << 31, 5, 8, 0, 0, 0);
  const int64_t no_tokens[] = {0, 0, 0};
  backward_varlen(no_q_head, kv, kv, no_q_head, View<float>(out, 1, 0, 5, 8, 0, 0, 0), View<float>(), View<float>(),
                  no_tokens, 2, opt);
  EXPECT_EQ(out[0], 7.0f);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(BackwardVarlen);

TEST(BackwardVarlenErrors, BadOffsetsAndShapesWriteNothing) {
  const int64_t H = 2, N = 10, D = 4;
  const std::vector<float> x = randn(N * H * D, 1, 1);
  std::vector<float> dq(x.size(), -7.0f), ds(3 * H * D * D, -7.0f);
  const auto in = packed(x.data(), H, 0, N, D);
  const auto out = packed(dq.data(), H, 0, N, D);
  const auto run = [&](const int64_t* offsets, int64_t num) {
    return [&, offsets, num] {
      backward_varlen(in, in, in, in, out, View<float>(), View<float>(), offsets, num, {}, {}, {},
                      state_view(ds.data(), num, H, D, D));
    };
  };
  const int64_t decreasing[] = {0, 6, 4, 10}, past[] = {0, 4, 11}, start[] = {1, 4, 10}, fine[] = {0, 4, 10};
  expect_invalid_argument(run(decreasing, 3), {"lightning::backward_varlen", "offsets[1] = 6 > offsets[2] = 4"});
  expect_invalid_argument(run(past, 2), {"offsets[2] = 11", "past the token axis of 10"});
  expect_invalid_argument(run(start, 2), {"offsets[0] must be 0, got 1"});
  expect_invalid_argument(run(nullptr, 2), {"offsets is null"});
  expect_invalid_argument(run(fine, -1), {"num_seqs must be >= 0, got -1"});
  expect_invalid_argument(
      [&] {
        backward_varlen(in, in, in, in, out, View<float>(), View<float>(), fine, 2, {}, {}, {},
                        state_view(ds.data(), 3, H, D, D));
      },
      {"d_state_in", "batch=3", "batch=2"});
  std::vector<float> x2(2 * x.size());
  const auto two = bhnd<const float>(x2.data(), 2, H, N, D);
  std::vector<float> dq2(x2.size(), -7.0f);
  expect_invalid_argument([&] { backward_varlen(two, two, two, two, bhnd(dq2.data(), 2, H, N, D), {}, {}, fine, 2); },
                          {"q.batch = 1, got 2"});
  for (float e : dq) EXPECT_EQ(e, -7.0f);
  for (float e : dq2) EXPECT_EQ(e, -7.0f);
  for (float e : ds) EXPECT_EQ(e, -7.0f);
}

// The reference gradients against central differences of L = sum do . o + <dS_out, S_out>, evaluated
// in double by the forward reference. L is linear in each single element of q, k, v and S_in, so their
// differences are exact up to rounding; the slopes' are O(eps^2).
TEST(BackwardReference, MatchesFiniteDifferences) {
  const int64_t B = 2, H = 4, G = 2, n = 9, dk = 3, dv = 2;
  auto q = randn(B * H * n * dk, 0.7f, 41), k = randn(B * G * n * dk, 0.7f, 42), v = randn(B * G * n * dv, 1, 43);
  auto d_o = randn(B * H * n * dv, 1, 44), s0 = randn(B * G * dk * dv, 1, 45), ds1 = randn(B * G * dk * dv, 1, 46);
  std::vector<float> slopes = {0.3f, 0.05f};
  const double scale = 0.7;
  const auto qv = bhnd<const float>(q.data(), B, H, n, dk), kv = bhnd<const float>(k.data(), B, G, n, dk),
             vv = bhnd<const float>(v.data(), B, G, n, dv), dov = bhnd<const float>(d_o.data(), B, H, n, dv);
  const auto s0v = state_view(static_cast<const float*>(s0.data()), B, G, dk, dv);
  const auto ds1v = state_view(static_cast<const float*>(ds1.data()), B, G, dk, dv);
  const auto loss = [&] {
    const auto r = reference::quadratic(qv, kv, vv, slopes.data(), scale, s0v);
    double l = 0;
    for (size_t i = 0; i < r.o.size(); ++i) l += r.o[i] * d_o[i];
    for (size_t i = 0; i < r.state.size(); ++i) l += r.state[i] * ds1[i];
    return l;
  };
  const auto g = reference::backward_quadratic(qv, kv, vv, dov, slopes.data(), scale, s0v, ds1v);
  // Central difference for every element of x, with the step actually representable in float.
  const auto check = [&](std::vector<float>& x, const std::vector<double>& grad, float eps, double tol, const char* name) {
    ASSERT_EQ(x.size(), grad.size());
    std::vector<double> fd(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const float x0 = x[i];
      x[i] = x0 + eps;
      const double up = loss(), hi = x[i];
      x[i] = x0 - eps;
      const double down = loss(), lo = x[i];
      x[i] = x0;
      fd[i] = (up - down) / (hi - lo);
    }
    EXPECT_LE(rel_rms(fd, grad), tol) << name;
  };
  check(q, g.dq, 1e-2f, 1e-9, "dq");
  check(k, g.dk, 1e-2f, 1e-9, "dk");
  check(v, g.dv, 1e-2f, 1e-9, "dv");
  check(s0, g.d_state_in, 1e-2f, 1e-9, "d_state_in");
  check(slopes, g.d_slopes, 1e-3f, 1e-5, "d_slopes");
}

// No q heads (q and d_o are [batch, 0, n, d]; k and v have heads): only the adjoint state dS_out
// reaches dK, dV, dS_in and the slopes, decayed. The fuzzer found this shape spending 2^30 steps per
// block in the prefetcher, whose stream for the stash of P~ had no columns (group 0); dV was left
// unwritten and dS_in undecayed.
TEST(BackwardEdges, NoQueryHeads) {
  // N = 200: on 3 threads the two items are cut along the sequence (backward_split), whose pieces of
  // q, d_o and dq (null data, no heads) once added an offset to a null pointer (UBSan).
  constexpr int64_t B = 1, G = 2, N = 200, DK = 5, DV = 3;
  const std::vector<float> none, slopes{0.3f, 0.05f};
  const auto k = randn(B * G * N * DK, 1, 1), v = randn(B * G * N * DV, 1, 2);
  const auto s0 = randn(B * G * DK * DV, 1, 3), ds1 = randn(B * G * DK * DV, 1, 4);
  const auto kv = [&](const std::vector<float>& x, int64_t d) { return bhnd(x.data(), B, G, N, d); };
  const auto qo = [&](int64_t d) { return bhnd(none.data(), B, 0, N, d); };
  const auto st = [&](const std::vector<float>& x) { return state_view(x.data(), B, G, DK, DV); };
  const auto ref = reference::backward_quadratic(qo(DK), kv(k, DK), kv(v, DV), qo(DV), slopes.data(), 1.0f, st(s0),
                                                 st(ds1));
  for (Path path : compiled_paths)
    for (bool with_ds1 : {true, false})
      for (bool split : {false, true}) {
        std::vector<float> dq, dk(k.size(), 42.0f), dv(v.size(), 42.0f), ds0(s0.size(), 42.0f), dsl(G, 42.0f);
        Options opt;
        opt.path = path;
        opt.block_size = 16;
        opt.slopes = slopes.data();
        opt.threads = split ? 3 : 1;
        backward(qo(DK), kv(k, DK), kv(v, DV), qo(DV), bhnd(dq.data(), B, 0, N, DK), bhnd(dk.data(), B, G, N, DK),
                 bhnd(dv.data(), B, G, N, DV), opt, st(s0), with_ds1 ? st(ds1) : View<const float>{},
                 state_view(ds0.data(), B, G, DK, DV), dsl.data());
        const std::string what = std::string(path_name(path)) + (with_ds1 ? ", dS_out" : ", no dS_out") +
                                 (split ? ", 3 threads" : "");
        if (with_ds1) {
          EXPECT_LE(rel_rms(dk, ref.dk), kFp32Tolerance) << what;
          EXPECT_LE(rel_rms(dv, ref.dv), kFp32Tolerance) << what;
          EXPECT_LE(rel_rms(ds0, ref.d_state_in), kFp32Tolerance) << what;
          EXPECT_LE(rel_rms(dsl, ref.d_slopes), kFp32Tolerance) << what;
        } else {
          for (const auto* x : {&dk, &dv, &ds0, &dsl})
            EXPECT_TRUE(std::all_of(x->begin(), x->end(), [](float e) { return e == 0.0f; })) << what;
        }
      }
}

// A stream without columns adds no lines, so step() always finishes its streams (see NoQueryHeads).
TEST(BackwardEdges, PrefetcherIgnoresStreamsWithoutColumns) {
  std::vector<float> x(64);
  detail::Prefetcher pf;
  pf.start(4);
  pf.add(View<float>(x.data(), 1, 1, 4, 0, 0, 0, 16), 0, 0, 0, true);
  EXPECT_EQ(pf.count, 0);
  pf.add_rows(x.data(), 16, 0, true);
  EXPECT_EQ(pf.count, 0);
  pf.add(View<float>(x.data(), 1, 1, 4, 16, 0, 0, 16), 0, 0, 0, false);
  EXPECT_EQ(pf.count, 1);
  pf.step(4);  // one line per row
  EXPECT_EQ(pf.at, pf.count);
}

// step<true> (pass 2's order) asks exactly the lines step<false> asks, each stream from its last line
// to its first, streams in the order added; both finish after as many lines. The requests' spacing
// (Prefetcher::pace, every value the switch has) changes neither.
TEST(BackwardEdges, PrefetcherDescendingAsksTheSameLinesInReverse) {
  std::vector<float> x(4 * 64), y(4 * 64);
  const auto asked = [&](bool down, int pace = 0) {
    detail::Prefetcher pf;
    pf.pace = pace;
    pf.start(3);                                                            // rows 1..3 of each
    pf.add(View<float>(x.data(), 1, 1, 4, 40, 0, 0, 64), 0, 0, 1, false);  // 40 floats: 3 lines a row
    pf.add(View<float>(y.data(), 1, 1, 4, 16, 0, 0, 64), 0, 0, 1, true);   // 1 line a row
    std::vector<std::pair<const char*, bool>> lines;
    const auto record = [&](const char* p, bool write, bool) { lines.push_back({p, write}); };
    for (int i = 0; i < 5; ++i) down ? pf.step<true>(3, record) : pf.step<false>(3, record);
    EXPECT_EQ(pf.at, pf.count);
    return lines;
  };
  const auto up = asked(false), down = asked(true);
  ASSERT_EQ(up.size(), 12u);  // 3 rows x 3 lines of x, then 3 rows x 1 line of y
  ASSERT_EQ(down.size(), up.size());
  const auto line = [](const std::vector<float>& v, int64_t row, int64_t l) {
    return reinterpret_cast<const char*>(v.data() + row * 64) + 64 * l;
  };
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t l = 0; l < 3; ++l) {
      EXPECT_EQ(up[static_cast<size_t>(r * 3 + l)].first, line(x, 1 + r, l));
      EXPECT_EQ(down[static_cast<size_t>(r * 3 + l)].first, line(x, 3 - r, 2 - l));
    }
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(up[static_cast<size_t>(9 + r)].first, line(y, 1 + r, 0));
    EXPECT_EQ(down[static_cast<size_t>(9 + r)].first, line(y, 3 - r, 0));
    EXPECT_TRUE(up[static_cast<size_t>(9 + r)].second && down[static_cast<size_t>(9 + r)].second);
  }
  EXPECT_FALSE(up[0].second || down[0].second);
  for (int pace = 1; pace <= 5; ++pace) {
    EXPECT_EQ(asked(false, pace), up) << "pace " << pace;
    EXPECT_EQ(asked(true, pace), down) << "pace " << pace;
  }
}

// Every bad input throws before anything is written.
TEST(BackwardErrors, RejectsBadInputAndWritesNothing) {
  constexpr int64_t B = 2, H = 2, N = 10, DK = 4, DV = 3;
  auto q = randn(B * H * N * DK, 1, 1), k = randn(B * H * N * DK, 1, 2), v = randn(B * H * N * DV, 1, 3);
  auto d_o = randn(B * H * N * DV, 1, 4), s0 = randn(B * H * DK * DV, 1, 5), ds1 = randn(B * H * DK * DV, 1, 6);
  std::vector<float> dq(q.size(), 42.0f), dk(k.size(), 42.0f), dv(v.size(), 42.0f), ds0(s0.size(), 42.0f), dsl(H, 42.0f);
  const auto in = [](const std::vector<float>& x, int64_t d) { return bhnd<const float>(x.data(), B, H, N, d); };
  const auto out = [](std::vector<float>& x, int64_t d) { return bhnd(x.data(), B, H, N, d); };
  const auto st = [](std::vector<float>& x) { return state_view(x.data(), B, H, DK, DV); };
  const auto cst = [](const std::vector<float>& x) { return state_view(x.data(), B, H, DK, DV); };
  struct Call {
    View<const float> q, k, v, d_o;
    View<float> dq, dk, dv;
    Options opt;
    View<const float> s0, ds1;
    View<float> ds0;
    float* dsl;
  };
  const Call good{in(q, DK), in(k, DK), in(v, DV), in(d_o, DV), out(dq, DK), out(dk, DK), out(dv, DV), {}, cst(s0),
                  cst(ds1), st(ds0), dsl.data()};
  const auto expect_rejected = [&](const Call& c, std::initializer_list<const char*> fragments) {
    try {
      backward(c.q, c.k, c.v, c.d_o, c.dq, c.dk, c.dv, c.opt, c.s0, c.ds1, c.ds0, c.dsl);
      ADD_FAILURE() << "no exception";
    } catch (const lightning::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("lightning::backward"), std::string::npos) << msg;
      for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
    }
    for (const auto* x : {&dq, &dk, &dv, &ds0, &dsl})
      EXPECT_TRUE(std::all_of(x->begin(), x->end(), [](float e) { return e == 42.0f; }));
  };
  Call c = good;
  c.k.seq = N - 1;
  expect_rejected(c, {"k [", "seq=9"});
  c = good;
  c.d_o.dim = DV + 1;
  expect_rejected(c, {"d_o [", "dim=4"});
  c = good;
  c.dq.dim = DK - 1;
  expect_rejected(c, {"dq [", "dim=3"});
  c = good;
  c.dk.heads = 1;
  expect_rejected(c, {"dk [", "heads=1"});
  c = good;
  c.dv.batch = 1;
  expect_rejected(c, {"dv [", "batch=1"});
  c = good;
  c.ds1.seq = DK + 1;
  expect_rejected(c, {"d_state_out [", "seq=5"});
  c = good;
  c.ds0.dim = 1;
  expect_rejected(c, {"d_state_in [", "dim=1"});
  c = good;
  c.d_o.data = nullptr;
  expect_rejected(c, {"d_o [", "null data"});
  c = good;
  c.dv.seq_stride = 0;
  expect_rejected(c, {"output dv", "write some elements twice"});
  c = good;
  c.dq = View<float>(const_cast<float*>(q.data()), B, H, N, DK, H * N * DK, N * DK, DK);
  expect_rejected(c, {"output dq overlaps q"});
  c = good;
  c.dk = View<float>(dq.data(), B, H, N, DK, H * N * DK, N * DK, DK);
  expect_rejected(c, {"output dk overlaps dq"});
  c = good;
  c.dsl = const_cast<float*>(d_o.data()) + 5;
  expect_rejected(c, {"output d_slopes overlaps d_o"});
  c = good;
  c.ds0 = state_view(ds0.data() + 1, B, H, DK, DV - 1);  // a shape mismatch reported before overlap
  expect_rejected(c, {"d_state_in ["});
  std::vector<float> big(2 * s0.size(), 42.0f);
  c = good;
  c.ds1 = state_view(static_cast<const float*>(big.data()), B, H, DK, DV);
  c.ds0 = state_view(big.data() + 1, B, H, DK, DV);  // overlaps d_state_out without being the same view
  expect_rejected(c, {"output d_state_in overlaps d_state_out"});
  const float bad_slopes[] = {0.1f, -1.0f};
  c = good;
  c.opt.slopes = bad_slopes;
  expect_rejected(c, {"slopes[1]", "-1"});
  c = good;
  c.opt.block_size = -2;
  expect_rejected(c, {"options.block_size", "-2"});
  // The gradient carried in place (d_state_in the very same view as d_state_out) is allowed.
  std::vector<float> carried = ds1;
  backward(good.q, good.k, good.v, good.d_o, good.dq, good.dk, good.dv, {}, good.s0,
           state_view(static_cast<const float*>(carried.data()), B, H, DK, DV), st(carried));
  EXPECT_NE(carried, ds1);
}

#if LIGHTNING_HAVE_AVX2
// avx2's dV and R panels in pass 2 are 24 or 16 columns wide as the L1 holds the loop's working set
// (detail::wide_panels), and on an L1 below 48 KiB pass 2 asks the V~^T stash and dK's rows into L1
// again (detail::reask_into_l1) and pass 1 asks its reads into L1, not L2
// (detail::pass1_reads_into_l1): whichever this machine takes, the suite above checks against the
// reference; here both settings, forced, give the same bits, with a short last block and d_v not a
// whole number of tiles.
TEST(BackwardL1Choices, EitherSettingGivesTheSameBits) {
  constexpr Path P = Path::avx2;
  EXPECT_FALSE(detail::wide_panels<P>(24, 24, 128, 32 * 1024));  // 43 KB at d = 128
  EXPECT_TRUE(detail::wide_panels<P>(24, 24, 128, 48 * 1024));
  EXPECT_TRUE(detail::wide_panels<P>(24, 24, 64, 32 * 1024));  // 25 KB at d = 64
  EXPECT_TRUE(detail::wide_panels<Path::scalar>(24, 24, 128, 1));
  EXPECT_TRUE(detail::reask_into_l1(32 * 1024));
  EXPECT_FALSE(detail::reask_into_l1(48 * 1024));
  EXPECT_TRUE(detail::pass1_reads_into_l1(32 * 1024));
  EXPECT_FALSE(detail::pass1_reads_into_l1(48 * 1024));
  const Case c{2, 2, 1, 100, 40, 56, 24};
  Problem p(c);
  const auto run = [&](int64_t l1_bytes) {
    Gradients g = Gradients::unwritten(p);
    detail::BackwardArgs<float> args{p.qv(), p.kv(), p.vv(), p.dov(), p.out(g.dq, c.q_heads, c.dk),
                                     p.out(g.dk, c.kv_heads, c.dk), p.out(g.dv, c.kv_heads, c.dv), p.s0v(), p.ds1v(),
                                     state_view(g.ds0.data(), c.batch, c.kv_heads, c.dk, c.dv), nullptr, kSlopes,
                                     c.scale, c.block};
    args.l1_bytes = l1_bytes;
    EXPECT_EQ(detail::wide_panels<P>(c.block, detail::block_stride<P>(c.block), c.dk, l1_bytes), l1_bytes > 1);
    EXPECT_EQ(detail::reask_into_l1(l1_bytes), l1_bytes == 1);
    EXPECT_EQ(detail::pass1_reads_into_l1(l1_bytes), l1_bytes == 1);
    detail::backward_all<P>(args, 1, nullptr, 0);
    return g;
  };
  const Gradients narrow = run(1), wide = run(1 << 30);
  EXPECT_EQ(narrow.dq, wide.dq);
  EXPECT_EQ(narrow.dk, wide.dk);
  EXPECT_EQ(narrow.dv, wide.dv);
  EXPECT_EQ(narrow.ds0, wide.ds0);
  EXPECT_TRUE(std::none_of(wide.dv.begin(), wide.dv.end(), [](float e) { return e == -7.0f; }));
}
#endif

}  // namespace
}  // namespace lightning::test
