// Inference features on every compiled path: packed variable-length prefill, grouped heads against
// repeated k/v, a long chunked prefill continued by decode, and bf16/fp16 storage.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

const float kSlopes[] = {0.05f, 1e-6f, 8.0f, 0.3f};

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "fp32" : std::is_same_v<T, bf16> ? "bf16" : "fp16";
}

/**
 * The bound on the relative RMS error of T outputs against the double reference: the fp32 bound
 * of SPEC.md plus the unit roundoff of T (2^-8 for bf16's 8 significant bits, 2^-11 for fp16's 11),
 * since rounding each output to nearest moves it by at most that fraction of its magnitude.
 */
template <class T>
double output_tolerance() {
  return kFp32Tolerance + (std::is_same_v<T, float> ? 0.0 : std::is_same_v<T, bf16> ? 0x1p-8 : 0x1p-11);
}

/** The largest |x - T(y)| in units of T's spacing at T(y): 16-bit outputs must be within one. */
template <class T>
double worst_ulps(const std::vector<T>& x, const std::vector<float>& y) {
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const T r = detail::from_float<T>(y[i]);
    const uint16_t mag = r.bits & 0x7fff;
    const double ulp = static_cast<double>(detail::to_float(T::from_bits(static_cast<uint16_t>(mag + 1)))) -
                       static_cast<double>(detail::to_float(T::from_bits(mag)));
    worst = std::max(worst, std::abs(static_cast<double>(detail::to_float(x[i])) - detail::to_float(r)) / ulp);
  }
  return worst;
}

/**
 * Sequences packed on one token axis in token-major [tokens, heads, d] memory (the layout of a
 * fused projection), with an initial state per sequence; inputs already rounded to T.
 */
template <class T>
struct Packed {
  int64_t H, G, N, dk, dv, S;
  std::vector<int64_t> offsets;
  std::vector<T> q, k, v;
  std::vector<float> s0;
  Packed(int64_t H_, int64_t G_, int64_t dk_, int64_t dv_, const std::vector<int64_t>& lengths, int64_t trailing)
      : H(H_), G(G_), dk(dk_), dv(dv_), S(static_cast<int64_t>(lengths.size())), offsets{0} {
    for (int64_t len : lengths) offsets.push_back(offsets.back() + len);
    N = offsets.back() + trailing;
    q = to_storage<T>(randn(N * H * dk, 0.5f, 31));
    k = to_storage<T>(randn(N * G * dk, 0.5f, 32));
    v = to_storage<T>(randn(N * G * dv, 1.0f, 33));
    s0 = randn(S * G * dk * dv, 0.3f, 34);
  }
  template <class X>
  static View<X> tokens(X* p, int64_t heads, int64_t t0, int64_t len, int64_t d) {
    return View<X>(p + t0 * heads * d, 1, heads, len, d, len * heads * d, d, heads * d);
  }
  bool initial_state = true;
  View<const float> state(int64_t i) const {
    return initial_state ? state_view(s0.data() + i * G * dk * dv, 1, G, dk, dv) : View<const float>();
  }
  View<const float> states() const {
    return initial_state ? state_view(s0.data(), S, G, dk, dv) : View<const float>();
  }
};

/** The double reference of a packed batch, each sequence alone, on the same (rounded) inputs. */
template <class T>
reference::Result packed_reference(const Packed<T>& p) {
  const std::vector<float> q = to_floats(p.q), k = to_floats(p.k), v = to_floats(p.v);
  reference::Result r{std::vector<double>(static_cast<size_t>(p.N * p.H * p.dv)),
                      std::vector<double>(static_cast<size_t>(p.S * p.G * p.dk * p.dv))};
  for (int64_t i = 0; i < p.S; ++i) {
    const int64_t t0 = p.offsets[i], len = p.offsets[i + 1] - t0;
    const auto ref = reference::quadratic(Packed<T>::tokens(q.data(), p.H, t0, len, p.dk),
                                          Packed<T>::tokens(k.data(), p.G, t0, len, p.dk),
                                          Packed<T>::tokens(v.data(), p.G, t0, len, p.dv), kSlopes, 1.0, p.state(i));
    for (int64_t h = 0; h < p.H; ++h)  // reference o is [1, H, len, dv]; ours is token-major
      for (int64_t t = 0; t < len; ++t)
        std::copy_n(&ref.o[static_cast<size_t>((h * len + t) * p.dv)], p.dv,
                    &r.o[static_cast<size_t>(((t0 + t) * p.H + h) * p.dv)]);
    std::copy(ref.state.begin(), ref.state.end(), r.state.begin() + i * p.G * p.dk * p.dv);
  }
  return r;
}

