// lightning::mpi::forward and mpi::backward against the single-process forward and backward on the
// same data, run by ctest under mpirun at 1, 2, 3 and 4 ranks. Every rank makes the whole (small) sequence, runs the
// single-process forward, takes its own piece and checks it; every check is an EXPECT (never an
// early return), so all ranks reach every collective and none is left waiting.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "lightning/mpi.hpp"
#include "lightning/reference/backward.hpp"
#include "lightning/reference/reference.hpp"
#include "util.hpp"

namespace lightning::test {
namespace {

int rank_of() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int ranks_of() {
  int p = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

struct Data : RandomProblem {
  Data(int64_t B_, int64_t H_, int64_t G_, int64_t n_, int64_t dk_, int64_t dv_)
      : RandomProblem(B_, H_, G_, n_, dk_, dv_, 71) {}
};

/** Piece lengths for `ranks` ranks over n tokens: even, or uneven with empty pieces. */
std::vector<std::vector<int64_t>> plans(int64_t n, int ranks) {
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> even;
  for (int r = 0; r < ranks; ++r) even.push_back(n * (r + 1) / ranks - n * r / ranks);
  out.push_back(even);
  if (ranks == 1) return out;
  // Uneven: a short first piece, rank 1 empty (from 3 ranks on), the rest growing, the last longest.
  std::vector<int64_t> uneven(static_cast<size_t>(ranks), 0);
  uneven[0] = 7;
  int64_t left = n - 7;
  for (int r = 2; r < ranks; ++r) {
    uneven[static_cast<size_t>(r)] = left / 5 + r;
    left -= uneven[static_cast<size_t>(r)];
  }
  uneven[static_cast<size_t>(ranks - 1)] += left;
  out.push_back(uneven);
  // Rank 0 empty (so state_in passes through an empty piece) and the last rank empty.
  std::vector<int64_t> first_empty(even), last_empty(even);
  first_empty[1] += first_empty[0];
  first_empty[0] = 0;
  last_empty[static_cast<size_t>(ranks - 2)] += last_empty.back();
  last_empty.back() = 0;
  out.push_back(first_empty);
  out.push_back(last_empty);
  return out;
}

struct Case {
  const float* slopes;
  float scale;
  bool state_in, state_out_everywhere;
  int threads;
  int64_t block;
};

/** The distributed forward on each plan against the single-process forward (and the reference). */
void expect_matches(const Data& d, const Case& c, Path path) {
  const int rank = rank_of(), ranks = ranks_of();
  Options opt;
  opt.slopes = c.slopes;
  opt.scale = c.scale;
  opt.path = path;
  opt.block_size = c.block;
  std::vector<float> o1(static_cast<size_t>(d.B * d.H * d.n * d.dv)), s1(d.s0.size());
  forward(bhnd<const float>(d.q.data(), d.B, d.H, d.n, d.dk), bhnd<const float>(d.k.data(), d.B, d.G, d.n, d.dk),
          bhnd<const float>(d.v.data(), d.B, d.G, d.n, d.dv), bhnd(o1.data(), d.B, d.H, d.n, d.dv), opt,
          c.state_in ? d.s0v() : View<const float>(), state_view(s1.data(), d.B, d.G, d.dk, d.dv));
  const auto ref = reference::quadratic(bhnd<const float>(d.q.data(), d.B, d.H, d.n, d.dk),
                                        bhnd<const float>(d.k.data(), d.B, d.G, d.n, d.dk),
                                        bhnd<const float>(d.v.data(), d.B, d.G, d.n, d.dv), c.slopes, c.scale,
                                        c.state_in ? d.s0v() : View<const float>());
  opt.threads = c.threads;
  for (const auto& lengths : plans(d.n, ranks)) {
    int64_t t0 = 0;
    for (int r = 0; r < rank; ++r) t0 += lengths[static_cast<size_t>(r)];
    const int64_t len = lengths[static_cast<size_t>(rank)];
    std::string what = std::string(path_name(path)) + " rank " + std::to_string(rank) + "/" + std::to_string(ranks) +
                       " pieces";
    for (int64_t l : lengths) what += " " + std::to_string(l);
    std::vector<float> o(o1.size(), -7.0f), s(s1.size(), -7.0f);
    const bool want_state = c.state_out_everywhere || rank == ranks - 1;
    mpi::forward(MPI_COMM_WORLD, d.piece<const float>(d.q.data(), d.H, d.dk, t0, len),
                 d.piece<const float>(d.k.data(), d.G, d.dk, t0, len), d.piece<const float>(d.v.data(), d.G, d.dv, t0, len),
                 d.piece(o.data(), d.H, d.dv, t0, len), opt,
                 c.state_in && rank == 0 ? d.s0v() : View<const float>(),
                 want_state ? state_view(s.data(), d.B, d.G, d.dk, d.dv) : View<float>());
    // This rank's rows against the single-process forward and the reference; every other row untouched.
    std::vector<float> mine, one;
    std::vector<double> exact;
    bool untouched = true;
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h)
        for (int64_t t = 0; t < d.n; ++t)
          for (int64_t x = 0; x < d.dv; ++x) {
            const size_t at = static_cast<size_t>(((b * d.H + h) * d.n + t) * d.dv + x);
            if (t >= t0 && t < t0 + len) {
              mine.push_back(o[at]);
              one.push_back(o1[at]);
              exact.push_back(ref.o[at]);
            } else {
              untouched = untouched && o[at] == -7.0f;
            }
          }
    EXPECT_TRUE(untouched) << what;
    if (len > 0) {
      EXPECT_LE(rel_rms(mine, std::vector<double>(one.begin(), one.end())), kFp32Tolerance) << what;
      EXPECT_LE(rel_rms(mine, exact), kFp32Tolerance) << what;
    }
    if (want_state) {
      EXPECT_LE(rel_rms(s, std::vector<double>(s1.begin(), s1.end())), kFp32Tolerance) << what;
      EXPECT_LE(rel_rms(s, ref.state), kFp32Tolerance) << what;
    } else {
      EXPECT_EQ(s, std::vector<float>(s1.size(), -7.0f)) << what;
    }
  }
}

const float kSlopes[] = {0.05f, 30.0f, 1e-6f, 0.3f};  // 30: strong decay, lambda^1 ~ 1e-13

class MpiForward : public ::testing::TestWithParam<Path> {};

TEST_P(MpiForward, GroupedHeadsDecayAndStates) {
  // batch 2, 4 q heads on 2 k/v heads (slopes 0.05 and 30), d_k != d_v, initial and final state.
  const Data d(2, 4, 2, 300, 16, 24);
  expect_matches(d, {kSlopes, 0.5f, true, false, 1, 32}, GetParam());
  expect_matches(d, {kSlopes, 1.0f, false, true, 2, 16}, GetParam());
}

TEST_P(MpiForward, NoDecayAndSlowDecay) {
  const Data d(1, 3, 3, 257, 8, 12);
  expect_matches(d, {nullptr, 1.0f, true, true, 1, 0}, GetParam());
  expect_matches(d, {kSlopes + 1, 1.0f, true, true, 1, 0}, GetParam());  // slopes 30, 1e-6, 0.3
}

TEST_P(MpiForward, StrongDecayOnly) {
  const float slopes[] = {30.0f};
  const Data d(3, 1, 1, 64, 4, 4);
  expect_matches(d, {slopes, 1.0f, true, true, 1, 8}, GetParam());
}

TEST_P(MpiForward, OneHeadOnThreeThreads) {
  // One (batch, head) row line: the correction's rows are shared out across the threads.
  const Data d(1, 1, 1, 400, 8, 8);
  expect_matches(d, {kSlopes, 1.0f, true, true, 3, 16}, GetParam());
}

LIGHTNING_INSTANTIATE_FOR_PATHS(MpiForward);

// Rows [t0, t0 + len) of a [B, heads, n, d] tensor; `untouched` is cleared if any other row is not `fill`.
std::vector<float> rows_of(const std::vector<float>& x, int64_t B, int64_t heads, int64_t n, int64_t d, int64_t t0,
                           int64_t len, bool& untouched, float fill) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < d; ++i) {
          const float e = x[static_cast<size_t>(((b * heads + h) * n + t) * d + i)];
          if (t >= t0 && t < t0 + len)
            out.push_back(e);
          else
            untouched = untouched && e == fill;
        }
  return out;
}

