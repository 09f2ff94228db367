// The umbrella header: everything a user of lightning needs.
#pragma once

#include "lightning/attention.hpp"
#include "lightning/backward.hpp"
#include "lightning/config.hpp"
#include "lightning/instantiate.hpp"
#include "lightning/minimax.hpp"
#include "lightning/storage.hpp"
#include "lightning/types.hpp"
#include "lightning/varlen.hpp"
