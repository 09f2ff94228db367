// The compiled path a tool's command line names (path_name's spelling), for the timing tools.
#pragma once

#include <cstring>

#include "lightning/lightning.hpp"

namespace lightning::tools {

/** The compiled path whose path_name is `name`; Path::automatic when none is (or name is null). */
inline Path compiled_path_named(const char* name) {
  if (name)
    for (Path p : compiled_paths)
      if (std::strcmp(name, path_name(p)) == 0) return p;
  return Path::automatic;
}

}  // namespace lightning::tools
