// Asserts which path this binary runs, so each build is known to test what it claims to.
#include <gtest/gtest.h>

#include <string>

#include "lightning/lightning.hpp"

TEST(ActivePath, MatchesTheBuildConfiguration) {
  EXPECT_EQ(std::string(lightning::path_name(lightning::best_path)), LIGHTNING_EXPECTED_PATH);
  EXPECT_EQ(lightning::compiled_paths.back(), lightning::best_path);
  EXPECT_EQ(lightning::compiled_paths.front(), lightning::Path::scalar);
}
