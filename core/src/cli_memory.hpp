// cli_memory.hpp - transparent huge pages for large policies only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fwe::cli {

// Huge pages make a large policy's apply faster (a first touch of a fresh 4 KiB page costs some 10 us on
// the virtual machines we measured), but they round a small one's memory up to whole 2 MiB pages: a
// daemon holding the example policy took 17.8 MiB instead of 9.1, and applies of up to a few thousand
// rules were slower with them, zeroing pages they hardly use. So a command takes them only for a policy
// of at least kHugePagesFrom bytes of files; stdin and datastores, which cannot be measured before they
// are read, get small pages.
inline constexpr std::uintmax_t kHugePagesFrom = 512 << 10;

// From now on, memory the process touches for the first time comes in huge pages (on) or not (off).
void use_huge_pages(bool on);
// The bytes of the files among sources (directories walked), counted up to `enough`.
std::uintmax_t source_bytes(const std::vector<std::string>& sources, std::uintmax_t enough);

}  // namespace fwe::cli
