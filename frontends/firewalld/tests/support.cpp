#include "support.hpp"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace fwe::firewalld::test {

TempTree::TempTree() {
  std::string pattern = (std::filesystem::temp_directory_path() / "fwe-firewalld-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  root_ = pattern;
}

TempTree::~TempTree() {
  std::error_code ignored;
  std::filesystem::remove_all(root_, ignored);
}

void TempTree::write(const std::string& relative_path, const std::string& text) const {
  const auto path = root_ / relative_path;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string zone_xml(const std::string& body, const std::string& attributes) {
  return "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone" + attributes + ">\n" + body + "</zone>\n";
}

Config read(const TempTree& etc, Diagnostics& diag, Compat compat) {
  ReadRequest request;
  request.config_dirs = {etc.dir()};
  request.compat = compat;
  return read_config(request, diag);
}

std::string first_error(const Diagnostics& diag) {
  for (const auto& d : diag.all())
    if (d.severity == Severity::error) return diag.format(d);
  return {};
}

}  // namespace fwe::firewalld::test
