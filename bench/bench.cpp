// The benchmark: lightning's forward (fp32 and bf16) and backward on every compiled path against
// quadratic attention over n.
//
// Rows are Google Benchmark runs; the summary (table, fitted exponents, crossover, peak memory)
// and the plot data are written after the sweep from the times each row measured itself.
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <lightning/reference/backward.hpp>
#include <lightning/reference/reference.hpp>

#include "../tools/cpu_seconds.hpp"
#include "../tools/fma_chains.hpp"
#include "methods.hpp"

namespace bench {
namespace {

using lightning::Path;
using Clock = std::chrono::steady_clock;

struct Config {
  bool full = false, smoke = false;
  int threads = 1;
  double time_limit = 2.0;  // seconds: a row predicted to take longer is not run
  double min_time = 0.05;
  // Backward rows run at least this long (in a smoke run as long as the others), for pairs enough that
  // the summary's ratio is a median: at 0.05 s a row at n >= 4096 ran once, and the line pooled 4-5
  // pairs, whose median moved by 0.05-0.09 between runs on the Xeon of 2026-12-06.
  double backward_min_time = 1.0;
  std::string out = "build/bench-out";
  std::vector<int64_t> ns, ds = {64, 128};
  int64_t memory_n = 8192;
};
Config cfg;

// ---- FMA peaks: tools/fma_chains.hpp's loop per ISA, best of five runs.

/** FLOP/s of fma_chains<P>, best of five runs. */
template <Path P>
double fma_peak() {
  const int64_t iters = 2'000'000;
  double best = 0;
  for (int run = 0; run < 5; ++run) {
    const auto t0 = Clock::now();
    float sink = lightning::tools::fma_chains<P>(iters);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::DoNotOptimize(sink);
    best = std::max(best, lightning::tools::fma_chain_flops<P>(iters) / s);
  }
  return best;
}

/** The peak per path: avx2 (or scalar) for scalar/avx2 rows, avx512 for avx512, the widest for automatic. */
std::map<Path, double> measure_peaks() {
  std::map<Path, double> peak;
#if LIGHTNING_HAVE_AVX2
  peak[Path::avx2] = fma_peak<Path::avx2>();
#else
  peak[Path::avx2] = fma_peak<Path::scalar>();
#endif
  peak[Path::scalar] = peak[Path::avx2];
#if LIGHTNING_HAVE_AVX512
  peak[Path::avx512] = fma_peak<Path::avx512>();
#endif
  double widest = 0;
  for (auto& [p, f] : peak) widest = std::max(widest, f);
  peak[Path::automatic] = widest;
  return peak;
}
std::map<Path, double> peaks;

// ---- Inputs: one shape at a time, shared by every method.

const std::vector<float> kSlopes = [] {
  // MiniMax-Text-01's schedule for 8 heads (layer 0): 2^-(h+1).
  std::vector<float> s;
  for (int h = 0; h < kHeads; ++h) s.push_back(std::ldexp(1.0f, -(h + 1)));
  return s;
}();

void fill_problem(Problem& p, int64_t n, int64_t d) {
  p.n = n;
  p.d = d;
  p.slopes = kSlopes.data();
  p.threads = cfg.threads;
  const size_t size = static_cast<size_t>(kHeads * n * d);
  std::mt19937 rng(42);
  std::normal_distribution<float> g(0.0f, 1.0f / std::sqrt(static_cast<float>(d)));
  for (auto* x : {&p.q, &p.k, &p.v}) {
    x->resize(size);
    for (auto& e : *x) e = g(rng);
  }
  p.o.assign(size, 0.0f);
  for (auto* x : {&p.q16, &p.k16, &p.v16, &p.o16}) x->clear();
  for (auto* x : {&p.d_o, &p.dq, &p.dk, &p.dv}) x->clear();
}
Problem& problem(int64_t n, int64_t d) {
  static Problem p;
  if (p.n != n || p.d != d) fill_problem(p, n, d);
  return p;
}

// ---- The rows and what they measured.

using lightning::tools::cpu_seconds;

struct Row {
  std::string method;
  int64_t n = 0, d = 0;
  double seconds = 0, flops = 0, roof = 0;  // roof: tokens/s at the roofline
  double ratio = 0;                         // backward rows: median backward / forward CPU time, alternated
  std::vector<double> pair_ratios;          // backward rows: each pair's backward / forward
  std::string skipped;                      // why the row was not run
};
std::vector<Row> rows;
Row& row_for(const std::string& m, int64_t n, int64_t d) {
  for (auto& r : rows)
    if (r.method == m && r.n == n && r.d == d) return r;
  rows.push_back(Row{m, n, d, 0, 0, 0, 0, {}, {}});
  return rows.back();
}
// The last run of each (method, d), to predict the next n's time.
std::map<std::pair<std::string, int64_t>, std::pair<int64_t, double>> last_run;

/** The median of the per-pair ratios an alternated row collects (the upper one of an even count). */
double median_ratio(std::vector<double> ratios) {
  std::sort(ratios.begin(), ratios.end());
  return ratios[ratios.size() / 2];
}

void sweep_row(benchmark::State& state, const Method& m, int64_t n, int64_t d) {
  Row& row = row_for(m.name, n, d);
  const auto key = std::make_pair(m.name, d);
  if (auto it = last_run.find(key); it != last_run.end()) {
    const double ratio = static_cast<double>(n) / static_cast<double>(it->second.first);
    const double predicted = it->second.second * std::pow(ratio, m.kind == Kind::quadratic ? 2.0 : 1.0);
    if (predicted > cfg.time_limit) {
      char msg[128];
      std::snprintf(msg, sizeof msg, "not run: predicted %.1f s > time limit %.1f s", predicted, cfg.time_limit);
      row.skipped = msg;
      state.SkipWithError(msg);
      return;
    }
  }
  Problem& p = problem(n, d);
  m.prepare(p);
  // A backward row also runs the forward of its path before each of its own runs, outside the
  // timing, and keeps the median over these pairs of backward / forward CPU seconds: alternated, so
  // load from other processes (and CPU time not wall time) hits both alike.
  std::vector<double> ratios;
  const auto t0 = Clock::now();
  double paused = 0;
  for (auto _ : state) {
    if (m.backward) {
      state.PauseTiming();
      const auto f0 = Clock::now();
      const double forward = cpu_seconds([&] { run_lightning(p, m.isa); });
      paused += std::chrono::duration<double>(Clock::now() - f0).count();
      state.ResumeTiming();
      ratios.push_back(cpu_seconds([&] { m.run(p); }) / forward);
    } else {
      m.run(p);
    }
    benchmark::DoNotOptimize(p.o.data());
    benchmark::ClobberMemory();
  }
  const double s = (std::chrono::duration<double>(Clock::now() - t0).count() - paused) /
                   static_cast<double>(state.iterations());
  if (!ratios.empty()) row.ratio = median_ratio(ratios), row.pair_ratios = ratios;
  const double tokens = static_cast<double>(kHeads * n);
  row.seconds = s;
  row.flops = m.flops(n, d);
  // The backward's d^2 products cost 10 d_k d_v FLOPs per token where the forward's cost 4.
  row.roof = peaks[m.isa] / ((m.backward ? 10.0 : 4.0) * d * d);
  last_run[key] = {n, s};
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(row.flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["roofline"] = tokens / s / row.roof;
}

// ---- Decode: one token for a batch of sequences whose states exceed the last-level cache.

/**
 * The decode rows' states in bytes: 64 MiB, or twice the last-level cache the system reports where
 * that is more, so that a step reads them from memory. A fixed 64 MiB (twice the EPYCs' 32 MiB L3)
 * sat inside the 480 MiB L3 that the Intel Xeon guest of 2026-12-05 reports: bandwidth_rw, one
 * buffer passed again and again, ran at 50 GB/s from the cache, where the alternated pass and the
 * steps, two 64 MiB buffers in turn, ran at about 20.
 */
double decode_state_bytes() {
  return std::max(64.0 * (1 << 20), 2.0 * static_cast<double>(lightning::detail::reported_cache_bytes(3)));
}

int64_t decode_batch(int64_t d) {
  return static_cast<int64_t>(std::ceil(decode_state_bytes() / (kHeads * d * d * sizeof(float))));
}

/** One in-place read+write pass over x: what decode is judged against (bandwidth_rw). */
void read_write_pass(std::vector<float>& x) {
  float* s = x.data();
  for (size_t i = 0; i < x.size(); ++i) s[i] *= -1.0f;  // exact, so repeated passes stay normal
  benchmark::ClobberMemory();
}

/**
 * Each timed decode step is followed, outside the timing, by a read+write pass over another buffer
 * of the same size (which also evicts the states from the last-level cache), and the row keeps the
 * median over these pairs of pass time / step time: alternated, so the machine's other load hits
 * both alike, where the bandwidth_rw row runs at another moment.
 */
void decode_row(benchmark::State& state, Path path, int64_t d) {
  const int64_t batch = decode_batch(d);
  std::vector<float> q(batch * kHeads * d, 0.01f), k(q), v(q), o(q.size());
  std::vector<float> states(static_cast<size_t>(batch * kHeads * d * d), 0.0f), other(states.size(), 1.0f);
  lightning::Options opt;
  opt.slopes = kSlopes.data();
  opt.path = path;
  opt.threads = cfg.threads;
  std::vector<double> ratios;
  double steps = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    lightning::decode(lightning::bhnd(q.data(), batch, kHeads, 1, d), lightning::bhnd(k.data(), batch, kHeads, 1, d),
                      lightning::bhnd(v.data(), batch, kHeads, 1, d), lightning::bhnd(o.data(), batch, kHeads, 1, d),
                      lightning::state_view(states.data(), batch, kHeads, d, d), opt);
    benchmark::ClobberMemory();
    const double step = std::chrono::duration<double>(Clock::now() - t0).count();
    state.PauseTiming();
    const auto t1 = Clock::now();
    read_write_pass(other);
    ratios.push_back(std::chrono::duration<double>(Clock::now() - t1).count() / step);
    steps += step;
    state.ResumeTiming();
  }
  const double s = steps / static_cast<double>(state.iterations());
  const double bytes = 2.0 * static_cast<double>(states.size() * sizeof(float));  // each state read and written once
  Row& row = row_for(std::string("decode_") + lightning::path_name(path), batch, d);
  row.seconds = s;
  row.flops = recurrent_flops(1, d) * static_cast<double>(batch);
  row.roof = bytes;  // decode rows keep the bytes moved per step here
  row.ratio = median_ratio(ratios);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(batch * kHeads), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["seq_tokens/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["state_bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                       benchmark::Counter::kIs1024);
  state.counters["of_rw_pass"] = row.ratio;
}

/** The bandwidth decode is judged against: read and write the same bytes in place, nothing else. */
void bandwidth_row(benchmark::State& state, int64_t d) {
  const int64_t batch = decode_batch(d);
  std::vector<float> states(static_cast<size_t>(batch * kHeads * d * d), 1.0f);
  const auto t0 = Clock::now();
  for (auto _ : state) read_write_pass(states);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(state.iterations());
  const double bytes = 2.0 * static_cast<double>(states.size() * sizeof(float));
  Row& row = row_for("bandwidth_rw", batch, d);
  row.seconds = s;
  row.roof = bytes;
  state.counters["state_bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                       benchmark::Counter::kIs1024);
}

// ---- The register tile alone on hot data: the ceiling under the block loops' rate.

/**
 * The path's register tile (Kernels<P>::gemm_tile, MR x NR) over k steps, again and again on data
 * that stays in L1, B's rows an odd number of cache lines apart as the running state's: k = the
 * default block with beta = 1 is the state update's shape, k = 128 with beta = 0 the read-out's.
 */
template <Path P>
void tile_row(benchmark::State& state, int64_t k, float beta) {
  using Ker = lightning::kernels::Kernels<P>;
  const int64_t ld = lightning::detail::walk_stride(std::max<int64_t>(k, Ker::NR));
  std::vector<float> a(static_cast<size_t>(Ker::MR * ld), 0.01f), b(static_cast<size_t>(k * ld), 0.02f);
  std::vector<float> c(static_cast<size_t>(Ker::MR * ld), 0.0f);
  const auto t0 = Clock::now();
  for (auto _ : state) {
    Ker::gemm_tile(Ker::MR, Ker::NR, k, a.data(), ld, b.data(), ld, c.data(), ld, beta);
    benchmark::ClobberMemory();
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(state.iterations());
  // A tile row keeps k where the sweep rows keep n and beta (0 or 1) where they keep d.
  Row& row = row_for(std::string("tile_") + lightning::path_name(P), k, static_cast<int64_t>(beta));
  row.seconds = s;
  row.flops = 2.0 * Ker::MR * Ker::NR * static_cast<double>(k);
  row.roof = peaks[P];
  state.counters["GFLOP/s"] = benchmark::Counter(row.flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_peak"] = row.flops / s / row.roof;
}

// ---- Peak resident memory: each method once in a forked child, so nothing else is counted.

long status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field)));
  return -1;
}

/** {resident KiB after the inputs exist, peak KiB after the run}, or {-1, -1} on failure. */
std::pair<long, long> child_memory(const Method& m, int64_t n, int64_t d) {
  int fds[2];
  if (pipe(fds) != 0) return {-1, -1};
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Problem p;
    fill_problem(p, n, d);
    m.prepare(p);  // the row's own inputs and outputs (bf16 copies, d_o and gradients) count as inputs
    // Reset the high-water mark to what the inputs take, so the peak is the method's own.
    { std::ofstream("/proc/self/clear_refs") << "5"; }
    long res[2] = {status_kib("VmRSS:"), 0};
    m.run(p);
    res[1] = status_kib("VmHWM:");
    if (write(fds[1], res, sizeof res) != sizeof res) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  long res[2] = {-1, -1};
  if (read(fds[0], res, sizeof res) != sizeof res) res[0] = res[1] = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {res[0], res[1]};
}

// ---- Summary.

struct Fit {
  double slope = NAN, intercept = NAN;  // log t = intercept + slope log n
  int64_t from = 0;                     // the smallest n fitted over (0: every measured n)
};

/** Least-squares line of log t against log n over the points with n >= from (all points if < 2 remain). */
Fit fit_exponent(const std::string& method, int64_t d, int64_t from) {
  std::vector<std::pair<double, double>> pts, all;
  for (auto& r : rows)
    if (r.method == method && r.d == d && r.seconds > 0) {
      all.push_back({std::log(double(r.n)), std::log(r.seconds)});
      if (r.n >= from) pts.push_back(all.back());
    }
  int64_t used_from = from;
  if (pts.size() < 2) {
    pts = all;
    used_from = 0;
  }
  if (pts.size() < 2) return {NAN, NAN, used_from};
  double mx = 0, my = 0;
  for (auto& [x, y] : pts) mx += x, my += y;
  mx /= pts.size(), my /= pts.size();
  double sxy = 0, sxx = 0;
  for (auto& [x, y] : pts) sxy += (x - mx) * (y - my), sxx += (x - mx) * (x - mx);
  return {sxy / sxx, my - sxy / sxx * mx, used_from};
}

double seconds_of(const std::string& method, int64_t n, int64_t d) {
  for (auto& r : rows)
    if (r.method == method && r.n == n && r.d == d) return r.seconds;
  return 0;
}

void summarise(const std::vector<Method>& list, std::ostream& out) {
  char buf[256];
  std::string cpu = "unknown CPU", line;
  for (std::ifstream f("/proc/cpuinfo"); std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  out << "\n" << date << ", CPU: " << cpu << ", " << benchmark::CPUInfo::Get().num_cpus << " cores, threads per row: "
      << (cfg.threads == 0 ? "all" : "1") << "\nFMA peak (FLOP/s per ISA loop):";
  for (auto& [p, f] : peaks)
    if (p != Path::automatic) out << ' ' << lightning::path_name(p) << ' ' << f / 1e9 << " G";
  out << "\nheads " << kHeads << ", batch 1, MiniMax slopes; roofline = ISA FMA peak / (4 d^2) tokens/s "
      << "(backward rows: / (10 d^2))\n\n";
  out << "| method | n | d | ms | tokens/s | GFLOP/s | % roofline |\n|---|---:|---:|---:|---:|---:|---:|\n";
  for (auto& r : rows) {
    if (r.method.rfind("decode_", 0) == 0 || r.method == "bandwidth_rw" || r.method.rfind("tile_", 0) == 0) continue;
    if (!r.skipped.empty()) {
      std::snprintf(buf, sizeof buf, "| %s | %lld | %lld | %s | | | |\n", r.method.c_str(), (long long)r.n,
                    (long long)r.d, r.skipped.c_str());
    } else {
      const double tps = kHeads * r.n / r.seconds;
      std::snprintf(buf, sizeof buf, "| %s | %lld | %lld | %.3f | %.3g | %.1f | %.1f |\n", r.method.c_str(),
                    (long long)r.n, (long long)r.d, r.seconds * 1e3, tps, r.flops / r.seconds / 1e9,
                    100 * tps / r.roof);
    }
    out << buf;
  }
  out << "\nBackward (dq, dk, dv from d_o) against forward, per path: the two rows' times, and the median ratio of\n"
      << "CPU times over forward/backward pairs alternated within the backward row (robust to other load):\n\n"
      << "| path | n | d | forward ms | backward ms | backward / forward |\n|---|---:|---:|---:|---:|---:|\n";
  // The ratio at d = 128, per path: the median of the pairs of every row from n = 4096 on (of every
  // row when none ran there). A row at large n runs once or twice, and one pair on a loaded host
  // read 3.70 where the rows' medians read 2.6; the time ratio does not depend on n there.
  constexpr int64_t kPooledFrom = 4096;
  std::string at_128;
  for (int64_t d : cfg.ds)
    for (Path path : lightning::compiled_paths) {
      const std::string name = lightning::path_name(path);
      std::vector<double> pooled, all;
      int64_t lo = 0, hi = 0;
      for (int64_t n : cfg.ns) {
        const double tf = seconds_of("lightning_" + name, n, d), tb = seconds_of("backward_" + name, n, d);
        const Row* row = nullptr;
        for (auto& r : rows)
          if (r.method == "backward_" + name && r.n == n && r.d == d) row = &r;
        if (tb <= 0 || !row || row->ratio <= 0) continue;
        char forward_ms[32] = "not run";
        if (tf > 0) std::snprintf(forward_ms, sizeof forward_ms, "%.3f", tf * 1e3);
        std::snprintf(buf, sizeof buf, "| %s | %lld | %lld | %s | %.3f | %.2f |\n", name.c_str(), (long long)n,
                      (long long)d, forward_ms, tb * 1e3, row->ratio);
        out << buf;
        all.insert(all.end(), row->pair_ratios.begin(), row->pair_ratios.end());
        if (n >= kPooledFrom) {
          pooled.insert(pooled.end(), row->pair_ratios.begin(), row->pair_ratios.end());
          lo = lo ? lo : n, hi = n;
        }
      }
      if (d != 128 || all.empty()) continue;
      if (pooled.empty()) pooled = all, lo = 0;
      char range[64] = "every n";
      if (lo) std::snprintf(range, sizeof range, "n = %lld to %lld", (long long)lo, (long long)hi);
      std::snprintf(buf, sizeof buf, " %s %.2f (%zu %s, %s)", name.c_str(), median_ratio(pooled), pooled.size(),
                    pooled.size() == 1 ? "pair" : "pairs", range);
      at_128 += buf;
    }
  if (!at_128.empty()) out << "\nbackward / forward time at d = 128:" << at_128 << "\n";

  out << "\nDecode (one token for a batch of sequences, states " << decode_state_bytes() / (1 << 20)
      << " MiB, > L3), against an in-place read+write pass over as\n"
      << "many bytes: bandwidth_rw run as a row of its own, and alternated with each step (median of the pairs):\n\n"
      << "| row | batch | d | ms/step | tokens/s | GB/s of state | % of bandwidth_rw | % of the pass, alternated |\n"
      << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (auto& r : rows) {
    const bool dec = r.method.rfind("decode_", 0) == 0;
    if (!dec && r.method != "bandwidth_rw") continue;
    const double bw = r.roof / r.seconds, ref = seconds_of("bandwidth_rw", r.n, r.d);
    const double ref_bw = ref > 0 ? r.roof / ref : 0;
    std::snprintf(buf, sizeof buf, "| %s | %lld | %lld | %.3f | %s | %.1f | %.0f | %s |\n", r.method.c_str(),
                  (long long)r.n, (long long)r.d, r.seconds * 1e3,
                  dec ? std::to_string(static_cast<long long>(r.n * kHeads / r.seconds)).c_str() : "",
                  bw / 1e9, ref_bw > 0 ? 100 * bw / ref_bw : 0,
                  dec ? std::to_string(static_cast<int>(std::lround(100 * r.ratio))).c_str() : "");
    out << buf;
  }

  out << "\nThe register tile alone on hot data (MR x NR over k steps; k = block, beta 1: the state update's\n"
      << "shape; k = 128, beta 0: the read-out's), against the same ISA's FMA peak:\n\n"
      << "| row | k | beta | ns per tile | GFLOP/s | % of FMA peak |\n|---|---:|---:|---:|---:|---:|\n";
  for (auto& r : rows) {
    if (r.method.rfind("tile_", 0) != 0 || r.seconds <= 0) continue;
    std::snprintf(buf, sizeof buf, "| %s | %lld | %lld | %.1f | %.1f | %.0f |\n", r.method.c_str(), (long long)r.n,
                  (long long)r.d, r.seconds * 1e9, r.flops / r.seconds / 1e9, 100 * r.flops / r.seconds / r.roof);
    out << buf;
  }

  out << "\nScaling exponent p in time ~ n^p (log-log least squares):\n\n| method | d | p | over n >= |\n|---|---:|---:|---:|\n";
  for (auto& m : list)
    for (int64_t d : cfg.ds) {
      const auto [p, intercept, from] = fit_exponent(m.name, d, 4096);
      std::snprintf(buf, sizeof buf, "| %s | %lld | %.2f | %s |\n", m.name.c_str(), (long long)d, p,
                    from ? std::to_string(from).c_str() : "all measured n");
      out << buf;
    }

  const std::string best = std::string("lightning_") + lightning::path_name(lightning::best_path);
  out << "\nCrossover (" << best << " against flash_softmax):\n";
  for (int64_t d : cfg.ds) {
    int64_t cross = -1, last_both = 0;
    for (int64_t n : cfg.ns) {
      const double tl = seconds_of(best, n, d), tf = seconds_of("flash_softmax", n, d);
      if (tl <= 0 || tf <= 0) continue;
      last_both = n;
      if (tl < tf) {
        if (cross < 0) cross = n;
      } else {
        cross = -1;
      }
    }
    if (cross == cfg.ns.front()) {
      // Below the sweep: where the two fitted lines (over every measured n) meet.
      const Fit fl = fit_exponent(best, d, 0), ff = fit_exponent("flash_softmax", d, 0);
      const double at = std::exp((fl.intercept - ff.intercept) / (ff.slope - fl.slope));
      std::snprintf(buf, sizeof buf,
                    "  d = %lld: lightning is faster at every n measured, from n = %lld; the fitted lines cross at n = %.0f\n",
                    (long long)d, (long long)cross, at);
    }
    else if (cross > 0)
      std::snprintf(buf, sizeof buf, "  d = %lld: lightning is faster for n >= %lld (measured up to n = %lld)\n",
                    (long long)d, (long long)cross, (long long)last_both);
    else
      std::snprintf(buf, sizeof buf, "  d = %lld: no crossover up to n = %lld\n", (long long)d, (long long)last_both);
    out << buf;
  }
}

void memory_report(const std::vector<Method>& list, std::ostream& out) {
  const int64_t d = cfg.ds.back(), big = cfg.memory_n, small = std::max<int64_t>(256, big / 4);
  out << "\nPeak resident memory beyond the inputs (each method once in a forked child, d = " << d << "):\n\n"
      << "| method | MiB at n = " << small << " | MiB at n = " << big << " |\n|---|---:|---:|\n";
  for (auto& m : list) {
    const auto a = child_memory(m, small, d), b = child_memory(m, big, d);
    char buf[160];
    std::snprintf(buf, sizeof buf, "| %s | %.1f | %.1f |\n", m.name.c_str(), (a.second - a.first) / 1024.0,
                  (b.second - b.first) / 1024.0);
    out << buf;
  }
  out << "(inputs q, k, v, o at n = " << big << ": " << 4.0 * kHeads * big * d * 4 / (1 << 20) << " MiB)\n";
}

/** Time against n per method and d for gnuplot, and the script that plots it. */
void write_plot(const std::vector<Method>& list) {
  std::ofstream gp(cfg.out + "/plot.gp");
  gp << "set terminal pngcairo size 1400,600 noenhanced\nset output '" << cfg.out << "/scaling.png'\n"
     << "set logscale xy\nset xlabel 'n (tokens)'\nset ylabel 'seconds'\nset key top left\nset grid\n"
     << "set multiplot layout 1," << cfg.ds.size() << "\n";
  for (int64_t d : cfg.ds) {
    gp << "set title 'd_k = d_v = " << d << ", 8 heads, batch 1'\nplot ";
    bool first = true;
    for (auto& m : list) {
      const std::string file = cfg.out + "/" + m.name + "_d" + std::to_string(d) + ".dat";
      std::ofstream dat(file);
      for (auto& r : rows)
        if (r.method == m.name && r.d == d && r.seconds > 0) dat << r.n << ' ' << r.seconds << '\n';
      gp << (first ? "" : ", ") << "'" << file << "' using 1:2 with linespoints title '" << m.name << "'";
      first = false;
    }
    gp << '\n';
  }
  gp << "unset multiplot\n";
}

/** Relative RMS error of x against ref (SPEC.md's measure). */
template <class X>
double rel_rms(const X& x, const std::vector<double>& ref) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = static_cast<double>(static_cast<float>(x[i])) - ref[i];
    err += e * e, norm += ref[i] * ref[i];
  }
  return std::sqrt(err / norm);
}

