// CPU seconds of the process spent in a call: on a shared machine, the time other processes hold a
// core is not counted (with threads > 1 it is the sum over the workers). Used by the benchmark and
// the timing tools.
#pragma once

#include <ctime>

namespace lightning::tools {

template <class Fn>
double cpu_seconds(Fn&& fn) {
  const auto now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  const double t0 = now();
  fn();
  return now() - t0;
}

}  // namespace lightning::tools
