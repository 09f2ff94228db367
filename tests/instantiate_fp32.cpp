// The suite's kernels for fp32 storage, compiled once per configuration (include/lightning/instantiate.hpp).
#include "lightning/lightning.hpp"

LIGHTNING_INSTANTIATE(float)
