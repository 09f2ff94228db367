// The suite's kernels for fp16 storage, compiled once per configuration (include/lightning/instantiate.hpp).
#include "lightning/lightning.hpp"

LIGHTNING_INSTANTIATE(lightning::fp16)