std::vector<double> doubles(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

/** How the backward is run: through mpi::backward (which picks a way), or either of its ways. */
enum class Way { chosen, corrected, rerun };

/**
 * The distributed backward on each plan against the single-process backward of the whole sequence
 * and the double reference. `way` other than chosen calls that way's function in the headers
 * directly (without d_slopes; the inputs are valid): the pieces rerun from the scanned states and
 * adjoints, or run from zero with their rows corrected.
 */
void expect_backward_matches(const Data& d, const Case& c, bool d_state_out, bool slope_gradient, Path path,
                             Way way = Way::chosen) {
  const int rank = rank_of(), ranks = ranks_of();
  Options opt;
  opt.slopes = c.slopes;
  opt.scale = c.scale;
  opt.path = path;
  opt.block_size = c.block;
  const std::vector<float> d_o = randn(static_cast<size_t>(d.B * d.H * d.n * d.dv), 1.0f, 75 + d.n);
  const std::vector<float> ds = randn(d.s0.size(), 0.3f, 76);
  const View<const float> ds_view = state_view(ds.data(), d.B, d.G, d.dk, d.dv);
  const View<const float> s0 = c.state_in ? d.s0v() : View<const float>();
  std::vector<float> dq1(static_cast<size_t>(d.B * d.H * d.n * d.dk)), dk1(d.k.size()), dv1(d.v.size()),
      ds1(d.s0.size()), dsl1(static_cast<size_t>(d.G));
  backward(bhnd<const float>(d.q.data(), d.B, d.H, d.n, d.dk), bhnd<const float>(d.k.data(), d.B, d.G, d.n, d.dk),
           bhnd<const float>(d.v.data(), d.B, d.G, d.n, d.dv), bhnd<const float>(d_o.data(), d.B, d.H, d.n, d.dv),
           bhnd(dq1.data(), d.B, d.H, d.n, d.dk), bhnd(dk1.data(), d.B, d.G, d.n, d.dk),
           bhnd(dv1.data(), d.B, d.G, d.n, d.dv), opt, s0, d_state_out ? ds_view : View<const float>(),
           state_view(ds1.data(), d.B, d.G, d.dk, d.dv), dsl1.data());
  const reference::Gradients ref = reference::backward_quadratic(
      bhnd<const float>(d.q.data(), d.B, d.H, d.n, d.dk), bhnd<const float>(d.k.data(), d.B, d.G, d.n, d.dk),
      bhnd<const float>(d.v.data(), d.B, d.G, d.n, d.dv), bhnd<const float>(d_o.data(), d.B, d.H, d.n, d.dv), c.slopes,
      c.scale, s0, d_state_out ? ds_view : View<const float>());
  opt.threads = c.threads;
  for (const auto& lengths : plans(d.n, ranks)) {
    int64_t t0 = 0;
    for (int r = 0; r < rank; ++r) t0 += lengths[static_cast<size_t>(r)];
    const int64_t len = lengths[static_cast<size_t>(rank)];
    std::string what = std::string(path_name(path)) + " backward rank " + std::to_string(rank) + "/" +
                       std::to_string(ranks) + " pieces";
    for (int64_t l : lengths) what += " " + std::to_string(l);
    std::vector<float> dq(dq1.size(), -7.0f), dk(dk1.size(), -7.0f), dv(dv1.size(), -7.0f), dsi(ds1.size(), -7.0f),
        dsl(dsl1.size(), -7.0f);
    const auto q = d.piece<const float>(d.q.data(), d.H, d.dk, t0, len);
    const auto k = d.piece<const float>(d.k.data(), d.G, d.dk, t0, len);
    const auto v = d.piece<const float>(d.v.data(), d.G, d.dv, t0, len);
    const auto dov = d.piece<const float>(d_o.data(), d.H, d.dv, t0, len);
    const auto dqv = d.piece(dq.data(), d.H, d.dk, t0, len), dkv = d.piece(dk.data(), d.G, d.dk, t0, len),
               dvv = d.piece(dv.data(), d.G, d.dv, t0, len);
    const View<const float> s_in = rank == 0 ? s0 : View<const float>();
    const View<const float> ds_out = d_state_out && rank == ranks - 1 ? ds_view : View<const float>();
    const View<float> ds_in = rank == 0 ? state_view(dsi.data(), d.B, d.G, d.dk, d.dv) : View<float>();
    const int64_t bytes = mpi::scan_bytes(d.B, d.G, d.dk, d.dv);
    if (way == Way::chosen)
      mpi::backward(MPI_COMM_WORLD, q, k, v, dov, dqv, dkv, dvv, opt, s_in, ds_out, ds_in,
                    slope_gradient ? dsl.data() : nullptr);
    else if (way == Way::corrected)
      detail::mpi_backward_corrected(MPI_COMM_WORLD, q, k, v, dov, dqv, dkv, dvv, opt, s_in, ds_out, ds_in, bytes);
    else
      detail::mpi_backward_rerun(MPI_COMM_WORLD, q, k, v, dov, dqv, dkv, dvv, opt, s_in, ds_out, ds_in, nullptr, bytes);
    if (slope_gradient) what += " with d_slopes";
    if (way != Way::chosen) what += way == Way::corrected ? " (corrected)" : " (rerun)";
    bool untouched = true, unused = true;  // the single-process gradients fill every row
    const auto mq = rows_of(dq, d.B, d.H, d.n, d.dk, t0, len, untouched, -7.0f),
               oq = rows_of(dq1, d.B, d.H, d.n, d.dk, t0, len, unused, 0.0f);
    const auto mk = rows_of(dk, d.B, d.G, d.n, d.dk, t0, len, untouched, -7.0f),
               ok = rows_of(dk1, d.B, d.G, d.n, d.dk, t0, len, unused, 0.0f);
    const auto mv = rows_of(dv, d.B, d.G, d.n, d.dv, t0, len, untouched, -7.0f),
               ov = rows_of(dv1, d.B, d.G, d.n, d.dv, t0, len, unused, 0.0f);
    const auto exact = [&](const std::vector<double>& x, int64_t heads, int64_t dim) {
      std::vector<double> out;
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t t = t0; t < t0 + len; ++t)
            for (int64_t i = 0; i < dim; ++i) out.push_back(x[static_cast<size_t>(((b * heads + h) * d.n + t) * dim + i)]);
      return out;
    };
    EXPECT_TRUE(untouched) << what;
    if (len > 0) {
      EXPECT_LE(rel_rms(mq, doubles(oq)), kFp32Tolerance) << what << " dq";
      EXPECT_LE(rel_rms(mk, doubles(ok)), kFp32Tolerance) << what << " dk";
      EXPECT_LE(rel_rms(mv, doubles(ov)), kFp32Tolerance) << what << " dv";
      EXPECT_LE(rel_rms(mq, exact(ref.dq, d.H, d.dk)), kFp32Tolerance) << what << " dq (reference)";
      EXPECT_LE(rel_rms(mk, exact(ref.dk, d.G, d.dk)), kFp32Tolerance) << what << " dk (reference)";
      EXPECT_LE(rel_rms(mv, exact(ref.dv, d.G, d.dv)), kFp32Tolerance) << what << " dv (reference)";
    }
    if (rank == 0) {
      EXPECT_LE(rel_rms(dsi, doubles(ds1)), kFp32Tolerance) << what << " d_state_in";
      EXPECT_LE(rel_rms(dsi, ref.d_state_in), kFp32Tolerance) << what << " d_state_in (reference)";
    } else {
      EXPECT_EQ(dsi, std::vector<float>(ds1.size(), -7.0f)) << what;
    }
    if (slope_gradient)
      EXPECT_LE(rel_rms(dsl, doubles(dsl1)), kFp32Tolerance) << what << " d_slopes";
    else
      EXPECT_EQ(dsl, std::vector<float>(dsl1.size(), -7.0f)) << what;
  }
}

