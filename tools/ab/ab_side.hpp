// The call tools/ab's two sides run: forward (with state_out) or backward (dq, dk, dv and dS_in from
// dS_out) on bhnd fp32 tensors [1, heads, n, d], d_k = d_v = d.
#pragma once

#include <cstdint>

struct AbCall {
  bool backward, avx512;
  int64_t heads, n, d;
  const float *q, *k, *v, *d_o, *ds_out, *slopes;
  float *o, *s_out, *dq, *dk, *dv, *ds_in;
};

extern "C" void ab_run_lightning_old(const AbCall& c);
extern "C" void ab_run_lightning_new(const AbCall& c);
