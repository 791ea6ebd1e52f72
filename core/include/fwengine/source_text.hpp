// fwengine/source_text.hpp - the text of a policy source (a file, a FIFO, standard input), read whole
// for a frontend's parser, with a bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "fwengine/diagnostics.hpp"

namespace fwe {

// The most a policy source may hold. Ours of 50,000 rules is 8 MiB; anything larger than this is not a
// policy (/dev/zero, a disk image) and reading it whole would take the host's memory.
inline constexpr std::size_t kMaxSourceBytes = std::size_t{64} << 20;

// The whole text of a file (file: its index in diag). A file that cannot be read, or that holds more
// than kMaxSourceBytes, is an error at line 0 of it, and gives nullopt.
std::optional<std::string> read_source_file(const std::string& path, std::uint32_t file, Diagnostics& diag);

// The same for standard input (std::cin), named by `file` ("<stdin>").
std::optional<std::string> read_source_stdin(std::uint32_t file, Diagnostics& diag);

}  // namespace fwe
