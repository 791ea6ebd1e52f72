// Backends' records (fwengine/state.hpp): written whole or removed, read whole.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "fwengine/state.hpp"

using namespace fwe;

TEST_CASE("a backend's record is written whole with its directory, and one that cannot be is removed") {
  const auto dir = std::filesystem::temp_directory_path() / ("fwe-records-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  const std::string path = (dir / "backend" / "record").string();
  CHECK(!state::read_whole_file(path));

  REQUIRE(state::replace_record(path, std::string("first\0with a NUL", 16)));
  CHECK(state::read_whole_file(path) == std::string("first\0with a NUL", 16));
  REQUIRE(state::replace_record(path, "second"));
  CHECK(state::read_whole_file(path) == "second");

  // The file written aside cannot be made (a directory holds its name): no stale record stays.
  std::filesystem::create_directories(path + ".tmp/in-the-way");
  CHECK_FALSE(state::replace_record(path, "third"));
  CHECK(!state::read_whole_file(path));
  std::filesystem::remove_all(dir);
}