Options options_for(Path path, int64_t block) {
  Options o;
  o.slopes = kSlopes;
  o.path = path;
  o.block_size = block;
  return o;
}

/**
 * forward_varlen against the double reference and against forward() on each sequence alone (bit
 * for bit), tokens past the last sequence untouched; returns the worst relative RMS error.
 */
template <class T>
double check_varlen(Path path, int64_t H, int64_t G, int64_t dk, int64_t dv, const std::vector<int64_t>& lengths,
                    int64_t block, int threads = 1, bool initial_state = true) {
  Packed<T> p(H, G, dk, dv, lengths, 3);
  p.initial_state = initial_state;
  const T sentinel = detail::from_float<T>(42.0f);
  std::vector<T> o(static_cast<size_t>(p.N * H * dv), sentinel), o_loop(o.size(), sentinel);
  std::vector<float> s1(p.s0.size(), -7.0f), s_loop(p.s0.size(), -7.0f);
  Options options = options_for(path, block);
  options.threads = threads;
  forward_varlen(Packed<T>::tokens(p.q.data(), H, 0, p.N, dk), Packed<T>::tokens(p.k.data(), G, 0, p.N, dk),
                 Packed<T>::tokens(p.v.data(), G, 0, p.N, dv), Packed<T>::tokens(o.data(), H, 0, p.N, dv),
                 p.offsets.data(), p.S, options, p.states(),
                 state_view(s1.data(), p.S, G, dk, dv));
  for (int64_t i = 0; i < p.S; ++i) {
    const int64_t t0 = p.offsets[i], len = p.offsets[i + 1] - t0;
    forward(Packed<T>::tokens(p.q.data(), H, t0, len, dk), Packed<T>::tokens(p.k.data(), G, t0, len, dk),
            Packed<T>::tokens(p.v.data(), G, t0, len, dv), Packed<T>::tokens(o_loop.data(), H, t0, len, dv),
            options_for(path, block), p.state(i), state_view(s_loop.data() + i * G * dk * dv, 1, G, dk, dv));
  }
  const auto ref = packed_reference(p);
  const int64_t used = p.offsets.back() * H * dv;
  const std::vector<float> of = to_floats(o), of_loop = to_floats(o_loop);
  const double err_o = rel_rms(std::vector<float>(of.begin(), of.begin() + used),
                               std::vector<double>(ref.o.begin(), ref.o.begin() + used));
  const double err_s = rel_rms(s1, ref.state);
  EXPECT_LE(err_o, output_tolerance<T>());
  EXPECT_LE(err_s, kFp32Tolerance);
  EXPECT_EQ(of, of_loop);  // the same as one call per sequence, bit for bit
  EXPECT_EQ(s1, s_loop);
  for (int64_t i = used; i < static_cast<int64_t>(of.size()); ++i) EXPECT_EQ(of[i], 42.0f);  // trailing tokens
  return std::max(err_o, err_s);
}

class Varlen : public ::testing::TestWithParam<Path> {
 protected:
  Options opt(int64_t block) const { return options_for(GetParam(), block); }
};

TEST_P(Varlen, EqualsSequenceBySequence) {
  // Lengths 0 and 1, around the block of 16, at both ends of the batch.
  const std::vector<int64_t> lengths = {0, 1, 15, 16, 17, 0, 33, 1, 100, 2, 0};
  double worst = 0;
  for (int64_t block : {16, 0}) worst = std::max(worst, check_varlen<float>(GetParam(), 3, 3, 16, 8, lengths, block));
  std::printf("[varlen] %s fp32: worst rel RMS %.2e\n", path_name(GetParam()), worst);
}

