// One side of tools/ab: compiled twice, once per source tree, with -DLIGHTNING_AB_NS=lightning_old or
// lightning_new. The macro renames the library's namespace, so that both trees' inline functions
// live in one binary without sharing a symbol; each side exports one C function that runs a call.
#ifndef LIGHTNING_AB_NS
#error "define LIGHTNING_AB_NS (lightning_old or lightning_new)"
#endif
#define lightning LIGHTNING_AB_NS
#include "lightning/lightning.hpp"
#undef lightning

#include "ab_side.hpp"

#define LIGHTNING_AB_CAT2(a, b) a##b
#define LIGHTNING_AB_CAT(a, b) LIGHTNING_AB_CAT2(a, b)

extern "C" void LIGHTNING_AB_CAT(ab_run_, LIGHTNING_AB_NS)(const AbCall& c) {
  using namespace LIGHTNING_AB_NS;
  Options opt;
  opt.slopes = c.slopes;
  opt.path = c.avx512 ? Path::avx512 : Path::avx2;
  opt.threads = 1;
  const auto in = [&](const float* x, int64_t d) { return bhnd<const float>(x, 1, c.heads, c.n, d); };
  const auto out = [&](float* x, int64_t d) { return bhnd<float>(x, 1, c.heads, c.n, d); };
  if (!c.backward) {
    forward(in(c.q, c.d), in(c.k, c.d), in(c.v, c.d), out(c.o, c.d), opt, {}, state_view(c.s_out, 1, c.heads, c.d, c.d));
  } else {
    backward(in(c.q, c.d), in(c.k, c.d), in(c.v, c.d), in(c.d_o, c.d), out(c.dq, c.d), out(c.dk, c.d), out(c.dv, c.d),
             opt, {}, state_view(c.ds_out, 1, c.heads, c.d, c.d), state_view(c.ds_in, 1, c.heads, c.d, c.d));
  }
}
