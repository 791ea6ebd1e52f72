// yaml_bench.cpp - the reading figure of integration/bench/run.py (bench only, not installed).
//
//   yaml_bench [--rounds R] FILE
//
// Reads FILE into memory once, then times three readers of it, in alternation (A B C A B C ...) so that
// machine noise hits them alike: fwengine's YAML reader (yaml::parse, the entry point every frontend
// uses), libyaml's events built into the same located tree (the reader fwengine falls back to), and
// yaml-cpp's LoadAll (the obvious C++ alternative). Prints one JSON line: the bytes, the documents, each
// reader's milliseconds per round, and whether fwengine's fast scanner read the text.
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "fwengine/yaml.hpp"

namespace {

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "yaml_bench: %s\nusage: yaml_bench [--rounds R] FILE\n", why);
  std::exit(2);
}

// The time `read` takes to return its tree; the tree is freed afterwards, untimed: that is its user's cost.
template <typename Read>
double milliseconds(Read&& read) {
  auto start = std::chrono::steady_clock::now();
  auto tree = read();
  double elapsed =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return elapsed;
}

std::string json_list(const std::vector<double>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  const char* path = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
      if (rounds <= 0) usage("--rounds takes a positive number");
    } else if (!path && !arg.starts_with("-")) {
      path = argv[i];
    } else {
      usage("unexpected argument");
    }
  }
  if (!path) usage("no FILE");
  std::ifstream in(path, std::ios::binary);
  if (!in) usage("cannot read FILE");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  std::size_t documents = 0;
  std::vector<double> fast_ms, libyaml_ms, yamlcpp_ms;
  for (int round = 0; round < rounds; ++round) {
    fwe::Diagnostics diag;
    const std::uint32_t file = diag.add_file(path);
    fast_ms.push_back(milliseconds([&] { return fwe::yaml::parse(text, file, diag); }));
    libyaml_ms.push_back(milliseconds([&] { return fwe::yaml::detail::parse_libyaml(text, file, diag); }));
    yamlcpp_ms.push_back(milliseconds([&] { return YAML::LoadAll(text); }));
  }
  fwe::Diagnostics diag;
  auto docs = fwe::yaml::parse(text, diag.add_file(path), diag);
  if (!docs) usage("fwengine's reader refused FILE");
  if (YAML::LoadAll(text).size() != docs->size()) usage("yaml-cpp read another number of documents");
  documents = docs->size();
  bool fast = fwe::yaml::detail::parse_fast(text, 1).has_value();
  std::printf(
      "{\"bytes\":%zu,\"documents\":%zu,\"fast_scanner\":%s,\"fwengine_ms\":%s,\"libyaml_ms\":%s,"
      "\"yamlcpp_ms\":%s}\n",
      text.size(), documents, fast ? "true" : "false", json_list(fast_ms).c_str(),
      json_list(libyaml_ms).c_str(), json_list(yamlcpp_ms).c_str());
  return 0;
}