TEST_P(MpiForward, Backward) {
  const Data d(2, 4, 2, 300, 16, 24);  // grouped heads, slopes 0.05 and 30, d_k != d_v
  expect_backward_matches(d, {kSlopes, 0.5f, true, false, 1, 32}, true, true, GetParam());
  // slopes 1e-6, 0.3
  expect_backward_matches(d, {kSlopes + 2, 1.0f, false, false, 2, 16}, false, true, GetParam());
  const Data one(1, 1, 1, 129, 8, 8);  // no decay
  expect_backward_matches(one, {nullptr, 1.0f, true, false, 3, 16}, true, true, GetParam());
}

TEST_P(MpiForward, BackwardWithoutSlopeGradientEitherWay) {
  if (ranks_of() < 2) GTEST_SKIP() << "one rank runs lightning::backward";
  const Data d(2, 4, 2, 300, 16, 24);
  // One item on three threads: cut along the sequence within a rank too (at least 8 blocks per
  // thread: 1700 tokens over up to 4 ranks, blocks of 16), so a piece's final state is scanned there.
  const Data one(1, 1, 1, 1700, 8, 8);
  for (Way way : {Way::chosen, Way::corrected, Way::rerun}) {
    expect_backward_matches(d, {kSlopes, 0.5f, true, false, 1, 32}, true, false, GetParam(), way);
    expect_backward_matches(d, {kSlopes + 2, 1.0f, false, false, 2, 16}, false, false, GetParam(), way);
    expect_backward_matches(one, {nullptr, 1.0f, true, false, 3, 16}, true, false, GetParam(), way);  // no decay
  }
}

