// support.hpp - temporary configuration trees and diagnostic checks for the firewalld tests.
#pragma once

#include <filesystem>
#include <string>

#include "fwengine/diagnostics.hpp"
#include "reader.hpp"

namespace fwe::firewalld::test {

// A directory under /tmp, removed when the object goes.
class TempTree {
 public:
  TempTree();
  ~TempTree();
  TempTree(const TempTree&) = delete;
  TempTree& operator=(const TempTree&) = delete;
  const std::filesystem::path& path() const { return root_; }
  std::string dir() const { return root_.string(); }
  // Writes relative_path (parents created) with the given text.
  void write(const std::string& relative_path, const std::string& text) const;

 private:
  std::filesystem::path root_;
};

// A zone file body wrapped in the usual header.
std::string zone_xml(const std::string& body, const std::string& attributes = "");

// Reads the stock tree with an /etc-like tree on top.
Config read(const TempTree& etc, Diagnostics& diag, Compat compat = Compat::v2);

// All diagnostics, one per line, formatted as the CLI prints them.

// The first error formatted, or "" when there is none.
std::string first_error(const Diagnostics& diag);

}  // namespace fwe::firewalld::test
