// The suite's kernels for bf16 storage, compiled once per configuration (include/lightning/instantiate.hpp).
#include "lightning/lightning.hpp"

LIGHTNING_INSTANTIATE(lightning::bf16)