TEST(MpiBackwardWay, CorrectionsWhenTheWeightsUnderflowWithinAPiece) {
  const float fast[] = {1.0f, 0.5f}, slow[] = {1e-3f, 1e-4f};
  // Weights lambda^t underflow after about 87 / slope rows: the corrections stop there.
  EXPECT_TRUE(detail::corrections_cheaper(fast, 2, 4, 16384, 3));
  EXPECT_FALSE(detail::corrections_cheaper(slow, 2, 4, 16384, 3));
  EXPECT_FALSE(detail::corrections_cheaper(nullptr, 2, 1, 16384, 2));  // no decay: every row
  // Two ranks, one q head per k/v head: 2 products per corrected row (rank 0's dK and dV) against 1
  // per updated row (the state, or the adjoint), so the weights must underflow within half the piece.
  const float half[] = {87.4f / 9000}, third[] = {87.4f / 5000};
  EXPECT_FALSE(detail::corrections_cheaper(half, 1, 1, 16384, 2));
  EXPECT_TRUE(detail::corrections_cheaper(third, 1, 1, 16384, 2));
}

// Bad input on one rank, or a disagreement between ranks, throws on every rank with one message.
void expect_everywhere(const std::function<void()>& call, std::initializer_list<const char*> fragments) {
  expect_invalid_argument(call, fragments);
}