/**
 * The smoke run's check: every linear-attention row computes SPEC.md's forward (float64 recurrence),
 * within 1e-5; the bf16 row against the reference on the same rounded inputs, within 1e-5 + 2^-8
 * (its output is rounded to bf16); the backward rows SPEC.md's gradients (reference::backward_quadratic).
 */
bool methods_agree(const std::vector<Method>& list) {
  Problem& p = problem(200, 16);
  const auto view = [&](const auto& x) { return lightning::bhnd(x.data(), 1, kHeads, p.n, p.d); };
  const std::vector<double> want = lightning::reference::recurrence(view(p.q), view(p.k), view(p.v), p.slopes, 1.0).o;
  bool ok = true;
  const auto report = [&](const std::string& what, double rel, double tolerance) {
    std::cout << "check " << what << ": relative RMS against the reference " << rel << '\n';
    ok = ok && rel <= tolerance;
  };
  for (auto& m : list) {
    if (m.name == "flash_softmax") continue;  // softmax attention: another function
    m.prepare(p);
    if (m.backward) {
      const auto ref = lightning::reference::backward_quadratic(view(p.q), view(p.k), view(p.v), view(p.d_o), p.slopes, 1.0);
      m.run(p);
      report(m.name + " dq", rel_rms(p.dq, ref.dq), 1e-5);
      report(m.name + " dk", rel_rms(p.dk, ref.dk), 1e-5);
      report(m.name + " dv", rel_rms(p.dv, ref.dv), 1e-5);
    } else if (!p.q16.empty()) {  // bf16 storage
      const auto widen = [](const std::vector<lightning::bf16>& x) {
        std::vector<float> y(x.size());
        for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(x[i]);
        return y;
      };
      const std::vector<float> q = widen(p.q16), k = widen(p.k16), v = widen(p.v16);
      const auto ref = lightning::reference::recurrence(view(q), view(k), view(v), p.slopes, 1.0).o;
      m.run(p);
      report(m.name, rel_rms(p.o16, ref), 1e-5 + std::ldexp(1.0, -8));
      for (auto* x : {&p.q16, &p.k16, &p.v16, &p.o16}) x->clear();
    } else {
      std::fill(p.o.begin(), p.o.end(), 0.0f);
      m.run(p);
      report(m.name, rel_rms(p.o, want), 1e-5);
    }
  }
  return ok;
}

