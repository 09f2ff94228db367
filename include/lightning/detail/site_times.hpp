// Where the block loops spend their cycles, call site by call site: tools/site_times builds the
// library with LIGHTNING_SITE_TIMES defined and reads the counts; without it LIGHTNING_SITE(site)
// is an empty statement and the loops compile as if it were not there.
#pragma once

#include <cstdint>

#if defined(LIGHTNING_SITE_TIMES)
#include <x86intrin.h>
#endif

namespace lightning::detail::sites {

/** The timed call sites: the forward's block loop and the backward's two passes (whole blocks first). */
enum Site : int {
  forward_block,
  forward_k_transpose,
  forward_q_scaled,
  forward_triangle,
  forward_read_out,
  forward_update,
  pass1_block,
  pass1_v_transpose,
  pass1_do_scaled,
  pass1_triangle,
  pass1_dq,
  pass1_p_stash,
  pass1_update,
  pass2_block,
  pass2_k_decayed,
  pass2_q_transpose,
  pass2_triangle,
  pass2_q_test,
  pass2_dkt,
  pass2_dk_transpose,
  pass2_dv,
  pass2_r_update,
  count
};

/** What each site does, for tools/site_times's table, in the order of Site. */
inline constexpr const char* kNames[] = {
    "forward: block",
    "forward: K^T, plain and decayed",
    "forward: c lambda^(i+1) Q",
    "forward: P = Q K^T, masked",
    "forward: O = c Q S + P V",
    "forward: S update",
    "pass 1: block",
    "pass 1: V^T, plain and decayed (stash)",
    "pass 1: c lambda^(i+1) dO",
    "pass 1: P~ = dO V^T, masked",
    "pass 1: dQ = c dO S^T + P~ K",
    "pass 1: P~ into its stash",
    "pass 1: S update",
    "pass 2: block",
    "pass 2: decayed K rows",
    "pass 2: Q^T, plain and scaled",
    "pass 2: A~^T = K Q^T, masked",
    "pass 2: NaN test of Q",
    "pass 2: dK^T = Q^T P~ + R V~^T",
    "pass 2: dK^T transposed out",
    "pass 2: dV = A~^T dO + K~ R (panels)",
    "pass 2: R update (panels)",
};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == count, "one name per Site");

#if defined(LIGHTNING_SITE_TIMES)
/** Time-stamp counter ticks and calls per site since the last reset: one thread only (no atomics). */
inline uint64_t ticks[count], calls[count];

/** Adds the ticks from its construction to its destruction to its site. */
struct Scope {
  Site site;
  uint64_t start;
  explicit Scope(Site s) : site(s), start(__rdtsc()) {}
  ~Scope() {
    ticks[site] += __rdtsc() - start;
    ++calls[site];
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};

inline void reset() {
  for (int s = 0; s < count; ++s) ticks[s] = calls[s] = 0;
}
#endif

}  // namespace lightning::detail::sites

#define LIGHTNING_SITE_CAT2(a, b) a##b
#define LIGHTNING_SITE_CAT(a, b) LIGHTNING_SITE_CAT2(a, b)
#if defined(LIGHTNING_SITE_TIMES)
/** Times the rest of the enclosing scope as `site` (a sites::Site name). */
#define LIGHTNING_SITE(site) \
  const ::lightning::detail::sites::Scope LIGHTNING_SITE_CAT(lightning_site_, __LINE__)(::lightning::detail::sites::site)
#else
#define LIGHTNING_SITE(site) static_cast<void>(0)
#endif