struct Small {
  int64_t n = 20, dk = 4, dv = 4;
  std::vector<float> q = std::vector<float>(80, 0.1f), k = q, v = q, o = q, s = std::vector<float>(16, 0.0f);
  View<const float> view(const std::vector<float>& x, int64_t d) const { return bhnd<const float>(x.data(), 1, 1, n, d); }
  View<float> out() { return bhnd(o.data(), 1, 1, n, dv); }
};

TEST(MpiErrors, LocalErrorOnOneRankThrowsOnEveryRank) {
  const int rank = rank_of(), last = ranks_of() - 1;
  Small x;
  // The last rank passes a k of the wrong length; every rank must get its message.
  const auto k = rank == last ? bhnd<const float>(x.k.data(), 1, 1, x.n - 1, x.dk) : x.view(x.k, x.dk);
  const std::string who = "(rank " + std::to_string(last) + " of " + std::to_string(last + 1) + "): k [";
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), k, x.view(x.v, x.dv), x.out()); },
                    {"lightning::mpi::forward", who.c_str(), "does not match"});
  EXPECT_EQ(x.o, std::vector<float>(80, 0.1f));  // nothing written
}

TEST(MpiErrors, BadOptionOnRankZero) {
  Small x;
  Options opt;
  opt.scale = rank_of() == 0 ? NAN : 1.0f;
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out(), opt); },
                    {"(rank 0 of", "options.scale must be finite"});
}

TEST(MpiErrors, DimsDifferAcrossRanks) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  x.dk = rank_of() == 1 ? 2 : 4;  // every rank is consistent on its own
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out()); },
                    {"q.dim (d_k) differs across ranks: from 2 to 4"});
  EXPECT_EQ(x.o, std::vector<float>(80, 0.1f));
}

TEST(MpiErrors, HeadsDifferAcrossRanks) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  const int64_t H = rank_of() == ranks_of() - 1 ? 2 : 1;  // the last rank: 2 q heads on 1 k/v head
  std::vector<float> q(static_cast<size_t>(H * x.n * x.dk), 0.1f), o(q.size(), 0.1f);
  expect_everywhere([&] {
    mpi::forward(MPI_COMM_WORLD, bhnd<const float>(q.data(), 1, H, x.n, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv),
                 bhnd(o.data(), 1, H, x.n, x.dv));
  }, {"q.heads differs across ranks: from 1 to 2"});
}

