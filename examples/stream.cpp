// An arbitrarily long sequence processed in fixed-size pieces with the state carried: constant memory.
//
//   example_stream [--tokens N] [--piece P] [--heads H] [--dim D]   stream N tokens (default 2^24)
//   example_stream --check [N]                                      streamed = one forward, at N tokens
//
// Tokens are generated from their 64-bit index (a counter-based hash), so any piece can be made
// on its own and nothing grows with N: sizes and offsets are int64 throughout, and 2^32 + 1
// tokens run like any other count. A progress line shows tokens/s and resident memory.
#include <lightning/lightning.hpp>
#include <lightning/reference/reference.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct Shape {
  int64_t heads = 1, dim = 16;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/**
 * q, k, v of tokens [t0, t0 + len), [heads, len, dim] each: uniform entries, q and k in
 * [-0.5, 0.5) and v in [-1, 1), a function of the token's global index only.
 */
void generate(const Shape& s, int64_t t0, int64_t len, float* q, float* k, float* v) {
  for (int64_t t = 0; t < len; ++t) {
    uint64_t z = splitmix64(static_cast<uint64_t>(t0 + t));
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.dim; ++i) {
        const size_t at = static_cast<size_t>((h * len + t) * s.dim + i);
        float* out[3] = {q + at, k + at, v + at};
        for (int w = 0; w < 3; ++w) {
          z ^= z << 13, z ^= z >> 7, z ^= z << 17;  // xorshift64: cheap, the seed is already mixed
          const float u = static_cast<float>(z >> 40) * 0x1p-24f;
          *out[w] = w < 2 ? u - 0.5f : 2.0f * u - 1.0f;
        }
      }
  }
}

/** The value of a "VmRSS:" / "VmHWM:" line of /proc/self/status, in MiB (0 when unavailable). */
double memory_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key, 0) == 0) return std::strtod(line.c_str() + std::strlen(key), nullptr) / 1024.0;
  return 0;
}

std::vector<float> slopes_for(const Shape& s) { return lightning::minimax_slopes(s.heads, 40, 80); }

struct Totals {
  double sum = 0, sum_sq = 0;  // of every output entry, a checksum of the whole run
};

/**
 * Streams `tokens` tokens in pieces of `piece` through forward() with the state carried in place;
 * `all_o`, when given, receives every output ([heads, tokens, dim]) for the check.
 */
Totals stream(const Shape& s, int64_t tokens, int64_t piece, std::vector<float>& state, bool progress,
              std::vector<float>* all_o = nullptr) {
  const int64_t d = s.dim, H = s.heads;
  std::vector<float> q(static_cast<size_t>(H * piece * d)), k(q.size()), v(q.size()), o(q.size());
  const std::vector<float> slopes = slopes_for(s);
  lightning::Options options;
  options.slopes = slopes.data();
  const auto states = lightning::state_view(state.data(), 1, H, d, d);
  const bool tty = isatty(STDOUT_FILENO);
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  Totals totals;
  for (int64_t t0 = 0; t0 < tokens; t0 += piece) {
    const int64_t len = std::min(piece, tokens - t0);
    generate(s, t0, len, q.data(), k.data(), v.data());
    lightning::forward(lightning::bhnd(q.data(), 1, H, len, d), lightning::bhnd(k.data(), 1, H, len, d),
                       lightning::bhnd(v.data(), 1, H, len, d), lightning::bhnd(o.data(), 1, H, len, d), options,
                       t0 == 0 ? lightning::View<const float>() : lightning::View<const float>(states), states);
    for (int64_t i = 0; i < H * len * d; ++i) {
      totals.sum += o[static_cast<size_t>(i)];
      totals.sum_sq += static_cast<double>(o[static_cast<size_t>(i)]) * o[static_cast<size_t>(i)];
    }
    if (all_o)
      for (int64_t h = 0; h < H; ++h)
        std::copy_n(o.begin() + h * len * d, len * d, all_o->begin() + (h * tokens + t0) * d);
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last).count();
    if (progress && (since > (tty ? 0.5 : 60.0) || t0 + len == tokens)) {
      last = now;
      const double secs = std::chrono::duration<double>(now - start).count(), done = static_cast<double>(t0 + len);
      std::printf("%s%lld / %lld tokens (%.1f%%), %.2f M tokens/s, %.0f s, RSS %.1f MiB (peak %.1f MiB)%s",
                  tty ? "\r" : "", static_cast<long long>(t0 + len), static_cast<long long>(tokens),
                  100.0 * done / static_cast<double>(tokens), done * H / secs / 1e6, secs, memory_mib("VmRSS:"),
                  memory_mib("VmHWM:"), tty ? "" : "\n");
      std::fflush(stdout);
    }
  }
  if (progress && tty) std::printf("\n");
  return totals;
}

