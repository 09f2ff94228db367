// Runs independent work items on a few std::threads spawned for one call.
//
// A header-only library cannot assume OpenMP or own a pool: each call with threads > 1 starts
// its workers and joins them before returning, so nothing outlives the call and a caller's own
// pool is never oversubscribed unless it asks for more threads than it has cores.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace lightning::detail {

/** The number of workers `threads` (0 = every core) means for `items` work items. */
inline int worker_count(int threads, int64_t items) {
  int64_t n = threads == 0 ? std::max(1u, std::thread::hardware_concurrency()) : threads;
  return static_cast<int>(std::max<int64_t>(1, std::min(n, items)));
}

/**
 * One workspace per worker, each constructed in place: `std::vector<W>(workers, W(args...))` builds
 * a temporary and copies it, allocating and zeroing every buffer twice, which for a call of a few
 * blocks was most of its time.
 */
template <class W, class... Args>
std::vector<W> workspaces(int workers, const Args&... args) {
  std::vector<W> ws;
  ws.reserve(static_cast<size_t>(workers));
  for (int w = 0; w < workers; ++w) ws.emplace_back(args...);
  return ws;
}

/** Calls fn(worker, item) for every item in [0, items), items handed out one at a time. */
template <class Fn>
void parallel_for(int workers, int64_t items, Fn&& fn) {
  if (workers <= 1) {
    for (int64_t i = 0; i < items; ++i) fn(0, i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&](int worker) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items;) fn(worker, i);
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
}

}  // namespace lightning::detail