TEST(MpiErrors, SlopesOrScaleDifferAcrossRanks) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  const float a = 0.5f, b = 0.25f;
  Options opt;
  opt.slopes = rank_of() == 1 ? &b : &a;
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out(), opt); },
                    {"options.slopes differ across ranks"});
  Options no_slopes_on_one = opt;
  no_slopes_on_one.slopes = rank_of() == 1 ? nullptr : &a;
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out(), no_slopes_on_one); },
                    {"options.slopes differ across ranks"});
  Options scale;
  scale.scale = rank_of() == 0 ? 1.0f : 0.5f;
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out(), scale); },
                    {"options.scale differs across ranks"});
}

TEST(MpiErrors, StorageTypeDiffersAcrossRanks) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  if (rank_of() == 1) {
    std::vector<bf16> q(80, bf16(0.1f)), o(80);
    expect_everywhere([&] {
      const auto v = bhnd<const bf16>(q.data(), 1, 1, x.n, 4);
      mpi::forward(MPI_COMM_WORLD, v, v, v, bhnd(o.data(), 1, 1, x.n, 4));
    }, {"storage types differ across ranks"});
  } else {
    expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out()); },
                      {"storage types differ across ranks"});
  }
}

TEST(MpiErrors, BackwardStatesOnTheirRanks) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  std::vector<float> dq(80, 0.5f), dk = dq, dv = dq, ds(16, 0.5f);
  const auto call = [&](View<const float> ds_out, View<float> ds_in) {
    mpi::backward(MPI_COMM_WORLD, x.view(x.q, 4), x.view(x.k, 4), x.view(x.v, 4), x.view(x.o, 4),
                  bhnd(dq.data(), 1, 1, x.n, 4), bhnd(dk.data(), 1, 1, x.n, 4), bhnd(dv.data(), 1, 1, x.n, 4), {}, {},
                  ds_out, ds_in);
  };
  const View<const float> s = state_view(static_cast<const float*>(x.s.data()), 1, 1, 4, 4);
  expect_everywhere([&] { call(rank_of() == 0 ? s : View<const float>(), {}); },
                    {"lightning::mpi::backward: d_state_out is given on rank 0", "only the last rank"});
  expect_everywhere([&] { call({}, rank_of() == 1 ? state_view(ds.data(), 1, 1, 4, 4) : View<float>()); },
                    {"d_state_in is given on rank 1", "only rank 0"});
  // A local error (dk of the wrong length on the last rank) reaches every rank, and nothing is written.
  const int last = ranks_of() - 1;
  expect_everywhere([&] {
    mpi::backward(MPI_COMM_WORLD, x.view(x.q, 4), x.view(x.k, 4), x.view(x.v, 4), x.view(x.o, 4),
                  bhnd(dq.data(), 1, 1, x.n, 4), bhnd(dk.data(), 1, 1, rank_of() == last ? x.n - 1 : x.n, 4),
                  bhnd(dv.data(), 1, 1, x.n, 4));
  }, {"lightning::mpi::backward (rank", "dk [batch=1, heads=1, seq=19"});
  EXPECT_EQ(dq, std::vector<float>(80, 0.5f));
  EXPECT_EQ(ds, std::vector<float>(16, 0.5f));
}

TEST(MpiErrors, StateInOnlyOnRankZero) {
  if (ranks_of() < 2) GTEST_SKIP() << "needs 2 ranks";
  Small x;
  const View<const float> s = state_view(static_cast<const float*>(x.s.data()), 1, 1, 4, 4);
  expect_everywhere([&] { mpi::forward(MPI_COMM_WORLD, x.view(x.q, x.dk), x.view(x.k, x.dk), x.view(x.v, x.dv), x.out(), {}, s); },
                    {"state_in is given on rank", "only rank 0"});
}

// After the errors above, a good call still works (no rank is left behind in a collective).
TEST(MpiErrors, GoodCallAfterErrors) {
  const Data d(1, 2, 1, 50, 8, 8);
  expect_matches(d, {kSlopes, 1.0f, true, true, 1, 0}, best_path);
}

}  // namespace

/** Prints a failed check of a rank other than 0 (whose default printer is removed). */
class RankFailures : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailures(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "rank %d: %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                   r.summary());
  }

 private:
  int rank_;
};

}  // namespace lightning::test

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints the progress; the other ranks print their failures, prefixed by the rank.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new lightning::test::RankFailures(rank));
  }
  const int failed = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