int run(int argc, char** argv) {
  std::vector<char*> args{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--full") cfg.full = true;
    else if (a == "--smoke") cfg.smoke = true;
    else if (a == "--all-cores") cfg.threads = 0;
    else if (a.rfind("--out=", 0) == 0) cfg.out = a.substr(6);
    else if (a.rfind("--time-limit=", 0) == 0) cfg.time_limit = std::stod(a.substr(13));
    else args.push_back(argv[i]);
  }
  if (cfg.smoke) {
    cfg.ns = {64, 200};
    cfg.ds = {16};
    cfg.memory_n = 256;
    cfg.min_time = 0.001;
    cfg.backward_min_time = 0.001;
  } else if (cfg.full) {
    for (int64_t n = 256; n <= (1 << 20); n *= 2) cfg.ns.push_back(n);
    if (cfg.time_limit == 2.0) cfg.time_limit = 10.0;
    cfg.memory_n = 16384;
    cfg.min_time = 0.2;
  } else {
    cfg.ns = {256, 1024, 4096, 16384, 32768, 65536};
  }
  std::filesystem::create_directories(cfg.out);
  std::string json = "--benchmark_out=" + cfg.out + "/results.json", fmt = "--benchmark_out_format=json";
  args.push_back(json.data());
  args.push_back(fmt.data());
  int nargs = static_cast<int>(args.size());
  benchmark::Initialize(&nargs, args.data());

  peaks = measure_peaks();
  const std::vector<Method> list = methods();
  for (int64_t d : cfg.ds)
    for (auto& m : list)
      for (int64_t n : cfg.ns) {
        const std::string name = m.name + "/d:" + std::to_string(d) + "/n:" + std::to_string(n);
        benchmark::RegisterBenchmark(name.c_str(), [&m, n, d](benchmark::State& s) { sweep_row(s, m, n, d); })
            ->Unit(benchmark::kMillisecond)
            ->MinTime(m.backward ? cfg.backward_min_time : cfg.min_time)
            ->UseRealTime();
      }
  for (int64_t d : cfg.ds) {
    if (cfg.smoke) break;  // decode's batch is sized to exceed the L3: too big for a smoke run
    for (Path path : lightning::compiled_paths)
      benchmark::RegisterBenchmark((std::string("decode_") + lightning::path_name(path) + "/d:" + std::to_string(d)).c_str(),
                                   [path, d](benchmark::State& s) { decode_row(s, path, d); })
          ->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();  // >= 4 alternated steps at 960 MiB
    benchmark::RegisterBenchmark(("bandwidth_rw/d:" + std::to_string(d)).c_str(),
                                 [d](benchmark::State& s) { bandwidth_row(s, d); })
        ->Unit(benchmark::kMillisecond)->MinTime(0.1)->UseRealTime();
  }
  const auto add_tiles = [](auto path) {
    constexpr Path P = decltype(path)::value;
    const int64_t block = lightning::detail::default_block_size(128, 128, P);
    for (const auto& [k, beta] : {std::pair<int64_t, float>{block, 1.0f}, {128, 0.0f}})
      benchmark::RegisterBenchmark((std::string("tile_") + lightning::path_name(P) + "/k:" + std::to_string(k) +
                                    "/beta:" + std::to_string(static_cast<int>(beta))).c_str(),
                                   [k = k, beta = beta](benchmark::State& s) { tile_row<P>(s, k, beta); })
          ->MinTime(cfg.smoke ? 0.001 : 0.1)->UseRealTime();
  };
#if LIGHTNING_HAVE_AVX2
  add_tiles(std::integral_constant<Path, Path::avx2>{});
#endif
#if LIGHTNING_HAVE_AVX512
  add_tiles(std::integral_constant<Path, Path::avx512>{});
#endif
  benchmark::RunSpecifiedBenchmarks();
  problem(0, 0);  // frees the last shape's inputs before the memory children fork

  std::ostringstream summary;
  summarise(list, summary);
  memory_report(list, summary);
  std::cout << summary.str();
  std::ofstream(cfg.out + "/summary.md") << summary.str();
  write_plot(list);
  std::cout << "\nwrote " << cfg.out << "/results.json (Google Benchmark), summary.md, plot.gp\n";
  benchmark::Shutdown();
  return cfg.smoke && !methods_agree(list) ? 1 : 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) { return bench::run(argc, argv); }
