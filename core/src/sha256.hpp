// sha256.hpp - SHA-256 (FIPS 180-4) for the IR's hash. Our own: OpenSSL 3 spends 2-4 ms setting
// itself up (configuration, providers) before its first digest, more than hashing a 10,000-rule IR
// takes, and every fwengine command hashes the IR.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fwe::detail {

class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;

  // cpu_extensions: use the SHA instructions where the CPU has them (tests turn them off to check the
  // portable rounds against them).
  explicit Sha256(bool cpu_extensions = true);

  void update(std::string_view bytes);
  // The digest of everything given to update; the object is spent afterwards.
  Digest finish();

 private:
  void compress(const std::uint8_t* blocks, std::size_t count);

  bool sha_ni_;

  std::array<std::uint32_t, 8> state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<std::uint8_t, 64> pending_{};  // a block not yet full
  std::size_t pending_size_ = 0;
  std::uint64_t total_bytes_ = 0;
};

}  // namespace fwe::detail