/**
 * Streamed pieces against one forward over every token at once and against the double recurrence:
 * returns 0 when both agree to 1e-5 (relative RMS).
 */
int check(const Shape& s, int64_t tokens, int64_t piece) {
  const int64_t d = s.dim, H = s.heads;
  std::vector<float> all(static_cast<size_t>(H * tokens * d)), state(static_cast<size_t>(H * d * d));
  stream(s, tokens, piece, state, false, &all);
  std::vector<float> q(all.size()), k(all.size()), v(all.size()), o(all.size()), state_one(state.size());
  generate(s, 0, tokens, q.data(), k.data(), v.data());
  const std::vector<float> slopes = slopes_for(s);
  lightning::Options options;
  options.slopes = slopes.data();
  lightning::forward(lightning::bhnd(q.data(), 1, H, tokens, d), lightning::bhnd(k.data(), 1, H, tokens, d),
                     lightning::bhnd(v.data(), 1, H, tokens, d), lightning::bhnd(o.data(), 1, H, tokens, d), options,
                     {}, lightning::state_view(state_one.data(), 1, H, d, d));
  const auto rel = [](const std::vector<float>& x, const auto& ref) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      err += (static_cast<double>(x[i]) - ref[i]) * (static_cast<double>(x[i]) - ref[i]);
      norm += static_cast<double>(ref[i]) * ref[i];
    }
    return std::isfinite(err) && norm > 0 ? std::sqrt(err / norm) : INFINITY;
  };
  const auto ref = lightning::reference::recurrence(
      lightning::bhnd<const float>(q.data(), 1, H, tokens, d), lightning::bhnd<const float>(k.data(), 1, H, tokens, d),
      lightning::bhnd<const float>(v.data(), 1, H, tokens, d), slopes.data(), 1.0);
  const double e_o = rel(all, o), e_s = rel(state, state_one), r_o = rel(all, ref.o), r_s = rel(state, ref.state);
  std::printf("streamed %lld tokens in pieces of %lld: rel RMS against one forward o %.2e state %.2e, "
              "against the double reference o %.2e state %.2e\n",
              static_cast<long long>(tokens), static_cast<long long>(piece), e_o, e_s, r_o, r_s);
  return std::max({e_o, e_s, r_o, r_s}) <= 1e-5 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  int64_t tokens = int64_t{1} << 24, piece = 16384;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc && argv[i + 1][0] != '-';
    const int64_t value = has_value ? std::strtoll(argv[i + 1], nullptr, 10) : 0;
    if (a == "--check") {
      check_only = true;
      tokens = has_value ? value : 100003;  // a prime: a short last piece
      piece = 4099;                         // not a multiple of the block: pieces end mid-block
    } else if (a == "--tokens" && has_value) {
      tokens = value;
    } else if (a == "--piece" && has_value) {
      piece = value;
    } else if (a == "--heads" && has_value) {
      s.heads = value;
    } else if (a == "--dim" && has_value) {
      s.dim = value;
    } else {
      std::fprintf(stderr, "usage: %s [--tokens N] [--piece P] [--heads H] [--dim D] | --check [N]\n", argv[0]);
      return 2;
    }
    i += has_value;
  }
  if (tokens < 0 || piece < 1 || s.heads < 1 || s.dim < 1) {
    std::fprintf(stderr, "tokens must be >= 0 and piece, heads, dim >= 1\n");
    return 2;
  }
  if (check_only) return check(s, tokens, piece);

  std::printf("streaming %lld tokens, %lld heads, d_k = d_v = %lld, pieces of %lld tokens, path %s\n",
              static_cast<long long>(tokens), static_cast<long long>(s.heads), static_cast<long long>(s.dim),
              static_cast<long long>(piece), lightning::path_name(lightning::best_path));
  std::vector<float> state(static_cast<size_t>(s.heads * s.dim * s.dim));
  const auto start = std::chrono::steady_clock::now();
  const Totals t = stream(s, tokens, piece, state, true);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double state_sq = 0;
  for (float x : state) state_sq += static_cast<double>(x) * x;
  std::printf("done: %lld tokens in %.1f s (%.2f M tokens/s), peak RSS %.1f MiB; sum(o) = %.6e, "
              "rms(o) = %.6e, |S_final| = %.6e\n",
              static_cast<long long>(tokens), secs, static_cast<double>(tokens) * s.heads / secs / 1e6,
              memory_mib("VmHWM:"), t.sum,
              std::sqrt(t.sum_sq / (static_cast<double>(tokens) * s.heads * s.dim)), std::sqrt(state_sq));
  return 0;
}