TEST_P(Varlen, GroupedHeadsOddDimsAndThreads) {
  check_varlen<float>(GetParam(), 6, 2, 5, 7, {7, 0, 40, 1, 19}, 8);
  check_varlen<float>(GetParam(), 4, 1, 16, 16, {64, 65, 1, 0, 3}, 32, 0);
  check_varlen<float>(GetParam(), 2, 2, 8, 8, {0, 30, 1, 9}, 8, 1, /*initial_state=*/false);
}

TEST_P(Varlen, NoSequences) {
  const std::vector<float> x(12, 1.0f);
  std::vector<float> o(12, 42.0f);
  const int64_t offsets[] = {0};
  const auto view = [](auto* p) { return Packed<float>::tokens(p, 1, 0, 3, 4); };
  forward_varlen(view(x.data()), view(x.data()), view(x.data()), view(o.data()), offsets, 0, opt(0));
  for (float e : o) EXPECT_EQ(e, 42.0f);
}

TEST_P(Varlen, StateCarriedInPlaceAcrossCalls) {
  // Two packed calls over the halves of every sequence, states carried in one buffer, equal one call.
  const int64_t H = 2, dk = 8, dv = 8;
  const Packed<float> whole(H, H, dk, dv, {40, 0, 70}, 0);
  std::vector<float> o(whole.q.size()), o_parts(o.size()), s(whole.s0), s_whole(s.size());
  const auto tok = [&](const std::vector<float>& x, int64_t t0, int64_t len) {
    return Packed<float>::tokens(x.data(), H, t0, len, dk);
  };
  forward_varlen(tok(whole.q, 0, 110), tok(whole.k, 0, 110), tok(whole.v, 0, 110),
                 Packed<float>::tokens(o.data(), H, 0, 110, dv), whole.offsets.data(), 3, opt(16),
                 state_view(whole.s0.data(), 3, H, dk, dv), state_view(s_whole.data(), 3, H, dk, dv));
  // Each half in its own packed buffer: halves of lengths {20, 0, 35} then {20, 0, 35}.
  for (int half = 0; half < 2; ++half) {
    std::vector<float> q, k, v;
    for (auto [t0, len] : {std::pair<int64_t, int64_t>{20 * half, 20}, {40 + 35 * half, 35}})
      for (auto* x : {&q, &k, &v}) {
        const auto& src = x == &q ? whole.q : x == &k ? whole.k : whole.v;
        x->insert(x->end(), src.begin() + t0 * H * dk, src.begin() + (t0 + len) * H * dk);
      }
    const int64_t offsets[] = {0, 20, 20, 55};
    std::vector<float> o_half(q.size());
    forward_varlen(tok(q, 0, 55), tok(k, 0, 55), tok(v, 0, 55), Packed<float>::tokens(o_half.data(), H, 0, 55, dv),
                   offsets, 3, opt(16), state_view(static_cast<const float*>(s.data()), 3, H, dk, dv),
                   state_view(s.data(), 3, H, dk, dv));
    std::copy_n(o_half.begin(), 20 * H * dv, o_parts.begin() + 20 * half * H * dv);
    std::copy_n(o_half.begin() + 20 * H * dv, 35 * H * dv, o_parts.begin() + (40 + 35 * half) * H * dv);
  }
  EXPECT_LE(rel_rms(o_parts, std::vector<double>(o.begin(), o.end())), kFp32Tolerance);
  EXPECT_LE(rel_rms(s, std::vector<double>(s_whole.begin(), s_whole.end())), kFp32Tolerance);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(Varlen);

TEST(VarlenErrors, BadOffsetsAndShapes) {
  const int64_t H = 2, N = 10, D = 4;
  const std::vector<float> x = randn(N * H * D, 1, 1);
  std::vector<float> o(x.size(), 42.0f), s(3 * H * D * D, 42.0f);
  const auto in = Packed<float>::tokens(x.data(), H, 0, N, D);
  const auto out = Packed<float>::tokens(o.data(), H, 0, N, D);
  const auto run = [&](const int64_t* offsets, int64_t num) {
    return [&, offsets, num] { forward_varlen(in, in, in, out, offsets, num, {}, {}, state_view(s.data(), num, H, D, D)); };
  };
  const int64_t decreasing[] = {0, 6, 4, 10}, past[] = {0, 4, 11}, start[] = {1, 4, 10}, fine[] = {0, 4, 10};
  expect_invalid_argument(run(decreasing, 3), {"non-decreasing", "offsets[1] = 6 > offsets[2] = 4"});
  expect_invalid_argument(run(past, 2), {"offsets[2] = 11", "past the token axis of 10"});
  expect_invalid_argument(run(start, 2), {"offsets[0] must be 0, got 1"});
  expect_invalid_argument(run(nullptr, 2), {"offsets is null"});
  // The largest num_seqs: the message must not compute num_seqs + 1 (signed overflow, found by the fuzzer).
  const int64_t most = std::numeric_limits<int64_t>::max();
  expect_invalid_argument(run(nullptr, most), {"offsets is null", "num_seqs = 9223372036854775807"});
  expect_invalid_argument(run(fine, -1), {"num_seqs must be >= 0, got -1"});
  expect_invalid_argument([&] { forward_varlen(in, in, in, out, fine, 2, {}, {}, state_view(s.data(), 3, H, D, D)); },
                  {"state_out [batch=3", "expected [batch=2"});
  std::vector<float> x2(2 * x.size());
  const auto two = bhnd<const float>(x2.data(), 2, H, N, D);
  std::vector<float> o2(x2.size(), 42.0f);
  expect_invalid_argument([&] { forward_varlen(two, two, two, bhnd(o2.data(), 2, H, N, D), fine, 2); },
                  {"q.batch = 1, got 2"});
  for (float e : o) EXPECT_EQ(e, 42.0f);
  for (float e : o2) EXPECT_EQ(e, 42.0f);
  for (float e : s) EXPECT_EQ(e, 42.0f);
}

class GroupedHeads : public ::testing::TestWithParam<Path> {};

// q has H heads and k/v have G: the result equals running H heads with k, v, slopes and states
// repeated per q head (group h / (H/G)), for the forward and for decode steps after it.
TEST_P(GroupedHeads, EqualRepeatingKvPerQHead) {
  const int64_t B = 2, H = 6, G = 2, n = 150, dk = 16, dv = 8, steps = 3, rep = H / G;
  const auto q = randn(B * H * (n + steps) * dk, 0.5f, 41), k = randn(B * G * (n + steps) * dk, 0.5f, 42),
             v = randn(B * G * (n + steps) * dv, 1.0f, 43), s0 = randn(B * G * dk * dv, 0.3f, 44);
  const float slopes[G] = {0.05f, 0.3f};
  std::vector<float> k_rep(B * H * (n + steps) * dk), v_rep(B * H * (n + steps) * dv), s0_rep(B * H * dk * dv),
      slopes_rep(H);
  const auto repeat = [&](const std::vector<float>& x, std::vector<float>& y, int64_t per_head) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        std::copy_n(x.begin() + (b * G + h / rep) * per_head, per_head, y.begin() + (b * H + h) * per_head);
  };
  repeat(k, k_rep, (n + steps) * dk);
  repeat(v, v_rep, (n + steps) * dv);
  repeat(s0, s0_rep, dk * dv);
  for (int64_t h = 0; h < H; ++h) slopes_rep[h] = slopes[h / rep];

  const auto part = [&](const std::vector<float>& x, int64_t heads, int64_t t0, int64_t len, int64_t d) {
    return View<const float>(x.data() + t0 * d, B, heads, len, d, heads * (n + steps) * d, (n + steps) * d, d);
  };
  // Runs a forward over n tokens then `steps` decode steps; returns o and the final states.
  const auto run = [&](const std::vector<float>& kk, const std::vector<float>& vv, const std::vector<float>& ss,
                       const float* sl, int64_t kv_heads) {
    std::vector<float> o(B * H * (n + steps) * dv), s(ss);
    const auto o_part = [&](int64_t t0, int64_t len) {
      return View<float>(o.data() + t0 * dv, B, H, len, dv, H * (n + steps) * dv, (n + steps) * dv, dv);
    };
    Options opt;
    opt.slopes = sl;
    opt.path = GetParam();
    opt.block_size = 32;
    const auto states = state_view(s.data(), B, kv_heads, dk, dv);
    forward(part(q, H, 0, n, dk), part(kk, kv_heads, 0, n, dk), part(vv, kv_heads, 0, n, dv), o_part(0, n), opt,
            View<const float>(states), states);
    for (int64_t t = n; t < n + steps; ++t)
      decode(part(q, H, t, 1, dk), part(kk, kv_heads, t, 1, dk), part(vv, kv_heads, t, 1, dv), o_part(t, 1), states,
             opt);
    return std::make_pair(o, s);
  };
  const auto [o, s] = run(k, v, s0, slopes, G);
  const auto [o_rep, s_rep] = run(k_rep, v_rep, s0_rep, slopes_rep.data(), H);
  std::vector<float> s_expanded(s_rep.size());
  repeat(s, s_expanded, dk * dv);
  const double err_o = rel_rms(o, std::vector<double>(o_rep.begin(), o_rep.end()));
  const double err_s = rel_rms(s_expanded, std::vector<double>(s_rep.begin(), s_rep.end()));
  EXPECT_LE(err_o, 1e-6);
  EXPECT_LE(err_s, 1e-6);
  std::printf("[gqa] %s: grouped vs repeated k/v, rel RMS o %.2e states %.2e\n", path_name(GetParam()), err_o, err_s);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(GroupedHeads);

class ChunkedPrefill : public ::testing::TestWithParam<Path> {};

// 65536 tokens in uneven pieces with the state carried in place, then decode steps: equal to one
// forward over every token and to the double recurrence.
TEST_P(ChunkedPrefill, LongPromptThenDecode) {
  const int64_t H = 2, n = 65536, steps = 3, N = n + steps, dk = 16, dv = 16;
  const float slopes[H] = {1e-3f, 0.05f};
  const auto q = randn(H * N * dk, 0.5f, 51), k = randn(H * N * dk, 0.5f, 52), v = randn(H * N * dv, 1.0f, 53);
  const auto part = [&](const float* x, int64_t t0, int64_t len, int64_t d) {
    return View<const float>(x + t0 * d, 1, H, len, d, H * N * d, N * d, d);
  };
  std::vector<float> whole(H * N * dv), pieces(whole.size()), s_whole(H * dk * dv), s(s_whole.size());
  const auto o_part = [&](std::vector<float>& o, int64_t t0, int64_t len) {
    return View<float>(o.data() + t0 * dv, 1, H, len, dv, H * N * dv, N * dv, dv);
  };
  Options opt;
  opt.slopes = slopes;
  opt.path = GetParam();
  forward(part(q.data(), 0, N, dk), part(k.data(), 0, N, dk), part(v.data(), 0, N, dv), o_part(whole, 0, N), opt, {},
          state_view(s_whole.data(), 1, H, dk, dv));
  const auto states = state_view(s.data(), 1, H, dk, dv);
  int64_t t0 = 0;
  for (int64_t len : {1, 4095, 4096, 4097, 0, 20000, 33247}) {
    forward(part(q.data(), t0, len, dk), part(k.data(), t0, len, dk), part(v.data(), t0, len, dv),
            o_part(pieces, t0, len), opt, t0 == 0 ? View<const float>() : View<const float>(states), states);
    t0 += len;
  }
  ASSERT_EQ(t0, n);
  for (; t0 < N; ++t0)
    decode(part(q.data(), t0, 1, dk), part(k.data(), t0, 1, dk), part(v.data(), t0, 1, dv), o_part(pieces, t0, 1),
           states, opt);
  const auto ref = reference::recurrence(part(q.data(), 0, N, dk), part(k.data(), 0, N, dk), part(v.data(), 0, N, dv),
                                         slopes, 1.0);
  const double e_whole = rel_rms(pieces, std::vector<double>(whole.begin(), whole.end()));
  const double e_ref = rel_rms(pieces, ref.o), e_state = rel_rms(s, ref.state);
  EXPECT_LE(e_whole, kFp32Tolerance);
  EXPECT_LE(e_ref, kFp32Tolerance);
  EXPECT_LE(e_state, kFp32Tolerance);
  EXPECT_LE(rel_rms(s, std::vector<double>(s_whole.begin(), s_whole.end())), kFp32Tolerance);
  std::printf("[chunked] %s n=65536+3: vs one forward %.2e, vs reference o %.2e state %.2e\n", path_name(GetParam()),
              e_whole, e_ref, e_state);
}

LIGHTNING_INSTANTIATE_FOR_PATHS(ChunkedPrefill);

class HalfStorage : public ::testing::TestWithParam<Path> {
 protected:
  /**
   * A forward over n tokens then `steps` decode steps with T storage (bnhd or bhnd), against the
   * double reference on the same rounded inputs, and against the fp32 run on those inputs rounded
   * once to T (every output within one unit in the last place of T).
   */
  template <class T>
  void forward_then_decode(int64_t B, int64_t H, int64_t G, int64_t n, int64_t dk, int64_t dv, bool token_major) {
    const int64_t steps = 2, N = n + steps;
    const auto q = to_storage<T>(randn(B * H * N * dk, 0.5f, 61)), k = to_storage<T>(randn(B * G * N * dk, 0.5f, 62)),
               v = to_storage<T>(randn(B * G * N * dv, 1.0f, 63));
    const auto s0 = randn(B * G * dk * dv, 0.3f, 64);
    // Token t0.. of a [B, heads, N, d] (or [B, N, heads, d]) tensor.
    const auto part = [&](auto* x, int64_t heads, int64_t t0, int64_t len, int64_t d) {
      using X = std::remove_pointer_t<decltype(x)>;
      return token_major ? View<X>(x + t0 * heads * d, B, heads, len, d, N * heads * d, d, heads * d)
                         : View<X>(x + t0 * d, B, heads, len, d, heads * N * d, N * d, d);
    };
    // Forward over [0, n) then decode steps, with U storage.
    const auto run = [&](const auto& qq, const auto& kk, const auto& vv, auto& o, std::vector<float>& s) {
      Options opt;
      opt.slopes = kSlopes;
      opt.path = GetParam();
      opt.block_size = 16;
      const auto states = state_view(s.data(), B, G, dk, dv);
      forward(part(qq.data(), H, 0, n, dk), part(kk.data(), G, 0, n, dk), part(vv.data(), G, 0, n, dv),
              part(o.data(), H, 0, n, dv), opt, View<const float>(states), states);
      for (int64_t t = n; t < N; ++t)
        decode(part(qq.data(), H, t, 1, dk), part(kk.data(), G, t, 1, dk), part(vv.data(), G, t, 1, dv),
               part(o.data(), H, t, 1, dv), states, opt);
    };
    std::vector<T> o(B * H * N * dv);
    std::vector<float> s(s0);
    run(q, k, v, o, s);
    const std::vector<float> qf = to_floats(q), kf = to_floats(k), vf = to_floats(v);
    std::vector<float> o32(o.size()), s32(s0);
    run(qf, kf, vf, o32, s32);

    const auto ref = reference::recurrence(part(qf.data(), H, 0, N, dk), part(kf.data(), G, 0, N, dk),
                                           part(vf.data(), G, 0, N, dv), kSlopes, 1.0,
                                           state_view(s0.data(), B, G, dk, dv));
    std::vector<float> of(o.size());  // the reference's [B, H, N, dv] order
    const auto ov = part(o.data(), H, 0, N, dv);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < N; ++t)
          for (int64_t c = 0; c < dv; ++c)
            of[static_cast<size_t>(((b * H + h) * N + t) * dv + c)] = detail::to_float(ov.row(b, h, t)[c]);
    const double err_o = rel_rms(of, ref.o), err_s = rel_rms(s, ref.state), ulps = worst_ulps(o, o32);
    EXPECT_LE(err_o, output_tolerance<T>());
    EXPECT_LE(err_s, kFp32Tolerance);
    EXPECT_LE(ulps, 1.0);
    std::printf("[%s] %-6s B=%lld H=%lld/%lld n=%lld dk=%lld dv=%lld%s: o rel RMS %.2e (bound %.2e), states %.2e, "
                "%.0f ulp from rounded fp32 run\n",
                type_name<T>(), path_name(GetParam()), static_cast<long long>(B), static_cast<long long>(H),
                static_cast<long long>(G), static_cast<long long>(n), static_cast<long long>(dk),
                static_cast<long long>(dv), token_major ? " bnhd" : "", err_o, output_tolerance<T>(), err_s, ulps);
  }
};

