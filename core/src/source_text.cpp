// source_text.cpp - reading a policy source whole, with a bound.
#include "fwengine/source_text.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace fwe {
namespace {

std::optional<std::string> cannot_read(const std::string& what, std::uint32_t file, Diagnostics& diag) {
  diag.error({file, 0, 0}, "cannot read " + what + ": " + std::strerror(errno),
             "check that the file exists and is readable");
  return std::nullopt;
}

// Reads `in` (`what` names it in messages) to its end; nullopt (and an error) past kMaxSourceBytes, or
// when reading fails. `expected`, the size a file says it has, is taken at once: a text grown by
// doubling left 4 MB of freed blocks behind for a 3.6 MB policy, and its peak memory 6 MiB higher.
std::optional<std::string> read_bounded(std::istream& in, const std::string& what, std::uint32_t file,
                                        Diagnostics& diag, std::uintmax_t expected = 0) {
  std::string text;
  if (expected > 0 && expected <= kMaxSourceBytes) text.reserve(static_cast<std::size_t>(expected));
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    const auto got = static_cast<std::size_t>(in.gcount());
    if (text.size() + got > kMaxSourceBytes) {
      diag.error({file, 0, 0},
                 "holds more than " + std::to_string(kMaxSourceBytes >> 20) +
                     " MiB, more than any policy or config fwengine reads",
                 "give the file itself, not a device like /dev/zero, an image or an archive");
      return std::nullopt;
    }
    text.append(buffer, got);
  }
  // std::cin, synced with stdio, marks a failed read as its end: stdin's own error flag tells.
  if (in.bad() || (&in == &std::cin && std::ferror(stdin))) return cannot_read(what, file, diag);
  return text;
}

}  // namespace

std::optional<std::string> read_source_file(const std::string& path, std::uint32_t file, Diagnostics& diag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return cannot_read("'" + path + "'", file, diag);
  std::error_code no_size;  // a device, a pipe: read as it comes
  const std::uintmax_t size = std::filesystem::file_size(path, no_size);
  return read_bounded(in, "'" + path + "'", file, diag, no_size ? 0 : size);
}

std::optional<std::string> read_source_stdin(std::uint32_t file, Diagnostics& diag) {
  return read_bounded(std::cin, "standard input", file, diag);
}

}  // namespace fwe
