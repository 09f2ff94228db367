// One long sequence split across MPI ranks: each rank makes and holds only its own piece.
//
//   mpirun -n P example_mpi_forward [--tokens N] [--heads H] [--dim D] [--threads T] [--check]
//
// Rank r takes tokens [N r / P, N (r + 1) / P) and generates their q, k, v from the token's global
// index and a seed (a counter-based generator), so no rank ever holds another's data and memory
// per rank is 4 H (N / P) D floats. lightning::mpi::forward runs the pieces; each rank prints its
// time and the bytes it handed to MPI, which do not depend on N. --check also runs the
// single-process lightning::forward over the whole sequence on every rank (small N only) and
// compares the rank's piece and the final state with it.
#include <lightning/lightning.hpp>
#include <lightning/mpi.hpp>
#include <mpi.h>

#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/**
 * q, k, v ([heads, len, dim] each) of tokens [t0, t0 + len): uniform entries, q and k in
 * [-0.5, 0.5) scaled by dim^-1/4 (so q . k is O(1)) and v in [-1, 1), from (seed, token) only.
 */
void generate(uint64_t seed, int64_t heads, int64_t dim, int64_t t0, int64_t len, float* q, float* k, float* v) {
  const float qk_scale = 1.0f / std::sqrt(std::sqrt(static_cast<float>(dim)));
  for (int64_t t = 0; t < len; ++t) {
    uint64_t z = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(t0 + t)));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < dim; ++i) {
        const size_t at = static_cast<size_t>((h * len + t) * dim + i);
        float* out[3] = {q + at, k + at, v + at};
        for (int w = 0; w < 3; ++w) {
          z ^= z << 13, z ^= z >> 7, z ^= z << 17;  // xorshift64: cheap, the seed is already mixed
          const float u = static_cast<float>(z >> 40) * 0x1p-24f;
          *out[w] = w < 2 ? (u - 0.5f) * qk_scale : 2.0f * u - 1.0f;
        }
      }
  }
}

double rel_rms(const float* x, const float* ref, size_t count) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    err += (static_cast<double>(x[i]) - ref[i]) * (static_cast<double>(x[i]) - ref[i]);
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return norm == 0 ? (err == 0 ? 0 : INFINITY) : std::sqrt(err / norm);
}

/**
 * Bytes this process has passed to write-like system calls so far ("wchar" of /proc/self/io): run
 * with Open MPI's TCP transport (--mca btl self,tcp) and the difference across the call is what
 * the rank sent over its sockets, MPI's own headers included. -1 where /proc is unavailable.
 */
long long written_bytes() {
  std::FILE* f = std::fopen("/proc/self/io", "r");
  if (!f) return -1;
  char key[64];
  long long value = -1, wchar = -1;
  while (std::fscanf(f, "%63s %lld", key, &value) == 2)
    if (std::string(key) == "wchar:") wchar = value;
  std::fclose(f);
  return wchar;
}

/** CPU seconds this process has used (all its threads): against the wall time, how much CPU it got. */
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);  // options.threads' workers never call MPI
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  int64_t n = 1 << 16, H = 8, D = 128;
  int threads = 1;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const int64_t value = i + 1 < argc ? std::strtoll(argv[i + 1], nullptr, 10) : 0;
    if (a == "--check") {
      check = true;
    } else if (a == "--tokens" && value >= 0) {
      n = value, ++i;
    } else if (a == "--heads" && value > 0) {
      H = value, ++i;
    } else if (a == "--dim" && value > 0) {
      D = value, ++i;
    } else if (a == "--threads" && value >= 0) {
      threads = static_cast<int>(value), ++i;
    } else {
      if (rank == 0)
        std::fprintf(stderr, "usage: %s [--tokens N] [--heads H] [--dim D] [--threads T] [--check]\n", argv[0]);
      MPI_Finalize();
      return 2;
    }
  }
  const uint64_t seed = 20261129;
  const int64_t t0 = n * rank / ranks, len = n * (rank + 1) / ranks - t0;
  const size_t piece = static_cast<size_t>(H * len * D);
  std::vector<float> q(piece), k(piece), v(piece), o(piece), state(static_cast<size_t>(H * D * D));
  generate(seed, H, D, t0, len, q.data(), k.data(), v.data());
  const std::vector<float> slopes = lightning::minimax_slopes(static_cast<int>(H), 40, 80);
  lightning::Options options;
  options.slopes = slopes.data();
  options.threads = threads;

  MPI_Barrier(MPI_COMM_WORLD);
  const long long written_before = written_bytes();
  const double cpu_start = cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  lightning::mpi::forward(MPI_COMM_WORLD, lightning::bhnd(q.data(), 1, H, len, D), lightning::bhnd(k.data(), 1, H, len, D),
                          lightning::bhnd(v.data(), 1, H, len, D), lightning::bhnd(o.data(), 1, H, len, D), options,
                          {}, rank == ranks - 1 ? lightning::state_view(state.data(), 1, H, D, D)
                                                : lightning::View<float>());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = cpu_seconds() - cpu_start;
  const long long written = written_bytes() - written_before;
  MPI_Barrier(MPI_COMM_WORLD);
  const double all = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // What crosses between ranks: the checks' MPI_Allreduce (19 int64) and, from 2 ranks on, the
  // exclusive scan, in which a rank sends one scan element in each of at most ceil(log2 P) rounds
  // (state_out is asked for on the last rank only, so there is no broadcast); "written" measures
  // what this rank really sent.
  const int64_t element = lightning::mpi::scan_bytes(1, H, D, D);
  int steps = 0;
  while ((1 << steps) < ranks) ++steps;
  for (int r = 0; r < ranks; ++r) {
    if (r == rank)
      std::printf("rank %d/%d: tokens [%lld, %lld) = %lld, forward %.3f s (CPU %.3f s; all ranks done: %.3f s), "
                  "scan element %lld bytes, ceil(log2 P) = %d; written to sockets during the call: %lld bytes\n",
                  rank, ranks, static_cast<long long>(t0), static_cast<long long>(t0 + len),
                  static_cast<long long>(len), seconds, cpu, all, static_cast<long long>(element), steps,
                  written);
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
  }

  int status = 0;
  if (check) {
    // The whole sequence on one process, on every rank: this rank's piece and the final state must match.
    std::vector<float> Q(static_cast<size_t>(H * n * D)), K(Q.size()), V(Q.size()), O(Q.size()), S(state.size());
    generate(seed, H, D, 0, n, Q.data(), K.data(), V.data());
    lightning::forward(lightning::bhnd(Q.data(), 1, H, n, D), lightning::bhnd(K.data(), 1, H, n, D),
                       lightning::bhnd(V.data(), 1, H, n, D), lightning::bhnd(O.data(), 1, H, n, D), options, {},
                       lightning::state_view(S.data(), 1, H, D, D));
    double err = 0;
    std::vector<float> ref(piece);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < len; ++t)
        for (int64_t i = 0; i < D; ++i)
          ref[static_cast<size_t>((h * len + t) * D + i)] = O[static_cast<size_t>((h * n + t0 + t) * D + i)];
    if (len > 0) err = rel_rms(o.data(), ref.data(), piece);
    if (rank == ranks - 1) err = std::max(err, rel_rms(state.data(), S.data(), S.size()));
    std::printf("rank %d: rel RMS against one process %.2e\n", rank, err);
    status = err <= 1e-5 ? 0 : 1;
  }
  int any = 0;
  MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