TEST_P(HalfStorage, ForwardAndDecodeBf16) {
  forward_then_decode<bf16>(2, 4, 4, 100, 16, 24, false);
  forward_then_decode<bf16>(1, 6, 2, 67, 5, 11, true);  // grouped heads, vector tails
}

TEST_P(HalfStorage, ForwardAndDecodeFp16) {
  forward_then_decode<fp16>(2, 4, 4, 100, 16, 24, false);
  forward_then_decode<fp16>(1, 6, 2, 67, 5, 11, true);
}

TEST_P(HalfStorage, VarlenBf16AndFp16) {
  const std::vector<int64_t> lengths = {0, 1, 17, 40, 2};
  std::printf("[varlen] %s bf16: worst rel RMS %.2e, fp16: %.2e\n", path_name(GetParam()),
              check_varlen<bf16>(GetParam(), 4, 2, 16, 9, lengths, 16),
              check_varlen<fp16>(GetParam(), 4, 2, 16, 9, lengths, 16));
}

// The path's vector conversions give the element conversions' bits over every 16-bit pattern and
// floats at the edges (NaN, infinities, overflow, subnormals, ties), at lengths with tails.
TEST_P(HalfStorage, VectorConversionsMatchElementConversions) {
  std::vector<uint16_t> all(65536 + 5);
  std::iota(all.begin(), all.begin() + 65536, 0);
  std::vector<float> floats = randn(4099, 100.0f, 71);
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 3e-8f, 1e-40f, -1e-45f, 3.4e38f, 1.0f + 0x1p-8f,
                  1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, INFINITY, -INFINITY, NAN, -NAN})
    floats.push_back(f);
  const auto check = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> h(all.size());
    for (size_t i = 0; i < all.size(); ++i) h[i] = T::from_bits(all[i]);
    std::vector<float> y(h.size());
    detail::with_path(GetParam(), [&](auto path) {
      constexpr Path P = decltype(path)::value;
      detail::load_floats<P>(h.data(), static_cast<int64_t>(h.size()), y.data());
      for (size_t i = 0; i < h.size(); ++i)
        ASSERT_EQ(detail::float_bits(y[i]), detail::float_bits(detail::to_float(h[i]))) << type_name<T>() << " " << i;
      std::vector<T> r(floats.size());
      detail::store_floats<P>(floats.data(), static_cast<int64_t>(floats.size()), r.data());
      for (size_t i = 0; i < floats.size(); ++i) {
        // AVX-512 BF16's vcvtneps2bf16 flushes float subnormals to a signed zero (its documented
        // difference from round-to-nearest-even); every other input must give the same bits.
        const bool flushes = P == Path::avx512 && LIGHTNING_HAVE_AVX512BF16 && std::is_same_v<T, bf16> && std::fpclassify(floats[i]) == FP_SUBNORMAL;
        const uint16_t expected = flushes ? static_cast<uint16_t>(std::signbit(floats[i]) ? 0x8000 : 0)
                                          : detail::from_float<T>(floats[i]).bits;
        ASSERT_EQ(r[i].bits, expected) << type_name<T>() << " " << floats[i];
      }
    });
  };
  check(bf16());
  check(fp16());
}

