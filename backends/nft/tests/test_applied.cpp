// test_applied.cpp - the record of what an apply put into each set, and the element deltas it gives.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "applied.hpp"

using namespace fwe::nft;

namespace {

Set three_ports() {
  Set set{.name = "m-ports.1234abcd", .key_type = KeyType::inet_service, .key_len = 2, .counters = true};
  for (std::uint8_t port : {7, 8, 9})
    set.elements.push_back({{0, port}, false, {}, "lo.yaml:" + std::to_string(port)});
  set.content = kDigestSeed;
  for (const auto& e : set.elements) set.content = element_digest(e, set.content);
  return set;
}

struct TempDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("fwe-nft-applied-" + std::to_string(::getpid()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("the record of an apply gives the element delta to a set's new content") {
  TempDir dir;
  Table table;
  table.sets.push_back(three_ports());
  AppliedSets::save(dir.path, table, "fwengine-ir-aaaa");
  auto record = AppliedSets::load(dir.path);
  REQUIRE(record);
  CHECK(record->marker() == "fwengine-ir-aaaa");
  CHECK(record->has("m-ports.1234abcd"));
  CHECK_FALSE(record->has("m-other.1234abcd"));
  CHECK(record->same(table.sets[0]));

  Set changed = three_ports();
  changed.elements[0].key = {0, 70};           // port 7 moved: one out, one in
  changed.elements[1].comment = "lo.yaml:80";  // port 8's rule moved: the same key, another comment
  changed.content = 0;
  CHECK_FALSE(record->same(changed));
  auto delta = record->delta(changed);
  REQUIRE(delta);
  std::vector<int> removed, added;  // the ports (keys of two bytes, big-endian)
  for (const auto& e : delta->removed) removed.push_back(e.key[0] << 8 | e.key[1]);
  for (const auto* e : delta->added) added.push_back(e->key[0] << 8 | e->key[1]);
  std::sort(removed.begin(), removed.end());
  CHECK(removed == std::vector<int>{7, 8});
  CHECK(added == std::vector<int>{70, 8});
  CHECK(delta->removed[0].comment.empty());  // a deletion names the key only
}

TEST_CASE("a damaged or foreign record is no record") {
  TempDir dir;
  Table table;
  table.sets.push_back(three_ports());
  CHECK_FALSE(AppliedSets::load(dir.path));  // none yet
  AppliedSets::save(dir.path, table, "fwengine-ir-aaaa");
  const auto file = dir.path / "sets";
  const auto size = std::filesystem::file_size(file);
  // Cut inside the elements: the header still reads, the set's elements do not.
  std::filesystem::resize_file(file, size - 5);
  CHECK_FALSE(AppliedSets::load(dir.path));
  std::filesystem::resize_file(file, 3);
  CHECK_FALSE(AppliedSets::load(dir.path));
  // A count of elements far beyond what the bytes hold (after the magic line, the stamp chain's name,
  // the number of sets, the set's name and its content digest).
  AppliedSets::save(dir.path, table, "fwengine-ir-aaaa");
  {
    std::fstream bytes(file, std::ios::in | std::ios::out | std::ios::binary);
    bytes.seekp(20 + 4 + 16 + 4 + 4 + 16 + 8);
    bytes.write("\xff\xff\xff\xff\xff\xff\xff\x7f", 8);
  }
  CHECK_FALSE(AppliedSets::load(dir.path));
}

TEST_CASE("the content record reads back as written, and a damaged one is no record") {
  TempDir dir;
  CHECK_FALSE(ContentRecord::load(dir.path));  // none yet
  const ContentRecord record{
      7, "fwengine-ir-aaaa-1-0-0123", {{"c-ssh.1234abcd", 42}, {"input-0.5678abcd", 0}}};
  record.save(dir.path);
  const auto loaded = ContentRecord::load(dir.path);
  REQUIRE(loaded);
  CHECK(loaded->generation == 7);
  CHECK(loaded->chain == record.chain);
  CHECK(loaded->rules == record.rules);
  const auto file = dir.path / "content";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) + 1);  // a byte past its end
  CHECK_FALSE(ContentRecord::load(dir.path));
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 4);  // inside the last digest
  CHECK_FALSE(ContentRecord::load(dir.path));
  std::filesystem::resize_file(file, 5);  // inside the magic line
  CHECK_FALSE(ContentRecord::load(dir.path));
}
