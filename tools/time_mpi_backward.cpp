// The work of lightning::mpi::backward on each rank against lightning::backward of that rank's piece
// alone (what the rank would do if its piece were the whole sequence), run under mpirun:
//   mpirun -n P time_mpi_backward [n per rank] [heads] [d] [slope scale] [d_slopes 0/1] [path]
// Slopes are scale / (h + 1) per head (0: no decay). Each repetition times the piece's backward,
// then mpi::backward, both in CPU seconds of the process (MPI's waits spin, so they count); printed
// are the medians of 7 repetitions after one warm-up, per rank, and which way mpi::backward took.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu_seconds.hpp"
#include "path_arg.hpp"
#include "lightning/mpi.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 16384, heads = argc > 2 ? std::atoll(argv[2]) : 8,
                d = argc > 3 ? std::atoll(argv[3]) : 128;
  const double slope_scale = argc > 4 ? std::atof(argv[4]) : 0.5;
  const bool slope_gradient = argc > 5 && std::atoi(argv[5]) != 0;
  lightning::Options opt;
  opt.path = lightning::tools::compiled_path_named(argc > 6 ? argv[6] : nullptr);
  std::mt19937 rng(static_cast<unsigned>(rank) + 1);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  std::vector<float> q(static_cast<size_t>(heads * n * d)), k(q.size()), v(q.size()), d_o(q.size()), dq(q.size()),
      dk(q.size()), dv(q.size()), ds_in(static_cast<size_t>(heads * d * d)), d_slopes(static_cast<size_t>(heads));
  for (auto* x : {&q, &k, &v, &d_o})
    for (float& e : *x) e = dist(rng);
  std::vector<float> slopes;
  for (int64_t h = 0; h < heads; ++h) slopes.push_back(static_cast<float>(slope_scale / static_cast<double>(h + 1)));
  opt.slopes = slopes.data();
  const auto in = [&](const std::vector<float>& x) { return lightning::bhnd<const float>(x.data(), 1, heads, n, d); };
  const auto out = [&](std::vector<float>& x) { return lightning::bhnd(x.data(), 1, heads, n, d); };
  const auto ds = rank == 0 ? lightning::state_view(ds_in.data(), 1, heads, d, d) : lightning::View<float>();
  float* dsl = slope_gradient ? d_slopes.data() : nullptr;
  std::vector<double> alone, distributed, ratio;
  for (int r = 0; r < 8; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double a = lightning::tools::cpu_seconds(
        [&] { lightning::backward(in(q), in(k), in(v), in(d_o), out(dq), out(dk), out(dv), opt, {}, {}, {}, dsl); });
    MPI_Barrier(MPI_COMM_WORLD);
    const double m = lightning::tools::cpu_seconds([&] {
      lightning::mpi::backward(MPI_COMM_WORLD, in(q), in(k), in(v), in(d_o), out(dq), out(dk), out(dv), opt, {}, {},
                               ds, dsl);
    });
    if (r == 0) continue;  // warm-up
    alone.push_back(a);
    distributed.push_back(m);
    ratio.push_back(m / a);
  }
  for (auto* x : {&alone, &distributed, &ratio}) std::sort(x->begin(), x->end());
  const bool corrected =
      ranks > 1 && !slope_gradient && lightning::detail::corrections_cheaper(opt.slopes, heads, 1, n, ranks);
  std::printf("rank %d of %d, n %lld per rank, heads %lld, d %lld, slopes %g/(h+1)%s, path %s, %s: "
              "mpi::backward %.4f s, the piece's backward %.4f s, ratio %.2f (medians of 7)\n",
              rank, ranks, static_cast<long long>(n), static_cast<long long>(heads), static_cast<long long>(d),
              slope_scale, slope_gradient ? ", d_slopes" : "", lightning::path_name(opt.path),
              ranks == 1 ? "one rank" : corrected ? "rows corrected" : "pieces rerun", distributed[3], alone[3],
              ratio[3]);
  MPI_Finalize();
}