LIGHTNING_INSTANTIATE_FOR_PATHS(HalfStorage);

/** True when float(h) is a nearest T to x, ties to the even pattern, overflow to infinity past `limit`. */
template <class T>
bool is_nearest(float x, T h, double limit) {
  const double xd = x, a = std::abs(xd);
  const uint16_t inf = std::is_same_v<T, bf16> ? 0x7f80 : 0x7c00;
  if (a >= limit) return (h.bits & 0x7fff) == inf;
  const auto value = [](uint16_t b) { return static_cast<double>(detail::to_float(T::from_bits(b))); };
  const uint16_t mag = h.bits & 0x7fff;
  if ((h.bits >> 15) != (x < 0 ? 1u : 0u) && mag != 0) return false;
  const double err = std::abs(a - value(mag));
  const double below = mag == 0 ? INFINITY : std::abs(a - value(static_cast<uint16_t>(mag - 1)));
  const double above = std::abs(a - value(static_cast<uint16_t>(mag + 1)));
  if (err > below || err > above) return false;
  if (err == below || err == above) return (mag & 1) == 0;  // a tie goes to the even pattern
  return true;
}

// Rounding from float, checked against its definition (no shared code with the conversion):
// every tie between neighbouring 16-bit values, and many floats over the whole range.
TEST(StorageTypes, RoundToNearestEven) {
  std::vector<float> xs = randn(20000, 1.0f, 81);
  for (float& x : randn(20000, 1.0f, 82)) xs.push_back(std::ldexp(x, static_cast<int>(std::abs(x) * 30) - 40));
  for (uint32_t b = 0; b < 0x7f7f; ++b) {  // bf16 ties: the float halfway between b and b + 1
    xs.push_back(detail::bits_float((b << 16) | 0x8000u));
    xs.push_back(detail::bits_float((b << 16) | 0x8001u));
  }
  for (uint32_t b = 0; b < 0x7bff; ++b) {  // fp16 ties
    const double mid = (static_cast<double>(static_cast<float>(fp16::from_bits(static_cast<uint16_t>(b)))) +
                        static_cast<float>(fp16::from_bits(static_cast<uint16_t>(b + 1)))) / 2;
    xs.push_back(static_cast<float>(mid));
    xs.push_back(-static_cast<float>(mid));
  }
  const double bf16_limit = detail::bits_float(0x7f7f8000u), fp16_limit = 65520.0;
  for (float x : xs) {
    ASSERT_TRUE(is_nearest(x, bf16(x), bf16_limit)) << x << " -> bf16 " << bf16(x).bits;
    ASSERT_TRUE(is_nearest(x, fp16(x), fp16_limit)) << x << " -> fp16 " << fp16(x).bits;
  }
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
  EXPECT_TRUE(std::isnan(static_cast<float>(fp16(NAN))));
  EXPECT_EQ(static_cast<float>(fp16::from_bits(0x0001)), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(static_cast<float>(fp16::from_bits(0x7bff)), 65504.0f);
  EXPECT_EQ(static_cast<float>(bf16::from_bits(0x3f80)), 1.0f);
}

#if LIGHTNING_HAVE_AVX512BF16
// VCVTNEPS2BF16 as bf16(float), except that float subnormals become signed zeros.
TEST(StorageTypes, Avx512Bf16ConversionMatches) {
  std::vector<float> xs = randn(4096, 1.0f, 91);
  for (float f : {1e-40f, -1e-39f, 0x1p-126f, 3.4e38f, INFINITY, NAN}) xs.push_back(f);
  for (uint32_t b = 0; b < 0x7f7f; b += 7) xs.push_back(detail::bits_float((b << 16) | 0x8000u));
  while (xs.size() % 16) xs.push_back(1.0f);
  std::vector<bf16> y(xs.size());
  for (size_t i = 0; i < xs.size(); i += 16) detail::simd::store16_avx512bf16(xs.data() + i, y.data() + i);
  for (size_t i = 0; i < xs.size(); ++i) {
    const float x = std::abs(xs[i]) < 0x1p-126f ? std::copysign(0.0f, xs[i]) : xs[i];
    ASSERT_EQ(y[i].bits, bf16(x).bits) << xs[i];
  }
}
#endif

}  // namespace
}  // namespace lightning::test

namespace lightning::test {
namespace {

TEST(MinimaxSlopes, LayerFactorAndErrors) {
  // Layer 0 keeps the base slopes (times 1 + 1e-5); the last layer keeps only the 1e-5.
  const auto base = minimax_base_slopes(8), first = minimax_slopes(8, 0, 4), last = minimax_slopes(8, 3, 4);
  for (size_t h = 0; h < base.size(); ++h) {
    EXPECT_EQ(first[h], base[h] * static_cast<float>(1.0 + 1e-5));
    EXPECT_EQ(last[h], base[h] * static_cast<float>(1e-5));
  }
  expect_invalid_argument([] { minimax_slopes(8, 0, 1); }, {"num_layers must be >= 2", "got 1"});
  expect_invalid_argument([] { minimax_slopes(8, 4, 4); }, {"layer = 4", "[0, 4)"});
  expect_invalid_argument([] { minimax_base_slopes(0); }, {"heads", "got 0"});
}

}  // namespace
}  // namespace lightning::test
